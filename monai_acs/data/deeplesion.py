"""DeepLesion data: DL_info.csv reader, 16-bit PNG slice loading with 2 mm resampling, RECIST weak masks, demo data.

DeepLesion (A3D paper Sec. 3, ACS paper Sec. IV-D) holds 32,120 axial CT key slices with 32,735 lesions. Its
layout, which this module reads and writes as is:

- ``Images_png/<patient:06d>_<study:02d>_<series:02d>/<slice:03d>.png``: one 16-bit greyscale PNG per axial slice
  storing ``HU + 32768``; a folder holds the slices of ``Slice_range`` around each key slice.
- ``DL_info.csv``: one row per lesion, several rows per key slice when the slice holds several lesions. List-valued
  columns hold comma-separated numbers inside a quoted field, e.g. ``"233.537, 95.0204, 234.057, 106.977, ..."``.
  ``Measurement_coordinates`` are the RECIST endpoints (long diameter x1, y1, x2, y2, then short diameter
  x3, y3, x4, y4) and ``Bounding_boxes`` are x1, y1, x2, y2, all in pixels (x = column, y = row, 0-based as the
  reference Python loaders use them); ``Spacing_mm_px_`` is (x, y) mm per pixel then the slice interval in mm;
  ``Train_Val_Test`` is the official split 1 / 2 / 3 = train / validation / test.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = [
    "DL_INFO_COLUMNS",
    "find_deeplesion_files",
    "load_slices",
    "read_dl_info",
    "read_hu_png",
    "recist_ellipse_mask",
    "write_deeplesion_demo",
    "write_hu_png",
]

#: The columns of the official ``DL_info.csv``, in order.
DL_INFO_COLUMNS: tuple[str, ...] = (
    "File_name",
    "Patient_index",
    "Study_index",
    "Series_ID",
    "Key_slice_index",
    "Measurement_coordinates",
    "Bounding_boxes",
    "Lesion_diameters_Pixel_",
    "Normalized_lesion_location",
    "Coarse_lesion_type",
    "Possibly_noisy",
    "Slice_range",
    "Spacing_mm_px_",
    "Image_size",
    "DICOM_windows",
    "Patient_gender",
    "Patient_age",
    "Train_Val_Test",
)

_HU_OFFSET = 32768
_DEMO_COMMAND = "python scripts/make_demo_data.py deeplesion --out DIR"
_EXPECTED_LAYOUT = (
    "expected the DeepLesion layout: DIR/DL_info.csv and DIR/Images_png/<patient>_<study>_<series>/<slice>.png "
    "(16-bit PNG, HU + 32768)"
)
# Number of comma-separated numbers in each list-valued column (None: at least 2, an even count).
_LIST_COLUMNS: dict[str, int | None] = {
    "Measurement_coordinates": 8,
    "Bounding_boxes": 4,
    "Lesion_diameters_Pixel_": 2,
    "Normalized_lesion_location": 3,
    "Slice_range": 2,
    "Spacing_mm_px_": 3,
    "Image_size": 2,
    "DICOM_windows": None,
}
_INT_COLUMNS = ("Patient_index", "Study_index", "Series_ID", "Key_slice_index", "Coarse_lesion_type", "Train_Val_Test")
# Columns that describe the image, so they must agree between the rows of one key slice.
_IMAGE_COLUMNS = (
    "Patient_index",
    "Study_index",
    "Series_ID",
    "Key_slice_index",
    "Slice_range",
    "Spacing_mm_px_",
    "Image_size",
    "Train_Val_Test",
)


# ----------------------------------------------------------------------------------------------------- PNG slices
def write_hu_png(path: str | os.PathLike, hu: np.ndarray) -> None:
    """Write a 2D HU slice as a DeepLesion 16-bit PNG (pixel value = HU + 32768).

    Args:
        path: the PNG file to write (parent folders are created).
        hu: 2D array of HU values; rounded to integers and clipped to [-32768, 32767].

    Raises:
        ValueError: if ``hu`` is not 2D.

    Examples:
        >>> import tempfile, numpy as np
        >>> p = f"{tempfile.mkdtemp()}/001.png"
        >>> write_hu_png(p, np.array([[-1000, 0], [40, 1500]]))
        >>> read_hu_png(p).tolist()
        [[-1000, 0], [40, 1500]]
    """
    hu = np.asarray(hu)
    if hu.ndim != 2:
        raise ValueError(f"write_hu_png: '{path}': expected a 2D slice (H, W), got shape {hu.shape}")
    stored = (np.clip(np.rint(hu), -_HU_OFFSET, _HU_OFFSET - 1).astype(np.int32) + _HU_OFFSET).astype(np.uint16)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(stored).save(path, format="PNG", compress_level=1)  # fast; noisy CT barely compresses more


def read_hu_png(path: str | os.PathLike) -> np.ndarray:
    """Read a DeepLesion 16-bit PNG slice as HU.

    Args:
        path: the PNG file.

    Returns:
        ``(H, W)`` int32 array of HU (stored value - 32768).

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if the file is not a readable PNG, or not 16-bit greyscale.

    Examples:
        >>> import tempfile, numpy as np
        >>> p = f"{tempfile.mkdtemp()}/002.png"
        >>> write_hu_png(p, np.full((4, 5), -1000))
        >>> read_hu_png(p).shape
        (4, 5)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DeepLesion slice '{path}' does not exist")
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            array = np.array(img)
    except (OSError, SyntaxError, ValueError) as exc:  # PIL signals corrupt / truncated files with these
        raise ValueError(f"DeepLesion slice '{path}' is not a readable PNG ({type(exc).__name__}: {exc})") from exc
    if mode not in ("I;16", "I;16B", "I;16L", "I") or array.ndim != 2:
        raise ValueError(
            f"DeepLesion slice '{path}': expected a 16-bit greyscale PNG storing HU + 32768, got PIL mode {mode!r} "
            f"with shape {array.shape}"
        )
    return array.astype(np.int32) - _HU_OFFSET


