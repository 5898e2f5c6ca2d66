"""CT input and output of the bundles, in one place: read a NIfTI file or a DICOM series (MONAI ``LoadImage``) or a
DeepLesion slice folder, list the volumes of an input folder, save a label map as NIfTI in its CT's geometry.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..data.deeplesion import read_dl_info, read_hu_png
from ..errors import BundleError
from .checks import check_volume

logger = logging.getLogger(__name__)

__all__ = ["cached_ct", "ct_input_items", "input_stem", "list_ct_inputs", "load_ct", "read_ct_volume"]


def load_ct(image: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a CT volume (NIfTI/any ITK file, or a folder holding one DICOM series) in HU.

    Returns:
        ``(hu, affine)``: float32 ``(X, Y, Z)`` array and its 4x4 RAS affine (MONAI ``LoadImage``).

    Raises:
        FileNotFoundError: no such file or folder.
        BundleError: unreadable (corrupt, truncated, not a DICOM series), or failing the volume checks.
        ValueError: not a 3D volume.
    """
    from monai.transforms import LoadImage

    path = Path(image)
    if not path.exists():
        raise FileNotFoundError(f"CT {str(path)!r} does not exist (a NIfTI file or a folder with one DICOM series)")
    try:
        img = LoadImage(image_only=True, reader="ITKReader" if path.is_dir() else None)(str(path))
    except Exception as err:  # readers raise anything (EOFError, zlib.error, OSError, ...) without the file name
        what = "not a readable DICOM series" if path.is_dir() else "corrupt or truncated (an interrupted copy?)"
        raise BundleError(
            f"cannot read CT {str(path)!r}: {type(err).__name__}: {' '.join(str(err).split())}; the file or folder is "
            f"{what}: replace it"
        ) from err
    hu = np.asarray(img, dtype=np.float32)
    if hu.ndim == 4 and 1 in (hu.shape[0], hu.shape[-1]):
        hu = hu.squeeze(0) if hu.shape[0] == 1 else hu.squeeze(-1)
    if hu.ndim != 3:
        raise ValueError(f"CT {str(path)!r} has shape {hu.shape}; expected a 3D volume")
    affine = np.asarray(img.affine, dtype=np.float64)
    check_volume(hu, f"CT {str(path)!r}", affine=affine)  # NaN, singular affine (else a bare LinAlgError), ...
    return hu, affine


