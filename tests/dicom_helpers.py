"""Write a CT volume as a DICOM series with ITK (GDCM), for the tests of the DICOM input paths.

Importable from every test folder as ``from dicom_helpers import ...``: pytest (``prepend`` import mode) puts
``tests/`` on ``sys.path`` when it loads ``tests/conftest.py``, as it puts ``tests/bundles/`` there for ``_helpers``.

Two entry points, one per convention:

- :func:`write_dicom_series`: an ``(X, Y, Z)`` array and its 4x4 RAS affine (nibabel / MONAI ``LoadImage``). MONAI's
  ``LoadImage`` (ITKReader) gives back the same array and affine.
- :func:`write_dicom_series_itk`: a ``(slice, row, column)`` array with ITK's LPS spacing / origin / direction, and
  optionally each slice's own position (unevenly spaced slices, as in a few real series).

Every slice is one file: axial-or-oblique CT Image Storage, int16 pixels stored with a rescale intercept (HU =
stored + intercept, slope 1; ITK applies the inverse rescale when writing and the rescale when reading), study /
series / SOP instance UIDs, instance number, ImagePositionPatient, ImageOrientationPatient, PixelSpacing and
SliceThickness.
"""

from __future__ import annotations

import locale
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


def new_uid() -> str:
    """A fresh DICOM UID under the UUID-derived root ``2.25`` (at most 44 characters)."""
    return f"2.25.{uuid.uuid4().int}"


def _ds(value: float) -> str:
    """A DICOM decimal string (at most 16 characters) holding ``value`` as precisely as fits."""
    for digits in range(10, -1, -1):
        text = np.format_float_positional(float(value), precision=digits, unique=True, trim="-")
        if len(text) <= 16:
            return text
    raise ValueError(f"{value} does not fit a DICOM decimal string")


