"""LiTS (Liver Tumor Segmentation benchmark) data: layout reader, seeded datalist, synthetic CT phantoms.

The ACS paper (Sec. IV-C, Table VI) segments liver and liver tumours on LiTS: 131 training CTs stored as
``volume-N.nii`` with ``segmentation-N.nii`` (labels 0 background, 1 liver, 2 tumour), 512 x 512 in plane,
50-1000 slices, anisotropic spacing. The user downloads LiTS; this module reads that layout as it is (also inside
the ``Training Batch 1`` / ``Training Batch 2`` folders of the official download), writes MONAI datalists with a
seeded train/validation split, and generates a small synthetic data set in the same layout so that every path of
the bundle can run on CPU.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from .nifti import save_nifti

__all__ = [
    "LITS_LABELS",
    "find_lits_cases",
    "load_lits_datalist",
    "make_lits_datalist",
    "make_lits_phantom",
    "split_lits_cases",
    "write_lits_demo",
]

#: Label values of the LiTS segmentation masks.
LITS_LABELS: dict[int, str] = {0: "background", 1: "liver", 2: "tumour"}

_DEMO_COMMAND = "python scripts/make_demo_data.py lits --out DIR"
_EXPECTED_LAYOUT = (
    "expected the LiTS layout: volume-N.nii (or .nii.gz) with its segmentation-N.nii (or .nii.gz), directly in "
    "the folder or in subfolders such as 'Training Batch 1' and 'Training Batch 2'"
)
_CASE_RE = re.compile(r"^(volume|segmentation)-(\d+)\.nii(\.gz)?$")

# Tissue classes of the phantom (internal; the public labels are LITS_LABELS).
_AIR, _FAT, _SOFT, _LIVER, _TUMOUR, _BONE, _CORTEX, _VESSEL, _KIDNEY = range(9)
# Mean HU of each tissue class (tumours get their own value per lesion, drawn in [20, 35] HU).
_TISSUE_HU: dict[int, float] = {
    _AIR: -1000.0,
    _FAT: -100.0,
    _SOFT: 40.0,
    _LIVER: 60.0,
    _TUMOUR: 28.0,
    _BONE: 450.0,
    _CORTEX: 1000.0,
    _VESSEL: 150.0,
    _KIDNEY: 150.0,
}


def _lits_tissues(
    rng: np.random.Generator, shape_xyz: tuple[int, int, int], n_tumours: int | None
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Tissue class map of one phantom and the boolean mask of each tumour (voxel axes L, P, S)."""
    nx, ny, nz = (int(s) for s in shape_xyz)
    # Normalised coordinates: u runs toward the patient's left, v toward posterior, w toward superior, all in [-1, 1].
    u = np.linspace(-1.0, 1.0, nx)[:, None, None]
    v = np.linspace(-1.0, 1.0, ny)[None, :, None]
    w = np.linspace(-1.0, 1.0, nz)[None, None, :] if nz > 1 else np.zeros((1, 1, 1))

    tissue = np.full((nx, ny, nz), _AIR, dtype=np.uint8)
    # Body outline: an ellipse (wider than deep) that changes slowly along z.
    ax, ay = rng.uniform(0.82, 0.92), rng.uniform(0.62, 0.72)
    scale = 1.0 + 0.04 * np.sin(np.pi * (w + rng.uniform(-1, 1)))
    body = (u / (ax * scale)) ** 2 + ((v - 0.02) / (ay * scale)) ** 2 <= 1.0
    tissue[body] = _FAT  # subcutaneous fat
    fat_t = rng.uniform(0.10, 0.16)
    inner = (u / (ax * scale - fat_t)) ** 2 + ((v - 0.02) / (ay * scale - fat_t * 0.8)) ** 2 <= 1.0
    tissue[inner] = _SOFT  # muscle wall, bowel, other soft tissue
    # Visceral fat pockets inside the abdomen.
    for _ in range(4):
        cu, cv, r = rng.uniform(-0.1, 0.5), rng.uniform(-0.35, 0.2), rng.uniform(0.06, 0.12)
        tissue[inner & ((u - cu) ** 2 + (v - cv) ** 2 <= r**2)] = _FAT

    # Rib cage: short arcs of cortical bone just inside the muscle wall, anterior and lateral, varying along z.
    ring_in, ring_out = ax * scale - fat_t - 0.07, ax * scale - fat_t - 0.035
    rr = np.sqrt(u**2 + ((v - 0.02) * ax / ay) ** 2)
    angle = np.arctan2(v - 0.02, u)
    rib_phase = rng.uniform(0, 2 * np.pi)
    on_rib = np.cos(7.0 * angle + rib_phase + 3.0 * w) > 0.35
    posterior_gap = np.abs(angle - np.pi / 2) < 0.6  # no rib arcs straight behind the spine
    ribs = (rr >= ring_in) & (rr <= ring_out) & on_rib & ~posterior_gap
    tissue[ribs & inner] = _CORTEX

    # Spine: vertebral body (cancellous bone with a cortical rim) behind the abdomen, spinal canal behind it.
    su, sv = 0.0, 0.02 + ay * 0.55
    vr = 0.13
    d_vert = np.sqrt((u - su) ** 2 + (v - sv) ** 2)
    vertebra = np.broadcast_to(d_vert <= vr, tissue.shape)
    tissue[vertebra] = _CORTEX
    tissue[np.broadcast_to(d_vert <= vr - 0.03, tissue.shape)] = _BONE
    canal = np.broadcast_to((u - su) ** 2 + (v - sv - vr - 0.05) ** 2 <= 0.045**2, tissue.shape)
    tissue[canal] = _SOFT
    # Aorta (contrast-enhanced) in front of the spine, left of the midline; kidneys beside the spine.
    aorta = np.broadcast_to((u - 0.07) ** 2 + (v - sv + vr + 0.07) ** 2 <= 0.055**2, tissue.shape)
    tissue[aorta] = _VESSEL
    kz = np.abs(w + 0.35) <= 0.45  # kidneys sit in the lower half of the field of view
    for side in (-1.0, 1.0):
        kidney = ((u - side * 0.32) / 0.11) ** 2 + ((v - sv + 0.02) / 0.16) ** 2 <= 1.0
        tissue[kidney & kz & inner] = _KIDNEY

    # Liver: an ellipsoid-ish blob on the patient's right (low u), in the upper part of the field of view, with a
    # smooth random deformation of its outline.
    lu, lv, lw = rng.uniform(-0.42, -0.34), rng.uniform(-0.12, 0.0), rng.uniform(0.05, 0.2)
    ru, rv, rw = rng.uniform(0.36, 0.42), rng.uniform(0.42, 0.50), rng.uniform(0.6, 0.75)
    theta = np.arctan2(v - lv, u - lu)
    k1, k2 = rng.uniform(0, 2 * np.pi, size=2)
    wobble = 1.0 + 0.08 * np.sin(2 * theta + k1) + 0.05 * np.sin(3 * theta + k2 + 2.0 * w)
    liver = ((u - lu) / ru) ** 2 + ((v - lv) / rv) ** 2 + ((w - lw) / rw) ** 2 <= wobble**2
    liver &= inner & ~np.isin(tissue, (_CORTEX, _BONE, _VESSEL, _KIDNEY))
    tissue[liver] = _LIVER

    # Tumours: spheres in the normalised coordinates (ellipsoids in mm and voxels) well inside the liver.
    if n_tumours is None:
        n_tumours = int(rng.integers(0, 4))
    tumours: list[np.ndarray] = []
    dist_in = ndimage.distance_transform_edt(liver, sampling=(2.0 / nx, 2.0 / ny, 2.0 / max(nz, 1)))
    for _ in range(n_tumours):
        radius = rng.uniform(0.06, 0.12)
        candidates = np.argwhere(dist_in >= radius * 1.15)
        if len(candidates) == 0:
            candidates = np.argwhere(dist_in >= dist_in.max() * 0.8)
        ci, cj, ck = candidates[rng.integers(len(candidates))]
        sphere = (u - u[ci, 0, 0]) ** 2 + (v - v[0, cj, 0]) ** 2 + (w - w[0, 0, ck]) ** 2 <= radius**2
        sphere &= liver
        tumours.append(sphere)
        tissue[sphere] = _TUMOUR
    return tissue, tumours