# ----------------------------------------------------------------------------------------------------- DL_info.csv
def find_deeplesion_files(dataset_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Check a DeepLesion folder and return its ``DL_info.csv`` and ``Images_png`` paths.

    Args:
        dataset_dir: the folder holding ``DL_info.csv`` and ``Images_png/``.

    Returns:
        ``(csv_path, images_dir)``.

    Raises:
        FileNotFoundError: if either is missing; the message states the expected layout and the command that makes
            demo data.

    Examples:
        >>> import tempfile
        >>> root = tempfile.mkdtemp()
        >>> _ = write_deeplesion_demo(root, n_studies=1, image_size=64)
        >>> [p.name for p in find_deeplesion_files(root)]
        ['DL_info.csv', 'Images_png']
    """
    root = Path(dataset_dir)
    csv_path, images_dir = root / "DL_info.csv", root / "Images_png"
    missing = [str(p) for p in (csv_path, images_dir) if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"DeepLesion dataset_dir '{root}': missing {', '.join(missing)}; {_EXPECTED_LAYOUT}. "
            f"To make a small synthetic demo data set run: {_DEMO_COMMAND}"
        )
    return csv_path, images_dir


def _parse_numbers(value: str, column: str, where: str) -> list[float]:
    expected = _LIST_COLUMNS[column]
    try:
        numbers = [float(v) for v in value.split(",")]
    except ValueError:
        numbers = []
    ok = all(math.isfinite(v) for v in numbers) and (
        len(numbers) == expected if expected is not None else len(numbers) >= 2 and len(numbers) % 2 == 0
    )
    if not ok:
        want = f"{expected}" if expected is not None else "an even number (>= 2) of"
        raise ValueError(f"{where}: column '{column}' must hold {want} comma-separated numbers, got {value!r}")
    return numbers


def _parse_int(value: str, column: str, where: str) -> int:
    try:
        number = float(value)
        if not number.is_integer():
            raise ValueError
    except ValueError:
        raise ValueError(f"{where}: column '{column}' must be an integer, got {value!r}") from None
    return int(number)


def _parse_row(row: dict[str, str], where: str) -> dict:
    parsed: dict = {c: _parse_int(row[c], c, where) for c in _INT_COLUMNS}
    for column in _LIST_COLUMNS:
        parsed[column] = _parse_numbers(row[column], column, where)
    noisy = row["Possibly_noisy"].strip()
    if noisy not in ("0", "1", "0.0", "1.0"):
        raise ValueError(f"{where}: column 'Possibly_noisy' must be 0 or 1, got {noisy!r}")
    parsed["Possibly_noisy"] = noisy.startswith("1")
    age = row["Patient_age"].strip()
    try:
        parsed["Patient_age"] = float(age) if age and age.lower() != "nan" else None
    except ValueError:
        raise ValueError(f"{where}: column 'Patient_age' must be a number or empty, got {age!r}") from None
    parsed["Patient_gender"] = row["Patient_gender"].strip()
    parsed["File_name"] = row["File_name"].strip()

    name = parsed["File_name"]
    stem, _, slice_part = name.removesuffix(".png").rpartition("_")
    if not name.endswith(".png") or not stem or not slice_part.isdigit():
        raise ValueError(f"{where}: column 'File_name' must look like 000001_01_01_109.png, got {name!r}")
    if int(slice_part) != parsed["Key_slice_index"]:
        raise ValueError(
            f"{where}: File_name {name!r} names slice {int(slice_part)} but Key_slice_index is "
            f"{parsed['Key_slice_index']}"
        )
    lo, hi = parsed["Slice_range"]
    if not lo <= parsed["Key_slice_index"] <= hi:
        raise ValueError(f"{where}: Key_slice_index {parsed['Key_slice_index']} is outside Slice_range {lo:g}, {hi:g}")
    if min(parsed["Spacing_mm_px_"]) <= 0:
        raise ValueError(f"{where}: column 'Spacing_mm_px_' must be positive, got {row['Spacing_mm_px_']!r}")
    if parsed["Train_Val_Test"] not in (1, 2, 3):
        raise ValueError(f"{where}: column 'Train_Val_Test' must be 1, 2 or 3, got {row['Train_Val_Test']!r}")
    parsed["_series_dir"] = stem
    return parsed


def read_dl_info(csv_path: str | os.PathLike, split: int | Sequence[int] | None = None) -> list[dict]:
    """Read ``DL_info.csv`` into one record per key slice (an image may hold several lesions).

    Args:
        csv_path: the ``DL_info.csv`` file (or the DeepLesion folder holding it).
        split: keep only these official splits (1 train, 2 validation, 3 test); ``None`` keeps all. Default ``None``.

    Returns:
        Records in the order of the file, each a dict with

        - ``file_name`` (``"000001_01_01_109.png"``), ``series_dir`` (``"000001_01_01"``, the folder in
          ``Images_png``), ``patient_index``, ``study_index``, ``series_id``, ``key_slice_index`` (ints),
        - ``slice_range`` ``(first, last)`` ints, ``spacing`` ``(x mm/px, y mm/px, slice interval mm)``,
          ``image_size`` ints as written, ``dicom_windows`` ``[(low, high), ...]``, ``split`` int,
          ``patient_gender`` str, ``patient_age`` float or ``None``,
        - per lesion, as numpy arrays with one row per lesion: ``boxes`` ``(N, 4)`` float32 x1, y1, x2, y2;
          ``recist`` ``(N, 8)`` float32; ``diameters`` ``(N, 2)`` float32 pixels (long, short); ``locations``
          ``(N, 3)`` float32; ``lesion_types`` ``(N,)`` int64 (-1 = unknown); ``possibly_noisy`` ``(N,)`` bool.

    Raises:
        FileNotFoundError: if the file does not exist (the message says how to make demo data).
        ValueError: if a column is missing, or a row holds a bad value (the message gives file, line and column), or
            the rows of one key slice disagree on the image columns.

    Examples:
        >>> import tempfile
        >>> root = tempfile.mkdtemp()
        >>> _ = write_deeplesion_demo(root, n_studies=2, image_size=64)
        >>> records = read_dl_info(f"{root}/DL_info.csv")
        >>> records[0]["recist"].shape[1], records[0]["spacing"][2] > 0
        (8, True)
    """
    path = Path(csv_path)
    if path.is_dir():
        path = path / "DL_info.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"DeepLesion DL_info.csv '{path}' does not exist; {_EXPECTED_LAYOUT}. "
            f"To make a small synthetic demo data set run: {_DEMO_COMMAND}"
        )
    if split is not None:
        split = {int(split)} if isinstance(split, (int, np.integer)) else {int(s) for s in split}
    grouped: dict[str, list[dict]] = {}
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, skipinitialspace=False)
        missing = [c for c in DL_INFO_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; found {reader.fieldnames}")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if any(row.get(c) is None for c in DL_INFO_COLUMNS):
                raise ValueError(
                    f"{where}: row has {len([v for v in row.values() if v is not None])} fields, "
                    f"expected {len(DL_INFO_COLUMNS)}"
                )
            parsed = _parse_row(row, where)
            parsed["_where"] = where
            grouped.setdefault(parsed["File_name"], []).append(parsed)

    records = []
    for name, rows in grouped.items():
        first = rows[0]
        for other in rows[1:]:
            for column in _IMAGE_COLUMNS:
                if other[column] != first[column]:
                    raise ValueError(
                        f"{other['_where']}: column '{column}' of {name} is {other[column]} but "
                        f"{first['_where']} says {first[column]}"
                    )
        if split is not None and first["Train_Val_Test"] not in split:
            continue
        windows = first["DICOM_windows"]
        records.append(
            {
                "file_name": name,
                "series_dir": first["_series_dir"],
                "patient_index": first["Patient_index"],
                "study_index": first["Study_index"],
                "series_id": first["Series_ID"],
                "key_slice_index": first["Key_slice_index"],
                "slice_range": tuple(int(round(v)) for v in first["Slice_range"]),
                "spacing": tuple(first["Spacing_mm_px_"]),
                "image_size": tuple(int(round(v)) for v in first["Image_size"]),
                "dicom_windows": [(windows[i], windows[i + 1]) for i in range(0, len(windows), 2)],
                "split": first["Train_Val_Test"],
                "patient_gender": first["Patient_gender"],
                "patient_age": first["Patient_age"],
                "boxes": np.array([r["Bounding_boxes"] for r in rows], dtype=np.float32),
                "recist": np.array([r["Measurement_coordinates"] for r in rows], dtype=np.float32),
                "diameters": np.array([r["Lesion_diameters_Pixel_"] for r in rows], dtype=np.float32),
                "locations": np.array([r["Normalized_lesion_location"] for r in rows], dtype=np.float32),
                "lesion_types": np.array([r["Coarse_lesion_type"] for r in rows], dtype=np.int64),
                "possibly_noisy": np.array([r["Possibly_noisy"] for r in rows], dtype=bool),
            }
        )
    return records


# ----------------------------------------------------------------------------------------------------- 3D context
def load_slices(
    images_dir: str | os.PathLike, record: dict, num_slices: int = 3, target_interval_mm: float = 2.0
) -> np.ndarray:
    """Load the key slice with its context, resampled along z to a fixed slice interval.

    As in the papers' data pipeline (thickness normalised to 2 mm): the output slice ``j`` (``j = -D//2 .. D//2``)
    lies ``j * target_interval_mm`` from the key slice, i.e. at slice index ``key + j * target / interval`` where
    ``interval`` is the third value of ``Spacing_mm_px_``; fractional indices are linearly interpolated between the
    two neighbouring PNGs and indices beyond ``Slice_range`` are clamped to its ends (the edge slice repeats).

    Args:
        images_dir: the ``Images_png`` folder (the DeepLesion folder holding it is accepted too).
        record: one record of :func:`read_dl_info` (uses ``series_dir``, ``key_slice_index``, ``slice_range``,
            ``spacing`` and ``file_name``).
        num_slices: D, odd (3 or 7 in the papers). Default 3.
        target_interval_mm: slice interval of the output in mm. Default 2.0.

    Returns:
        ``(D, H, W)`` float32 HU, the key slice at index ``D // 2``.

    Raises:
        ValueError: for an even or non-positive ``num_slices``, a non-positive interval, a corrupt or non-16-bit
            PNG (message names the file), or slices of different sizes.
        FileNotFoundError: if a needed slice PNG is missing (message names the file and the record).

    Examples:
        >>> import tempfile
        >>> root = tempfile.mkdtemp()
        >>> _ = write_deeplesion_demo(root, n_studies=1, image_size=64)
        >>> record = read_dl_info(f"{root}/DL_info.csv")[0]
        >>> load_slices(f"{root}/Images_png", record, num_slices=7).shape
        (7, 64, 64)
    """
    num_slices = int(num_slices)
    if num_slices < 1 or num_slices % 2 == 0:
        raise ValueError(f"load_slices: num_slices must be odd and positive (e.g. 3 or 7), got {num_slices}")
    if not target_interval_mm > 0:
        raise ValueError(f"load_slices: target_interval_mm must be positive, got {target_interval_mm}")
    interval = float(record["spacing"][2])
    if not interval > 0:
        raise ValueError(f"load_slices: {record['file_name']}: slice interval must be positive, got {interval}")
    images = Path(images_dir)
    series = images / record["series_dir"]
    if not series.is_dir() and (images / "Images_png" / record["series_dir"]).is_dir():
        series = images / "Images_png" / record["series_dir"]
    if not series.is_dir():
        raise FileNotFoundError(
            f"load_slices: {record['file_name']}: series folder '{series}' does not exist; {_EXPECTED_LAYOUT}"
        )
    lo, hi = record["slice_range"]
    key = int(record["key_slice_index"])
    cache: dict[int, np.ndarray] = {}

    def read(index: int) -> np.ndarray:
        if index not in cache:
            path = series / f"{index:03d}.png"
            if not path.is_file():
                raise FileNotFoundError(
                    f"load_slices: {record['file_name']}: slice '{path}' is missing (Slice_range {lo}, {hi})"
                )
            cache[index] = read_hu_png(path).astype(np.float32)
        return cache[index]

    half = num_slices // 2
    step = float(target_interval_mm) / interval
    out = []
    for j in range(-half, half + 1):
        position = min(max(key + j * step, lo), hi)
        below = int(math.floor(position + 1e-6))
        frac = position - below
        slice_ = read(below)
        if frac > 1e-6:
            above = read(below + 1)
            if above.shape != slice_.shape:
                raise ValueError(
                    f"load_slices: {record['file_name']}: slices {below} and {below + 1} of '{series}' differ in "
                    f"shape: {slice_.shape} vs {above.shape}"
                )
            slice_ = (1.0 - frac) * slice_ + frac * above
        out.append(slice_)
    shapes = {s.shape for s in out}
    if len(shapes) != 1:
        raise ValueError(f"load_slices: {record['file_name']}: slices of '{series}' differ in shape: {shapes}")
    return np.stack(out).astype(np.float32, copy=False)


# ----------------------------------------------------------------------------------------------------- weak masks
def recist_ellipse_mask(shape: Sequence[int], recist_coords: Sequence[float] | np.ndarray) -> np.ndarray:
    """Weak lesion mask: the ellipse fitted to the two RECIST diameters.

    The papers make weak masks with GrabCut seeded by the RECIST marks; this is a simpler approximation of it (the
    bundle documents it). The ellipse's major axis lies along the long diameter and is as long as it; its minor axis
    is perpendicular to it and as long as the short diameter; its centre is the midpoint of the long diameter moved
    across it to the midpoint of the short diameter (the two coincide when the marks cross at their middles). A
    pixel belongs to the mask when its centre lies inside the ellipse; a semi-axis below half a pixel is raised to
    half a pixel so that degenerate marks still give a mask.

    Args:
        shape: ``(H, W)`` of the slice.
        recist_coords: 8 numbers ``x1, y1, x2, y2`` (long diameter) ``x3, y3, x4, y4`` (short diameter) in pixels,
            x = column, y = row; or an ``(N, 8)`` array, giving the union of the N ellipses.

    Returns:
        ``(H, W)`` bool mask; its area is close to ``pi * long * short / 4``.

    Raises:
        ValueError: if ``shape`` is not 2D or the coordinates are not finite groups of 8 numbers.

    Examples:
        >>> m = recist_ellipse_mask((64, 64), [12, 32, 52, 32, 32, 22, 32, 42])  # 40 x 20 px, horizontal
        >>> abs(int(m.sum()) - 628) < 15
        True
    """
    if len(shape) != 2:
        raise ValueError(f"recist_ellipse_mask: shape must be (H, W), got {tuple(shape)}")
    coords = np.asarray(recist_coords, dtype=np.float64)
    if coords.size == 0 or coords.size % 8 != 0 or not np.isfinite(coords).all():
        raise ValueError(
            f"recist_ellipse_mask: expected 8 finite numbers per lesion (x1, y1, x2, y2, x3, y3, x4, y4), got "
            f"{coords.tolist()}"
        )
    h, w = (int(s) for s in shape)
    mask = np.zeros((h, w), dtype=bool)
    for x1, y1, x2, y2, x3, y3, x4, y4 in coords.reshape(-1, 8):
        long_vec = np.array([x2 - x1, y2 - y1])
        long_len = float(np.hypot(*long_vec))
        short_len = float(np.hypot(x4 - x3, y4 - y3))
        if long_len > 0:
            axis = long_vec / long_len
        elif short_len > 0:  # only the short mark is usable: its normal as the major direction
            axis = np.array([-(y4 - y3), x4 - x3]) / short_len
        else:
            axis = np.array([1.0, 0.0])
        normal = np.array([-axis[1], axis[0]])
        mid_long = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
        mid_short = np.array([(x3 + x4) / 2, (y3 + y4) / 2])
        centre = mid_long + np.dot(mid_short - mid_long, normal) * normal
        a, b = max(long_len / 2, 0.5), max(short_len / 2, 0.5)
        # Only the pixels within the ellipse's bounding square can be inside it.
        r0, r1 = max(int(math.floor(centre[1] - a)), 0), min(int(math.ceil(centre[1] + a)) + 1, h)
        c0, c1 = max(int(math.floor(centre[0] - a)), 0), min(int(math.ceil(centre[0] + a)) + 1, w)
        if r0 >= r1 or c0 >= c1:
            continue
        dy = np.arange(r0, r1, dtype=np.float64)[:, None] - centre[1]
        dx = np.arange(c0, c1, dtype=np.float64)[None, :] - centre[0]
        along, across = dx * axis[0] + dy * axis[1], dx * normal[0] + dy * normal[1]
        mask[r0:r1, c0:c1] |= (along / a) ** 2 + (across / b) ** 2 <= 1.0
    return mask


# ----------------------------------------------------------------------------------------------------- demo data
# Tissue classes of the synthetic slices and their mean HU.
_AIR, _FAT, _SOFT, _LUNG, _LIVER, _SPLEEN, _KIDNEY, _VESSEL, _BONE, _CORTEX = range(10)
_TISSUE_HU = np.array([-1000, -100, 40, -850, 60, 50, 150, 160, 450, 1000], dtype=np.float32)
# Coarse_lesion_type codes of DeepLesion: 1 bone, 2 abdomen, 3 mediastinum, 4 liver, 5 lung, 6 kidney,
# 7 soft tissue, 8 pelvis (-1 where unknown, as for the whole training split).
_HOST_TYPE = {_LUNG: 5, _LIVER: 4, _SOFT: 2, _SPLEEN: 2, _KIDNEY: 6}


def _demo_anatomy(rng: np.random.Generator, region: str) -> dict:
    return {
        "region": region,
        "ax": rng.uniform(0.80, 0.90),
        "ay": rng.uniform(0.58, 0.68),
        "fat": rng.uniform(0.07, 0.12),
        "phase": rng.uniform(0, 2 * np.pi),
        "organ_shift": rng.uniform(-0.04, 0.04, size=2),
    }


def _demo_tissue(anat: dict, t: float, size: int) -> np.ndarray:
    """Tissue map of one synthetic axial slice; t in [0, 1] is the position along the series."""
    c = np.linspace(-1.0, 1.0, size)
    u, v = c[None, :], c[:, None]  # u: columns (image left = patient's right), v: rows (down = posterior)
    s = 1.0 + 0.04 * math.sin(math.pi * t + anat["phase"])
    ax, ay, fat = anat["ax"] * s, anat["ay"] * s, anat["fat"]
    du, dv = anat["organ_shift"]
    tissue = np.full((size, size), _AIR, dtype=np.uint8)
    tissue[(u / ax) ** 2 + (v / ay) ** 2 <= 1] = _FAT
    inner = (u / (ax - fat)) ** 2 + (v / (ay - fat * 0.8)) ** 2 <= 1
    tissue[inner] = _SOFT
    spine_v = ay * 0.6
    if anat["region"] == "chest":
        grow = 0.75 + 0.25 * math.sin(math.pi * t)
        for side in (-1.0, 1.0):
            lung = ((u - side * (0.40 + du)) / (0.30 * grow)) ** 2 + ((v - dv) / (0.42 * grow)) ** 2 <= 1
            tissue[lung & inner] = _LUNG
        heart = ((u - 0.08) / 0.22) ** 2 + ((v + 0.12) / 0.20) ** 2 <= 1
        tissue[heart] = _SOFT
        tissue[(u - 0.10) ** 2 + (v - spine_v + 0.20) ** 2 <= 0.05**2] = _VESSEL
    else:
        liver = ((u + 0.40 - du) / 0.40) ** 2 + ((v + 0.05 - dv) / 0.45) ** 2 <= (0.9 + 0.1 * t) ** 2
        tissue[liver & inner] = _LIVER
        spleen = ((u - 0.50) / 0.14) ** 2 + ((v - 0.18) / 0.22) ** 2 <= 1
        tissue[spleen & inner] = _SPLEEN
        for side in (-1.0, 1.0):
            kidney = ((u - side * 0.30) / 0.10) ** 2 + ((v - spine_v + 0.02) / 0.15) ** 2 <= 1
            tissue[kidney & inner & (tissue != _LIVER)] = _KIDNEY
        tissue[(u - 0.07) ** 2 + (v - spine_v + 0.20) ** 2 <= 0.05**2] = _VESSEL
    # Rib arcs and spine.
    rr = np.sqrt(u**2 + (v * ax / ay) ** 2)
    ring = (rr >= ax - fat - 0.06) & (rr <= ax - fat - 0.03)
    angle = np.arctan2(v, u)
    ribs = ring & (np.cos(8 * angle + anat["phase"] + 6 * t) > 0.3) & (np.abs(angle - np.pi / 2) > 0.6)
    tissue[ribs] = _CORTEX
    d = np.sqrt(u**2 + (v - spine_v) ** 2)
    tissue[d <= 0.12] = _CORTEX
    tissue[d <= 0.09] = _BONE
    return tissue


def _demo_series(
    rng: np.random.Generator, size: int, interval: float, context_mm: float
) -> tuple[dict, list[dict], int, float]:
    """Anatomy, lesions and slice count of one synthetic series."""
    region = "chest" if rng.random() < 0.5 else "abdomen"
    anat = _demo_anatomy(rng, region)
    pixel_mm = float(rng.uniform(0.6, 0.9)) * 512.0 / size  # keeps a realistic field of view at any image size
    context = int(math.ceil(context_mm / interval))
    n_keys = int(rng.integers(1, 3))
    key_gap = max(2, int(math.ceil(12.0 / interval)))
    n_slices = 2 * context + 1 + (n_keys - 1) * key_gap
    keys = [1 + context + k * key_gap for k in range(n_keys)]
    hosts = (_LUNG, _SOFT) if region == "chest" else (_LIVER, _SPLEEN, _KIDNEY, _SOFT)
    lesions = []
    n_lesions = int(rng.integers(1, 4))
    for i in range(n_lesions):
        key = keys[i % n_keys]
        t = (key - 1) / max(n_slices - 1, 1)
        tissue = _demo_tissue(anat, t, size)
        occupied = np.zeros_like(tissue, dtype=bool)
        for other in lesions:
            if other["key"] == key:
                occupied |= recist_ellipse_mask(tissue.shape, other["recist"])
        for attempt in range(20):
            host = hosts[int(rng.integers(len(hosts)))] if attempt < 10 else _SOFT
            # 8-40 mm long diameter, but at least 6 pixels so that lesions stay visible on small demo images.
            a = max(float(rng.uniform(8.0, 40.0)) / 2 / pixel_mm, 3.0) * (1.0 if attempt < 10 else 0.6)
            b = a * float(rng.uniform(0.5, 0.95))
            short_mm = 2 * b * pixel_mm
            room = ndimage.distance_transform_edt((tissue == host) & ~occupied)
            candidates = np.argwhere(room >= a + 2)
            if len(candidates):
                break
        else:
            continue  # no room for a lesion on this slice; the series keeps the others
        cy, cx = (float(c) for c in candidates[int(rng.integers(len(candidates)))])
        theta = float(rng.uniform(0, np.pi))
        ux, uy = math.cos(theta), math.sin(theta)
        recist = [
            cx - a * ux,
            cy - a * uy,
            cx + a * ux,
            cy + a * uy,
            cx + b * uy,
            cy - b * ux,
            cx - b * uy,
            cy + b * ux,
        ]
        if host == _LUNG:
            contrast = float(rng.uniform(850.0, 900.0))  # a soft-tissue nodule in aerated lung
        elif rng.random() < 0.6:
            contrast = -float(rng.uniform(30.0, 60.0))  # hypodense
        else:
            contrast = float(rng.uniform(50.0, 90.0))  # hyperdense
        lesions.append(
            {
                "key": key,
                "recist": recist,
                "a": a,
                "b": b,
                "half_depth_mm": short_mm / 2 * float(rng.uniform(0.8, 1.2)),
                "contrast": contrast,
                "host": host,
                "long_px": 2 * a,
                "short_px": 2 * b,
            }
        )
    return anat, lesions, n_slices, pixel_mm


def _demo_slice(
    rng: np.random.Generator, anat: dict, lesions: list[dict], index: int, n_slices: int, interval: float, size: int
) -> np.ndarray:
    t = (index - 1) / max(n_slices - 1, 1)
    tissue = _demo_tissue(anat, t, size)
    hu = _TISSUE_HU[tissue]
    for lesion in lesions:
        dz = (index - lesion["key"]) * interval
        if abs(dz) >= lesion["half_depth_mm"]:
            continue
        shrink = math.sqrt(1.0 - (dz / lesion["half_depth_mm"]) ** 2)
        x1, y1, x2, y2, x3, y3, x4, y4 = lesion["recist"]
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        # Scale the RECIST marks about the centre to get this slice's cross-section.
        scaled = [
            cx + (x - cx) * shrink if k % 2 == 0 else cy + (x - cy) * shrink for k, x in enumerate(lesion["recist"])
        ]
        hu = np.where(recist_ellipse_mask(hu.shape, scaled), hu + lesion["contrast"], hu)
    hu = ndimage.gaussian_filter(hu.astype(np.float32), sigma=0.7)
    hu += rng.normal(0.0, 12.0, size=hu.shape).astype(np.float32)
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int32)


def _fmt(values: Sequence[float]) -> str:
    """Numbers as DL_info.csv writes them: 6 significant digits, ', '-separated."""
    return ", ".join(f"{float(v):g}" for v in values)


def write_deeplesion_demo(
    out_dir: str | os.PathLike,
    n_studies: int = 6,
    seed: int = 0,
    image_size: int = 512,
    slice_intervals: Sequence[float] = (1.0, 2.0, 2.5, 5.0),
    context_mm: float = 16.0,
) -> list[dict]:
    """Write a small synthetic data set in the exact DeepLesion layout.

    Each study is one series of synthetic axial CT slices (chest: lungs, heart, vessels; or abdomen: liver, spleen,
    kidneys, aorta; body outline, fat, ribs and spine; ~12 HU noise) with 1-3 lesions: ellipsoids spanning a few
    slices, brighter or darker than their host organ, on 1-2 key slices (so a key slice may hold several lesions).
    ``DL_info.csv`` holds one row per lesion with the official columns and value formats: the RECIST endpoints are
    the axes of the lesion's ellipse on its key slice, the bounding box is their extent padded by 5 pixels (clipped
    to the image), ``Spacing_mm_px_`` ends with the series' slice interval (drawn from ``slice_intervals``), and
    patients (studies 1-2 are patient 1, study 3 patient 2, studies 4-5 patient 3, ...) go to the official splits
    1 / 2 / 3 in a fixed 5:1:1 cycle, so train, validation and test are all present from 5 studies on. Slices are
    numbered from 1; each series holds ``context_mm`` of slices on each side of its key slices. A ``README.txt``
    says the data are synthetic.

    Args:
        out_dir: the folder to write ``DL_info.csv``, ``Images_png/`` and ``README.txt`` into (created if needed).
        n_studies: number of studies (one series each; some patients get two studies). Default 6.
        seed: random seed; the same seed gives the same files. Default 0.
        image_size: slice height and width in pixels (DeepLesion's is 512). Default 512.
        slice_intervals: slice intervals in mm to draw from, one per series. Default ``(1.0, 2.0, 2.5, 5.0)``.
        context_mm: slices kept on each side of a key slice, in mm. Default 16.

    Returns:
        The records of the written ``DL_info.csv`` as :func:`read_dl_info` returns them.

    Raises:
        ValueError: if ``n_studies`` < 1, ``image_size`` < 32, or an interval is not positive.

    Examples:
        >>> import tempfile
        >>> root = tempfile.mkdtemp()
        >>> records = write_deeplesion_demo(root, n_studies=5, image_size=64)
        >>> sorted({r["split"] for r in records})
        [1, 2, 3]
    """
    if int(n_studies) < 1:
        raise ValueError(f"write_deeplesion_demo: n_studies must be >= 1, got {n_studies}")
    size = int(image_size)
    if size < 32:
        raise ValueError(f"write_deeplesion_demo: image_size must be >= 32, got {image_size}")
    intervals = [float(s) for s in slice_intervals]
    if not intervals or min(intervals) <= 0:
        raise ValueError(f"write_deeplesion_demo: slice_intervals must be positive, got {slice_intervals}")
    out = Path(out_dir)
    images = out / "Images_png"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    split_cycle = (1, 2, 3, 1, 1, 1, 1)
    patients: dict[int, dict] = {}
    rows = []
    for k in range(int(n_studies)):
        patient = 1 + (2 * k) // 3  # patients 1, 3, 5, ... get two studies
        info = patients.setdefault(
            patient,
            {"gender": "F" if rng.random() < 0.5 else "M", "age": int(rng.integers(20, 86)), "studies": 0},
        )
        info["studies"] += 1
        study, series_id = info["studies"], 1
        split = split_cycle[(patient - 1) % len(split_cycle)]
        interval = intervals[int(rng.integers(len(intervals)))]
        anat, lesions, n_slices, pixel_mm = _demo_series(rng, size, interval, context_mm)
        series_dir = images / f"{patient:06d}_{study:02d}_{series_id:02d}"
        for index in range(1, n_slices + 1):
            write_hu_png(
                series_dir / f"{index:03d}.png", _demo_slice(rng, anat, lesions, index, n_slices, interval, size)
            )
        context = int(math.ceil(context_mm / interval))
        body_x0, body_x1 = size / 2 * (1 - anat["ax"]), size / 2 * (1 + anat["ax"])
        body_y0, body_y1 = size / 2 * (1 - anat["ay"]), size / 2 * (1 + anat["ay"])
        for lesion in lesions:
            xs, ys = lesion["recist"][0::2], lesion["recist"][1::2]
            box = [
                max(min(xs) - 5, 0.0),
                max(min(ys) - 5, 0.0),
                min(max(xs) + 5, size - 1.0),
                min(max(ys) + 5, size - 1.0),
            ]
            cx, cy = (xs[0] + xs[1]) / 2, (ys[0] + ys[1]) / 2
            location = [
                (cx - body_x0) / (body_x1 - body_x0),
                (cy - body_y0) / (body_y1 - body_y0),
                (lesion["key"] - 1) / max(n_slices - 1, 1),
            ]
            window = (-1350, 150) if lesion["host"] == _LUNG else (-175, 275)
            key = lesion["key"]
            rows.append(
                {
                    "File_name": f"{patient:06d}_{study:02d}_{series_id:02d}_{key:03d}.png",
                    "Patient_index": patient,
                    "Study_index": study,
                    "Series_ID": series_id,
                    "Key_slice_index": key,
                    "Measurement_coordinates": _fmt(lesion["recist"]),
                    "Bounding_boxes": _fmt(box),
                    "Lesion_diameters_Pixel_": _fmt([lesion["long_px"], lesion["short_px"]]),
                    "Normalized_lesion_location": _fmt(location),
                    "Coarse_lesion_type": -1 if split == 1 else _HOST_TYPE[lesion["host"]],
                    "Possibly_noisy": 0,
                    "Slice_range": _fmt([max(1, key - context), min(n_slices, key + context)]),
                    "Spacing_mm_px_": _fmt([pixel_mm, pixel_mm, interval]),
                    "Image_size": _fmt([size, size]),
                    "DICOM_windows": _fmt(window),
                    "Patient_gender": info["gender"],
                    "Patient_age": info["age"],
                    "Train_Val_Test": split,
                }
            )
    csv_path = out / "DL_info.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=DL_INFO_COLUMNS, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    (out / "README.txt").write_text(
        "SYNTHETIC DATA - not patient data, not DeepLesion.\n\n"
        f"{n_studies} synthetic CT series written by monai_acs.data.deeplesion.write_deeplesion_demo (seed {seed}) in\n"
        "the DeepLesion layout: Images_png/<patient>_<study>_<series>/<slice>.png (16-bit PNG, HU + 32768) and\n"
        f"DL_info.csv (one row per lesion, official columns). {len(rows)} lesions, {size} x {size} pixels, slice\n"
        f"intervals drawn from {', '.join(f'{s:g}' for s in intervals)} mm. Lesions are ellipsoids brighter or darker\n"
        "than their host organ; RECIST marks are the axes of their key-slice ellipses, boxes the marks' extent\n"
        "padded by 5 px.\n"
        "Use it to exercise the code paths; numbers measured on it say nothing about DeepLesion.\n"
    )
    return read_dl_info(csv_path)