def write_dicom_series(folder: str | Path, hu_xyz: np.ndarray, affine: np.ndarray, **options) -> Path:
    """Write an ``(X, Y, Z)`` HU array with its RAS ``affine`` as a DICOM series in ``folder`` (created).

    Voxel axis 0 runs along the rows (column index), axis 1 down the columns (row index), axis 2 across the slices,
    so ``monai.transforms.LoadImage()(folder)`` returns ``hu_xyz`` (rounded to integers) with ``affine``. The voxel
    axes must be right-handed (as those of any axial CT from a scanner): the DICOM readers sort the slices along
    the normal of the image plane, and would return a left-handed volume with its slices reversed.

    Args:
        folder: the series folder; must not exist.
        hu_xyz: HU, any real dtype; rounded to int16.
        affine: 4x4 voxel-to-RAS matrix (any right-handed orientation, oblique included).
        options: passed to :func:`write_dicom_series_itk` (``study_uid``, ``series_uid``, ``rescale_intercept``,
            ``file_name``).

    Returns:
        ``folder``.
    """
    hu_xyz = np.asarray(hu_xyz)
    affine = np.asarray(affine, dtype=np.float64)
    if hu_xyz.ndim != 3 or affine.shape != (4, 4):
        raise ValueError(f"expected a 3D array and a 4x4 affine, got {hu_xyz.shape} and {affine.shape}")
    lps = LPS_FROM_RAS @ affine[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    return write_dicom_series_itk(
        folder,
        np.transpose(hu_xyz, (2, 1, 0)),
        spacing=spacing,
        origin=LPS_FROM_RAS @ affine[:3, 3],
        direction=lps / spacing,
        **options,
    )


def write_dicom_series_itk(
    folder: str | Path,
    hu_zyx: np.ndarray,
    spacing: Sequence[float],
    origin: Sequence[float],
    direction: np.ndarray | None = None,
    slice_positions: np.ndarray | Sequence[Sequence[float]] | None = None,
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    rescale_intercept: float = -1024.0,
    file_name: str = "{:03d}.dcm",
) -> Path:
    """Write a ``(slice, row, column)`` HU array as one DICOM file per slice in ``folder`` (created), ITK geometry.

    Args:
        folder: the series folder; must not exist.
        hu_zyx: HU, any real dtype; rounded to int16.
        spacing: (column, row, slice) spacing in mm: ITK's (x, y, z).
        origin: LPS position (mm) of voxel (0, 0, 0).
        direction: 3x3 LPS direction cosines, columns along x (a row), y (a column) and the slices; must be
            right-handed (see :func:`write_dicom_series`). Default: identity (axial, rows running left, columns
            running back, slices going up).
        slice_positions: ``(Z, 3)`` LPS ImagePositionPatient of each slice, for unevenly spaced slices. Default:
            ``origin + k * spacing[2] * direction[:, 2]``. The first one must be ``origin``.
        study_uid, series_uid: Study / Series Instance UIDs. Default: fresh UIDs.
        rescale_intercept: RescaleIntercept (slope 1): the stored value is ``HU - rescale_intercept``. Default -1024,
            as scanners write CT.
        file_name: format of the file names, given the 0-based slice index. Default ``"{:03d}.dcm"``.

    Returns:
        ``folder``.
    """
    itk = pytest.importorskip("itk")
    hu_zyx = np.asarray(hu_zyx)
    if hu_zyx.ndim != 3:
        raise ValueError(f"expected a (slice, row, column) array, got shape {hu_zyx.shape}")
    hu = np.rint(hu_zyx.astype(np.float64))
    stored = hu - rescale_intercept
    limits = np.iinfo(np.int16)
    if hu.size and (min(hu.min(), stored.min()) < limits.min or max(hu.max(), stored.max()) > limits.max):
        raise ValueError(f"HU {hu.min()}..{hu.max()} with intercept {rescale_intercept} do not fit int16")
    hu = hu.astype(np.int16)
    spacing = np.asarray(spacing, dtype=np.float64).reshape(3)
    direction = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64).reshape(3, 3)
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-6):
        raise ValueError(f"direction is not orthonormal: {direction.tolist()}")
    if np.linalg.det(direction) < 0:
        raise ValueError("left-handed voxel axes: DICOM readers would return the slices reversed; flip the last axis")
    if slice_positions is None:
        positions = np.asarray(origin, dtype=np.float64) + np.outer(
            np.arange(hu.shape[0]) * spacing[2], direction[:, 2]
        )
    else:
        positions = np.asarray(slice_positions, dtype=np.float64)
        if positions.shape != (hu.shape[0], 3):
            raise ValueError(f"slice_positions: expected shape {(hu.shape[0], 3)}, got {positions.shape}")
        if not np.allclose(positions[0], origin, atol=1e-6):
            raise ValueError(f"slice_positions[0] {positions[0].tolist()} is not the origin {list(origin)}")
    study_uid, series_uid = study_uid or new_uid(), series_uid or new_uid()
    folder = Path(folder)
    folder.mkdir(parents=True)
    orientation = "\\".join(_ds(v) for v in (*direction[:, 0], *direction[:, 1]))
    saved = locale.setlocale(locale.LC_ALL)  # GDCM's writer sets LC_CTYPE to "C" (ASCII) for the whole process
    try:
        for k, position in enumerate(positions):
            image = itk.image_from_array(np.ascontiguousarray(hu[k : k + 1]))
            image.SetSpacing(spacing.tolist())
            image.SetOrigin(position.tolist())
            image.SetDirection(itk.matrix_from_array(np.ascontiguousarray(direction)))
            tags = image.GetMetaDataDictionary()
            for tag, value in {
                "0008|0016": CT_IMAGE_STORAGE,
                "0008|0018": new_uid(),
                "0008|0060": "CT",
                "0020|000d": study_uid,
                "0020|000e": series_uid,
                "0020|0013": str(k + 1),
                "0020|0032": "\\".join(_ds(v) for v in position),
                "0020|0037": orientation,
                "0028|0030": f"{_ds(spacing[1])}\\{_ds(spacing[0])}",  # row spacing (y), column spacing (x)
                "0018|0050": _ds(spacing[2]),
                "0028|1052": _ds(rescale_intercept),
                "0028|1053": "1",
            }.items():
                tags[tag] = value
            io = itk.GDCMImageIO.New()
            io.KeepOriginalUIDOn()
            writer = itk.ImageFileWriter[type(image)].New(Input=image, FileName=str(folder / file_name.format(k)))
            writer.SetImageIO(io)
            writer.Update()
    finally:
        locale.setlocale(locale.LC_ALL, saved)
    return folder