def make_lits_phantom(
    rng: np.random.Generator | int | None = None,
    shape_xyz: Sequence[int] = (96, 96, 40),
    spacing: Sequence[float] = (0.7, 0.7, 2.5),
    n_tumours: int | None = None,
    noise_hu: float = 12.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Make one synthetic abdominal CT phantom with its LiTS-style label map.

    Mimics a contrast-enhanced abdominal CT as in LiTS (ACS paper Sec. IV-C): air (-1000 HU) outside the body,
    subcutaneous and visceral fat (~ -100 HU), muscle and soft tissue (~ +40 HU), an enhanced aorta and kidneys
    (~ +150 HU), the liver (~ +60 HU) as a deformed ellipsoid on the patient's right, 0-3 spherical tumours
    darker than the liver (+20..+35 HU) inside it, and bone (vertebral body ~ +450 HU with a ~ +1000 HU cortical
    rim, rib arcs ~ +1000 HU). The image is slightly blurred and carries Gaussian noise.

    The anatomy is laid out in fractions of the field of view, so it scales with ``shape_xyz``; the spacing only
    enters the affine.

    Args:
        rng: a numpy ``Generator`` or a seed. Default ``None`` (fresh entropy).
        shape_xyz: voxels along the array axes (x, y, z), as nibabel returns them. Default ``(96, 96, 40)``.
        spacing: voxel size in mm along (x, y, z). Default ``(0.7, 0.7, 2.5)`` (anisotropic, as in LiTS).
        n_tumours: number of tumours; ``None`` draws 0-3. Default ``None``.
        noise_hu: standard deviation of the Gaussian noise in HU. Default 12.

    Returns:
        ``(ct, seg, affine)``: ``ct`` int16 HU of shape ``shape_xyz``; ``seg`` uint8 with 0 background, 1 liver,
        2 tumour (tumour voxels lie inside the liver region); ``affine`` the 4 x 4 voxel-to-world matrix. The world
        frame is NIfTI's RAS+ (mm); the voxel axes run toward the patient's Left, Posterior and Superior (axis codes
        ``('L', 'P', 'S')``, as in a DICOM-derived scan), so ``affine = diag(-sx, -sy, sz)`` plus a translation that
        puts the volume centre at the world origin. The patient's right is therefore at low x indices.

    Raises:
        ValueError: if ``shape_xyz`` or ``spacing`` does not have three positive entries.

    Examples:
        >>> import numpy as np
        >>> ct, seg, affine = make_lits_phantom(0, shape_xyz=(48, 48, 12))
        >>> ct.dtype, seg.dtype, ct.shape == seg.shape == (48, 48, 12)
        (dtype('int16'), dtype('uint8'), True)
        >>> bool(np.allclose(np.abs(np.diag(affine))[:3], (0.7, 0.7, 2.5)))
        True
    """
    shape_xyz = tuple(int(s) for s in shape_xyz)
    spacing = tuple(float(s) for s in spacing)
    if len(shape_xyz) != 3 or min(shape_xyz) < 1:
        raise ValueError(f"make_lits_phantom: shape_xyz must be three positive sizes (x, y, z), got {shape_xyz}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"make_lits_phantom: spacing must be three positive sizes in mm (x, y, z), got {spacing}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)

    tissue, tumours = _lits_tissues(rng, shape_xyz, n_tumours)
    lut = np.array([_TISSUE_HU[t] for t in range(len(_TISSUE_HU))], dtype=np.float32)
    hu = lut[tissue]
    for mask in tumours:
        hu[mask] = rng.uniform(20.0, 35.0)
    # Partial-volume blur (in voxels, stronger in plane where voxels are small), then noise.
    hu = ndimage.gaussian_filter(hu, sigma=(0.6, 0.6, 0.3))
    hu += rng.normal(0.0, noise_hu, size=hu.shape).astype(np.float32)
    ct = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)

    seg = np.zeros(shape_xyz, dtype=np.uint8)
    seg[(tissue == _LIVER) | (tissue == _TUMOUR)] = 1
    seg[tissue == _TUMOUR] = 2

    sx, sy, sz = spacing
    affine = np.diag([-sx, -sy, sz, 1.0])
    centre = (np.array(shape_xyz, dtype=np.float64) - 1.0) / 2.0
    affine[:3, 3] = -affine[:3, :3] @ centre
    return ct, seg, affine


def write_lits_demo(
    out_dir: str | os.PathLike,
    n_cases: int = 4,
    seed: int = 0,
    shape_xyz: Sequence[int] = (96, 96, 40),
    spacing: Sequence[float] = (0.7, 0.7, 2.5),
) -> list[dict[str, str]]:
    """Write a small synthetic data set in the LiTS layout.

    Writes ``volume-N.nii`` (int16 HU) and ``segmentation-N.nii`` (uint8 labels) for N = 0 .. n_cases - 1,
    uncompressed as in the LiTS release, plus a ``README.txt`` saying the data are synthetic. Each case is a
    :func:`make_lits_phantom`; case 0 always holds at least one tumour so that lesion metrics are defined.

    Args:
        out_dir: folder to write into (created if needed; existing cases with the same names are overwritten).
        n_cases: number of cases. Default 4.
        seed: random seed; the same seed gives the same files. Default 0.
        shape_xyz: voxels along (x, y, z). Default ``(96, 96, 40)``.
        spacing: voxel size in mm along (x, y, z). Default ``(0.7, 0.7, 2.5)``.

    Returns:
        The written cases as ``[{"image": ".../volume-N.nii", "label": ".../segmentation-N.nii"}, ...]``.

    Raises:
        ValueError: if ``n_cases`` is smaller than 1.

    Examples:
        >>> import tempfile
        >>> cases = write_lits_demo(tempfile.mkdtemp(), n_cases=2, shape_xyz=(32, 32, 8))
        >>> [Path(c["image"]).name for c in cases]
        ['volume-0.nii', 'volume-1.nii']
    """
    if int(n_cases) < 1:
        raise ValueError(f"write_lits_demo: n_cases must be >= 1, got {n_cases}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cases = []
    for n in range(int(n_cases)):
        n_tumours = int(rng.integers(1 if n == 0 else 0, 4))
        ct, seg, affine = make_lits_phantom(rng, shape_xyz=shape_xyz, spacing=spacing, n_tumours=n_tumours)
        image, label = out / f"volume-{n}.nii", out / f"segmentation-{n}.nii"
        save_nifti(ct, affine, image)
        save_nifti(seg, affine, label)
        cases.append({"image": str(image), "label": str(label)})
    shape_s = " x ".join(str(int(s)) for s in shape_xyz)
    spacing_s = " x ".join(f"{float(s):g}" for s in spacing)
    (out / "README.txt").write_text(
        "SYNTHETIC DATA - not patient data, not LiTS.\n\n"
        f"{n_cases} synthetic abdominal CT phantoms written by monai_acs.data.lits.write_lits_demo (seed {seed})\n"
        "in the LiTS layout: volume-N.nii (int16 HU) and segmentation-N.nii (uint8: 0 background, 1 liver,\n"
        f"2 tumour). Shape {shape_s} voxels (x, y, z), spacing {spacing_s} mm, voxel axes toward patient\n"
        "Left/Posterior/Superior in a RAS+ NIfTI world frame. Tissues: air -1000 HU, fat ~-100, soft tissue ~+40,\n"
        "liver ~+60, tumours +20..+35 (darker than liver), enhanced vessels/kidneys ~+150, bone +450..+1000,\n"
        "Gaussian noise. Use it to exercise the code paths; numbers measured on it say nothing about LiTS.\n"
    )
    return cases


def _case_number(path: Path) -> tuple[str, int] | None:
    m = _CASE_RE.match(path.name)
    return (m.group(1), int(m.group(2))) if m else None


def find_lits_cases(dataset_dir: str | os.PathLike, require_labels: bool = True) -> list[dict[str, str]]:
    """Find the LiTS cases under a folder, as the user downloaded them.

    Looks (recursively) for ``volume-N.nii[.gz]`` and ``segmentation-N.nii[.gz]`` and pairs them by N, so both the
    flat layout and the official ``Training Batch 1`` / ``Training Batch 2`` folders (or separate volume and
    segmentation folders) work.

    Args:
        dataset_dir: the folder holding the data set.
        require_labels: if ``True`` (default), only cases with a segmentation are returned and volumes without one
            are reported with a warning; if ``False``, every volume is returned and ``"label"`` is present only
            where a segmentation exists (for inference on unlabelled volumes).

    Returns:
        ``[{"image": path, "label": path}, ...]`` sorted by case number N (paths as strings).

    Raises:
        FileNotFoundError: if ``dataset_dir`` does not exist or holds no usable case; the message states the
            expected layout, the volumes lacking a segmentation, and the command that makes demo data.
        ValueError: if the same case number occurs twice (e.g. ``volume-3.nii`` and ``volume-3.nii.gz``).

    Examples:
        >>> import tempfile
        >>> root = tempfile.mkdtemp()
        >>> _ = write_lits_demo(root, n_cases=2, shape_xyz=(32, 32, 8))
        >>> len(find_lits_cases(root))
        2
    """
    root = Path(dataset_dir)
    hint = f"{_EXPECTED_LAYOUT}. To make a small synthetic demo data set run: {_DEMO_COMMAND}"
    if not root.is_dir():
        raise FileNotFoundError(f"LiTS dataset_dir '{root}' does not exist or is not a folder; {hint}")
    found: dict[str, dict[int, Path]] = {"volume": {}, "segmentation": {}}
    for path in sorted(root.rglob("*.nii*")):
        key = _case_number(path)
        if key is None or not path.is_file():
            continue
        kind, n = key
        if n in found[kind]:
            raise ValueError(f"LiTS dataset_dir '{root}': case {n} has two {kind} files: '{found[kind][n]}', '{path}'")
        found[kind][n] = path
    volumes, segs = found["volume"], found["segmentation"]
    orphans = sorted(set(volumes) - set(segs))
    orphan_msg = ""
    if orphans:
        names = ", ".join(volumes[n].name for n in orphans[:10]) + (" ..." if len(orphans) > 10 else "")
        orphan_msg = f"{len(orphans)} volume(s) without segmentation-N: {names}"
    cases = []
    for n in sorted(volumes):
        if n in segs:
            cases.append({"image": str(volumes[n]), "label": str(segs[n])})
        elif not require_labels:
            cases.append({"image": str(volumes[n])})
    if not cases:
        detail = f" ({orphan_msg})" if orphan_msg else ""
        raise FileNotFoundError(f"LiTS dataset_dir '{root}' holds no usable case{detail}; {hint}")
    if orphans and require_labels:
        warnings.warn(f"LiTS dataset_dir '{root}': skipping {orphan_msg}", stacklevel=2)
    return cases


def split_lits_cases(
    cases: Sequence[dict[str, str]], val_fraction: float = 0.2, seed: int = 0
) -> dict[str, list[dict[str, str]]]:
    """Split cases into training and validation sets with a seeded permutation.

    Args:
        cases: the cases, e.g. from :func:`find_lits_cases`; their order does not matter (they are sorted by image
            path first, so the split depends only on the seed and the set of cases).
        val_fraction: fraction of cases for validation, in [0, 1); rounded, at least one case when > 0.
            Default 0.2.
        seed: seed of the permutation. Default 0.

    Returns:
        ``{"training": [...], "validation": [...]}``, disjoint, each sorted by image path.

    Raises:
        ValueError: if ``val_fraction`` is outside [0, 1) or too few cases leave the training set empty.

    Examples:
        >>> cases = [{"image": f"volume-{i}.nii", "label": f"segmentation-{i}.nii"} for i in range(10)]
        >>> split = split_lits_cases(cases, val_fraction=0.2, seed=0)
        >>> len(split["training"]), len(split["validation"])
        (8, 2)
    """
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ValueError(f"split_lits_cases: val_fraction must be in [0, 1), got {val_fraction}")
    ordered = sorted(cases, key=lambda c: str(c["image"]))
    n = len(ordered)
    n_val = int(round(val_fraction * n))
    if val_fraction > 0:
        n_val = max(n_val, 1)
    if n - n_val < 1:
        raise ValueError(
            f"split_lits_cases: {n} case(s) with val_fraction={val_fraction} leaves no training case; "
            "need at least 2 cases or val_fraction=0"
        )
    perm = np.random.default_rng(seed).permutation(n)
    val_idx = set(perm[:n_val].tolist())
    return {
        "training": [c for i, c in enumerate(ordered) if i not in val_idx],
        "validation": [c for i, c in enumerate(ordered) if i in val_idx],
    }


def make_lits_datalist(
    dataset_dir: str | os.PathLike, out_json: str | os.PathLike, val_fraction: float = 0.2, seed: int = 0
) -> dict:
    """Write a MONAI datalist JSON for a LiTS folder with a seeded train/validation split.

    The JSON follows the Medical Segmentation Decathlon convention that ``monai.data.load_decathlon_datalist``
    reads: ``{"training": [{"image", "label"}, ...], "validation": [...], "labels": {...}, ...}``. Paths are
    written relative to the JSON's folder (MONAI's default ``base_dir``).

    Args:
        dataset_dir: the LiTS folder (see :func:`find_lits_cases`).
        out_json: the JSON file to write (parent folders are created).
        val_fraction: fraction of cases for validation, in [0, 1). Default 0.2.
        seed: seed of the split. Default 0.

    Returns:
        The datalist written (with relative paths).

    Raises:
        FileNotFoundError: if ``dataset_dir`` holds no LiTS case (see :func:`find_lits_cases`).
        ValueError: if the split is impossible (see :func:`split_lits_cases`).

    Examples:
        >>> import tempfile
        >>> root = tempfile.mkdtemp()
        >>> _ = write_lits_demo(root, n_cases=3, shape_xyz=(32, 32, 8))
        >>> d = make_lits_datalist(root, f"{root}/datalist.json", val_fraction=0.3)
        >>> len(d["training"]), len(d["validation"])
        (2, 1)
    """
    out = Path(out_json)
    split = split_lits_cases(find_lits_cases(dataset_dir), val_fraction=val_fraction, seed=seed)
    base = out.resolve().parent

    def rel(p: str) -> str:
        return os.path.relpath(Path(p).resolve(), base)

    datalist = {
        "name": "LiTS",
        "description": "LiTS liver and liver-tumour segmentation, seeded train/validation split (monai_acs)",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": {str(k): v for k, v in LITS_LABELS.items()},
        "dataset_dir": str(Path(dataset_dir).resolve()),
        "seed": int(seed),
        "val_fraction": float(val_fraction),
        "numTraining": len(split["training"]),
        "numValidation": len(split["validation"]),
        "training": [{"image": rel(c["image"]), "label": rel(c["label"])} for c in split["training"]],
        "validation": [{"image": rel(c["image"]), "label": rel(c["label"])} for c in split["validation"]],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(datalist, indent=2) + "\n")
    return datalist


def load_lits_datalist(
    source: str | os.PathLike, data_list_key: str = "training", val_fraction: float = 0.2, seed: int = 0
) -> list[dict[str, str]]:
    """Return one split of LiTS as absolute-path dicts, from a LiTS folder or a datalist JSON.

    This is what a bundle config calls with its ``dataset_dir``: a folder is read with :func:`find_lits_cases`
    and split with :func:`split_lits_cases`; a ``.json`` file is read with ``monai.data.load_decathlon_datalist``
    (paths relative to the JSON's folder), e.g. one written by :func:`make_lits_datalist`.

    Args:
        source: a LiTS folder or a datalist JSON.
        data_list_key: ``"training"`` or ``"validation"`` (any key of the JSON for a JSON source). Default
            ``"training"``.
        val_fraction: validation fraction when ``source`` is a folder. Default 0.2.
        seed: split seed when ``source`` is a folder. Default 0.

    Returns:
        ``[{"image": path, "label": path}, ...]``.

    Raises:
        FileNotFoundError: if ``source`` does not exist or holds no case (the message says how to make demo data).
        ValueError: if ``data_list_key`` is not available.

    Examples:
        >>> import tempfile
        >>> root = tempfile.mkdtemp()
        >>> _ = write_lits_demo(root, n_cases=3, shape_xyz=(32, 32, 8))
        >>> len(load_lits_datalist(root, "validation", val_fraction=0.3))
        1
    """
    path = Path(source)
    if path.suffix.lower() == ".json":
        if not path.is_file():
            raise FileNotFoundError(
                f"LiTS datalist '{path}' does not exist; write one with `python scripts/prepare_lits.py "
                f"--dataset_dir DIR --out_json {path}` or make demo data with: {_DEMO_COMMAND}"
            )
        from monai.data import load_decathlon_datalist

        try:
            return load_decathlon_datalist(str(path), is_segmentation=True, data_list_key=data_list_key)
        except ValueError as exc:
            raise ValueError(f"LiTS datalist '{path}': {exc}") from exc
    split = split_lits_cases(find_lits_cases(path), val_fraction=val_fraction, seed=seed)
    if data_list_key not in split:
        raise ValueError(f"load_lits_datalist: data_list_key must be one of {sorted(split)}, got {data_list_key!r}")
    return [{k: str(Path(v).resolve()) for k, v in c.items()} for c in split[data_list_key]]