@functools.lru_cache(maxsize=2)
def cached_ct(image: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`load_ct`, read once per CT for all its nodules (items and crops)."""
    return load_ct(image)


def read_ct_volume(input_path: str | os.PathLike, slice_interval_mm: float | None = None) -> dict[str, Any]:
    """Read a CT volume for inference: a NIfTI file, a DICOM series folder, or a DeepLesion slice folder.

    - DeepLesion folder (``Images_png/<series>/NNN.png``, 16-bit HU + 32768): slices are the PNG numbers; the slice
      interval comes from ``slice_interval_mm`` or else from ``DL_info.csv`` two folders up.
    - NIfTI (``.nii`` / ``.nii.gz``): axial slices along the third voxel axis, shown with rows = second axis
      (array order, no reorientation); interval = the third voxel size.
    - DICOM series folder (``.dcm`` files, read with ITK through MONAI ``LoadImage``): as NIfTI.

    Args:
        input_path: the file or folder.
        slice_interval_mm: overrides the slice interval. Default None.

    Returns:
        ``{"volume": (Z, H, W) float32 HU, "slice_numbers": [Z ints], "slice_interval_mm": float, "format": str,
        "input": str}``.

    Raises:
        FileNotFoundError: the path does not exist or holds no readable slice.
        ValueError: the format is not recognised or the slice interval is unknown.
    """
    path = Path(input_path)
    if not path.exists():
        raise FileNotFoundError(
            f"inference input '{path}' does not exist (a .nii/.nii.gz file, a DICOM series "
            f"folder or a DeepLesion Images_png/<series> folder)"
        )
    if path.is_dir() and sorted(path.glob("*.png")):
        pngs = sorted((p for p in path.glob("*.png") if p.stem.isdigit()), key=lambda p: int(p.stem))
        if not pngs:
            raise FileNotFoundError(f"'{path}': no NNN.png DeepLesion slices")
        volume = np.stack([read_hu_png(p).astype(np.float32) for p in pngs])
        check_volume(volume, f"'{path}'")
        interval = slice_interval_mm
        if interval is None:
            csv_path = path.parent.parent / "DL_info.csv"
            if csv_path.is_file():
                for record in read_dl_info(csv_path):
                    if record["series_dir"] == path.name:
                        interval = float(record["spacing"][2])
                        break
        if interval is None:
            raise ValueError(
                f"'{path}': slice interval unknown (no DL_info.csv entry two folders up); pass --slice_interval_mm"
            )
        return {
            "volume": volume,
            "slice_numbers": [int(p.stem) for p in pngs],
            "slice_interval_mm": float(interval),
            "format": "deeplesion_png",
            "input": str(path),
        }
    if path.is_dir() or path.name.endswith((".nii", ".nii.gz")):
        data, affine = load_ct(path)  # the one NIfTI / DICOM reader (MONAI LoadImage), with the volume checks
        volume = np.ascontiguousarray(np.transpose(data, (2, 1, 0)))
        # the slice interval is the length of the affine's third column (the distance between consecutive slices; the
        # NIfTI header's third voxel size, or what ITK takes from the DICOM slice positions)
        interval = slice_interval_mm or float(np.linalg.norm(affine[:3, 2]))
        return {
            "volume": volume,
            "slice_numbers": list(range(volume.shape[0])),
            "slice_interval_mm": interval,
            "format": "dicom" if path.is_dir() else "nifti",
            "input": str(path),
        }
    raise ValueError(
        f"inference input '{path}': not a .nii/.nii.gz file, a DICOM series folder or a DeepLesion slice folder"
    )


_NIFTI_SUFFIXES = (".nii", ".nii.gz")


_OTHER_VOLUME_SUFFIXES = (".mha", ".mhd", ".nrrd")


def input_stem(path: str) -> str:
    name = Path(path.rstrip("/\\")).name
    for suffix in (*_NIFTI_SUFFIXES[::-1], *_OTHER_VOLUME_SUFFIXES, ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _is_dicom_file(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _holds_dicom(folder: Path, probe: int = 8) -> bool:
    files = [p for p in sorted(folder.iterdir()) if p.is_file()][:probe]
    return any(_is_dicom_file(p) for p in files)


def _is_volume_file(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and name.endswith(_NIFTI_SUFFIXES + _OTHER_VOLUME_SUFFIXES)


def list_ct_inputs(source: str | os.PathLike) -> list[str]:
    """The CT volumes to segment under ``source``.

    ``source`` may be one volume file (NIfTI ``.nii``/``.nii.gz``, or ``.mha``/``.mhd``/``.nrrd``), a folder of DICOM
    files (one series), or a folder holding volume files and/or sub-folders that each hold one DICOM series.

    Returns:
        Paths (files, or folders for DICOM series), sorted.

    Raises:
        FileNotFoundError: ``source`` does not exist or holds nothing to segment.
    """
    path = Path(source)
    if path.is_file():
        return [str(path)]
    if not path.is_dir():
        raise FileNotFoundError(f"input {str(path)!r} does not exist: give a NIfTI file, a folder of them, or a "
                                "DICOM series folder")
    volumes = sorted(str(p) for p in path.iterdir() if _is_volume_file(p))
    if not volumes and _holds_dicom(path):
        return [str(path)]
    series = sorted(str(p) for p in path.iterdir() if p.is_dir() and _holds_dicom(p))
    found = volumes + series
    if not found:
        raise FileNotFoundError(
            f"input folder {str(path)!r} holds no CT volume: expected NIfTI files (*.nii, *.nii.gz; also *.mha, "
            "*.mhd, *.nrrd), DICOM files of one series, or sub-folders each holding one DICOM series"
        )
    return found


def ct_input_items(source: str | os.PathLike, key: str = "image") -> list[dict[str, str]]:
    """:func:`list_ct_inputs` as dataset items ``[{key: path}, ...]`` (an inference config's ``dataset#data``).

    Examples:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "ct.nii.gz"
        >>> _ = f.write_bytes(b"")
        >>> ct_input_items(f) == [{"image": str(f)}]
        True
    """
    return [{key: path} for path in list_ct_inputs(source)]
