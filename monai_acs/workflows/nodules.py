"""Per-nodule inference of the LIDC bundles on a whole CT, through a MONAI evaluator.

The LIDC bundles' ``inference.json`` takes a CT (NIfTI file or DICOM series folder) and nodule centres in world
millimetres (CSV). :func:`nodule_items` reads the centres into one dataset item per nodule (refusing centres outside
the CT), :class:`NoduleCropd` resamples around each centre the crop the network was trained on, a MONAI
``SupervisedEvaluator`` runs the network with its inferer and activation postprocessing, and the
:class:`NoduleReport` handler writes per-nodule malignancy probabilities (classification) or a nodule label map in
the CT's own voxel grid and affine (segmentation), with a CSV of per-nodule results.
:func:`predict_nodules` builds the same evaluator from Python.

Geometry. Training crops are indexed ``[x, y, z]`` along the patient's L, P, S axes (LPS+), centred on the nodule
(see :func:`monai_acs.data.lidc.crop_coordinates`). :func:`sample_nodule_crop` builds the same grid around a world
point and reads the CT through its RAS affine (MONAI's ``LoadImage`` gives RAS for NIfTI and DICOM alike).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from scipy import ndimage
from torch import nn

from ..data.nifti import save_nifti
from .ct_io import cached_ct
from .checkpoints import save_atomic

__all__ = [
    "NoduleReport",
    "nodule_items",
    "paste_nodule_probability",
    "predict_nodules",
    "read_nodule_centres",
    "sample_nodule_crop",
]

_TASKS = ("segmentation", "classification")


def _check_task(task: str) -> str:
    if task not in _TASKS:
        raise ValueError(f"task must be one of {_TASKS}, got {task!r}")
    return task


_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
_COORD_COLUMNS = (("coordX", "coordY", "coordZ"), ("x", "y", "z"))


def read_nodule_centres(csv_path: str | os.PathLike, coords_space: str = "LPS") -> list[dict[str, Any]]:
    """Read nodule centres (world mm) from a CSV and return them in LPS.

    Columns: ``coordX, coordY, coordZ`` (as LUNA16's ``annotations.csv``) or ``x, y, z``; optional ``id`` (else the
    row number); other columns are kept.

    Args:
        csv_path: the CSV file.
        coords_space: ``"LPS"`` (DICOM / ITK patient coordinates, LUNA16; default) or ``"RAS"`` (NIfTI world).

    Returns:
        One dict per row with ``id``, ``centre_lps`` (numpy (3,)) and the row's columns.

    Raises:
        FileNotFoundError: no such file.
        ValueError: missing coordinate columns, a non-numeric coordinate, no rows, or an unknown ``coords_space``.
    """
    if coords_space not in ("LPS", "RAS"):
        raise ValueError(f"coords_space must be 'LPS' or 'RAS', got {coords_space!r}")
    path = Path(csv_path)
    if not path.is_file():
        raise FileNotFoundError(f"nodule CSV {str(path)!r} does not exist (columns: id, coordX, coordY, coordZ in mm)")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or []
        columns = next((c for c in _COORD_COLUMNS if all(k in fields for k in c)), None)
        if columns is None:
            raise ValueError(f"{path}: expected columns coordX, coordY, coordZ (or x, y, z) in mm, found {fields}")
        rows = []
        for i, row in enumerate(reader):
            try:
                xyz = np.array([float(row[k]) for k in columns], dtype=np.float64)
            except (TypeError, ValueError) as err:
                raise ValueError(f"{path}: row {i + 1}: non-numeric coordinate in {[row[k] for k in columns]}") from err
            if not np.all(np.isfinite(xyz)):
                raise ValueError(f"{path}: row {i + 1}: non-finite coordinate {xyz.tolist()}")
            lps = xyz if coords_space == "LPS" else _LPS_TO_RAS @ xyz
            rows.append({**row, "id": row.get("id") or str(i), "centre_lps": lps})
    if not rows:
        raise ValueError(f"{path}: no nodule rows")
    return rows


def _crop_offsets(roi_size: int, spacing_mm: float) -> np.ndarray:
    """LPS offsets (mm) from the centre of a crop's voxel centres along one axis."""
    return (np.arange(roi_size) - (roi_size - 1) / 2.0) * spacing_mm


def sample_nodule_crop(
    hu: np.ndarray,
    affine: np.ndarray,
    centre_lps: Sequence[float],
    roi_size: int = 48,
    spacing_mm: float = 1.0,
    cval: float = -1024.0,
) -> np.ndarray:
    """The ``roi_size``^3 crop of ``spacing_mm`` voxels centred on ``centre_lps``, axes along L, P, S.

    As in training (``prepare_lidc.py`` crops at 1 mm, then area down-sampling to ``spacing_mm``): the CT is read
    trilinearly on a 1 mm grid of ``roi_size * spacing_mm`` voxels, then averaged over blocks of
    ``spacing_mm``^3 voxels.

    Args:
        hu: (X, Y, Z) CT in HU.
        affine: its RAS affine.
        centre_lps: the nodule centre, LPS mm.
        roi_size: crop voxels per side. Default 48.
        spacing_mm: crop voxel size; ``roi_size * spacing_mm`` must be a whole number. Default 1.0.
        cval: HU outside the CT. Default -1024.

    Returns:
        float32 ``(roi_size,) * 3`` HU crop.

    Raises:
        ValueError: ``roi_size * spacing_mm`` is not a whole number.
    """
    fine = roi_size * spacing_mm
    if abs(fine - round(fine)) > 1e-6:
        raise ValueError(f"roi_size * spacing_mm must be a whole number of mm, got {roi_size} * {spacing_mm}")
    n = round(fine)
    u = _crop_offsets(n, 1.0)
    grid = np.stack(np.meshgrid(u, u, u, indexing="ij"), 0).reshape(3, -1) + np.asarray(centre_lps, float)[:, None]
    inv = np.linalg.inv(affine)
    ijk = inv[:3, :3] @ (_LPS_TO_RAS @ grid) + inv[:3, 3:4]
    crop = ndimage.map_coordinates(hu, ijk, order=1, mode="constant", cval=cval).reshape(n, n, n)
    if n != roi_size:
        crop = F.interpolate(torch.from_numpy(crop)[None, None], size=(roi_size,) * 3, mode="area")[0, 0].numpy()
    return crop.astype(np.float32)


def paste_nodule_probability(
    prob: np.ndarray,
    centre_lps: Sequence[float],
    shape: Sequence[int],
    affine: np.ndarray,
    spacing_mm: float = 1.0,
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Resample a crop's probability map (the grid of :func:`sample_nodule_crop`) into the CT's voxel grid.

    Args:
        prob: ``(r, r, r)`` foreground probability of the crop.
        centre_lps: the crop centre, LPS mm.
        shape: the CT's (X, Y, Z) shape.
        affine: the CT's RAS affine.
        spacing_mm: the crop's voxel size. Default 1.0.

    Returns:
        ``(box, values)``: the CT index box the crop covers (slices, clipped to the CT) and the trilinear
        probability at those CT voxels (0 outside the crop).
    """
    r = prob.shape[0]
    half = r * spacing_mm / 2.0
    corners = np.array([[sx, sy, sz] for sx in (-half, half) for sy in (-half, half) for sz in (-half, half)]).T
    inv = np.linalg.inv(affine)
    ijk = inv[:3, :3] @ (_LPS_TO_RAS @ (corners + np.asarray(centre_lps, float)[:, None])) + inv[:3, 3:4]
    lo = np.clip(np.floor(ijk.min(1)).astype(int), 0, np.asarray(shape))
    hi = np.clip(np.ceil(ijk.max(1)).astype(int) + 1, 0, np.asarray(shape))
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    if any(b <= a for a, b in zip(lo, hi)):
        return box, np.zeros([max(0, b - a) for a, b in zip(lo, hi)], np.float32)
    axes = [np.arange(a, b) for a, b in zip(lo, hi)]
    idx = np.stack(np.meshgrid(*axes, indexing="ij"), 0).reshape(3, -1).astype(np.float64)
    lps = _LPS_TO_RAS @ (affine[:3, :3] @ idx + affine[:3, 3:4])
    q = (lps - np.asarray(centre_lps, float)[:, None]) / spacing_mm + (r - 1) / 2.0
    values = ndimage.map_coordinates(prob.astype(np.float32), q, order=1, mode="constant", cval=0.0)
    return box, values.reshape([b - a for a, b in zip(lo, hi)]).astype(np.float32)


def _voxel(affine: np.ndarray, centre_lps: np.ndarray) -> np.ndarray:
    inv = np.linalg.inv(affine)
    return inv[:3, :3] @ (_LPS_TO_RAS @ np.asarray(centre_lps, float)) + inv[:3, 3]


def _stem(image: str | os.PathLike) -> str:
    return Path(image).name.split(".")[0] if Path(image).is_file() else Path(image).name


def nodule_items(
    image: str | os.PathLike | None, nodules_csv: str | os.PathLike | None, coords_space: str = "LPS"
) -> list[dict[str, Any]]:
    """One dataset item per nodule of ``nodules_csv``: ``{"image": CT path, "id", "centre_lps" (3,), "voxel" (3,)}``.

    Args:
        image: the CT: a NIfTI (or other ITK) file or a folder with one DICOM series.
        nodules_csv: centres in world mm (see :func:`read_nodule_centres`).
        coords_space: ``"LPS"`` or ``"RAS"`` for the CSV. Default LPS.

    Raises:
        FileNotFoundError: the CT or the CSV does not exist.
        ValueError: no CT or CSV given, bad CSV, or a centre outside the CT (often: the wrong ``coords_space``).
    """
    if image is None or nodules_csv is None or not Path(image).exists() or not Path(nodules_csv).is_file():
        missing = [f"{what} {str(path)!r} does not exist" for what, path in (("CT", image), ("CSV", nodules_csv))
                   if path is not None and not Path(path).exists()]
        raise FileNotFoundError(
            "LIDC inference: give the CT (--image <NIfTI file or DICOM series folder>) and the nodule centres "
            "(--nodules_csv <CSV with coordX, coordY, coordZ in world mm>)"
            + (f": {'; '.join(missing)}" if missing else "")
        )
    rows = read_nodule_centres(nodules_csv, coords_space)
    hu, affine = cached_ct(str(image))
    items = []
    for i, row in enumerate(rows):
        ijk = _voxel(affine, row["centre_lps"])
        voxel = [round(float(v), 2) for v in ijk]
        if np.any(ijk < -0.5) or np.any(ijk > np.asarray(hu.shape) - 0.5):
            raise ValueError(
                f"{nodules_csv}: nodule {row['id']} (row {i + 1}) at LPS {row['centre_lps'].round(2).tolist()} mm "
                f"falls at voxel {voxel} outside the CT {image} of shape {hu.shape}; are the coordinates "
                f"{coords_space}? (set coords_space)"
            )
        items.append({"image": str(image), "id": str(row["id"]), "centre_lps": np.asarray(row["centre_lps"], float),
                      "voxel": np.asarray(voxel, float)})
    return items


class NoduleReport:
    """ignite handler of the LIDC inference evaluator: per-nodule results written when the pass completes.

    Classification (``pred``: the sigmoid probability, shape (1,)) writes ``<output_dir>/<ct>_malignancy.csv``.
    Segmentation (``pred``: softmax probabilities (2, r, r, r)) resamples every nodule's foreground probability into
    the CT grid (:func:`paste_nodule_probability`) and writes ``<output_dir>/<ct>_nodules.nii.gz`` - uint16 labels,
    nodule k (CSV order) = k + 1, background 0; where crops overlap, the most probable nodule wins - with the CT's
    affine, and ``<ct>_nodules.csv`` (voxels and volume per nodule). The table is printed; :attr:`result` keeps
    ``{"nodules": [...], "csv": path, "mask": path or None}``.

    Args:
        task: ``"segmentation"`` or ``"classification"``.
        output_dir: output folder (created).
        spacing_mm: crop voxel size (as trained). Default 1.0.
        threshold: foreground probability threshold of the mask. Default 0.5.
    """

    def __init__(self, task: str, output_dir: str | os.PathLike, spacing_mm: float = 1.0, threshold: float = 0.5):
        self.task, self.output_dir = _check_task(task), Path(output_dir)
        self.spacing_mm, self.threshold = float(spacing_mm), float(threshold)
        self._seen: list[tuple[Mapping[str, Any], torch.Tensor]] = []
        self.result: dict[str, Any] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda e: self._seen.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _collect(self, engine: Engine) -> None:
        for item, out in zip(engine.state.batch, engine.state.output):
            self._seen.append((item, torch.as_tensor(out["pred"]).detach().float().cpu()))

    def _write(self, engine: Engine) -> None:
        if not self._seen:
            raise RuntimeError("NoduleReport: the evaluator saw no nodule")
        image = self._seen[0][0]["ct"]
        rows = [{"id": item["id"], "centre_lps": np.asarray(item["centre_lps"], float),
                 "voxel": [round(float(v), 2) for v in item["voxel"]]} for item, _ in self._seen]
        out = self.output_dir
        out.mkdir(parents=True, exist_ok=True)
        stem = _stem(image)
        result: dict[str, Any] = {"nodules": [], "mask": None}
        if self.task == "classification":
            for row, (_, prob) in zip(rows, self._seen):
                result["nodules"].append({"id": row["id"], **_xyz(row), "voxel": row["voxel"],
                                          "malignancy_probability": round(float(prob.reshape(-1)[0]), 4)})
            result["csv"] = str(out / f"{stem}_malignancy.csv")
        else:
            hu, affine = cached_ct(str(image))
            best = np.zeros(hu.shape, np.float32)
            labels = np.zeros(hu.shape, np.uint16)
            for k, (row, (_, prob)) in enumerate(zip(rows, self._seen)):
                box, values = paste_nodule_probability(prob[1].numpy(), row["centre_lps"], hu.shape, affine,
                                                       self.spacing_mm)
                win = (values >= self.threshold) & (values > best[box])
                best[box] = np.where(win, values, best[box])
                labels[box] = np.where(win, k + 1, labels[box])
            voxel_mm3 = float(abs(np.linalg.det(affine[:3, :3])))
            for k, row in enumerate(rows):
                n = int((labels == k + 1).sum())
                result["nodules"].append({"id": row["id"], **_xyz(row), "voxel": row["voxel"], "label": k + 1,
                                          "voxels": n, "volume_mm3": round(n * voxel_mm3, 1)})
            mask_path = out / f"{stem}_nodules.nii.gz"
            save_nifti(labels, affine, mask_path)
            result["mask"] = str(mask_path)
            result["csv"] = str(out / f"{stem}_nodules.csv")
        text = _csv_text(result["nodules"], list(result["nodules"][0]))
        save_atomic(text, result["csv"])
        print(f"{len(rows)} nodule(s) of {image}:\n{text}" + (f"mask: {result['mask']}\n" if result["mask"] else "")
              + f"table: {result['csv']}", flush=True)
        self.result = result


def predict_nodules(
    network: nn.Module,
    image: str | os.PathLike,
    nodules_csv: str | os.PathLike,
    output_dir: str | os.PathLike,
    task: str = "segmentation",
    device: str | torch.device = "cpu",
    checkpoint: str | os.PathLike | None = None,
    roi_size: int = 48,
    spacing_mm: float = 1.0,
    hu_range: Sequence[float] = (-1024.0, 400.0),
    in_channels: int = 3,
    coords_space: str = "LPS",
    threshold: float = 0.5,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Per-nodule inference on a whole CT from Python: the evaluator of the bundles' ``inference.json``.

    Each centre gets the crop the network was trained on (:class:`NoduleCropd`), windowed to ``hu_range`` and scaled
    to [0, 1], the grey channel repeated ``in_channels`` times; a MONAI ``SupervisedEvaluator`` runs the network
    (sigmoid for classification, softmax for segmentation) and :class:`NoduleReport` writes the results.

    Args:
        network: the trained 3D network (seg: ``(N, C, r, r, r) -> (N, 2, r, r, r)``; cls: ``-> (N, 1)``).
        image: the CT: a NIfTI (or other ITK) file or a folder with one DICOM series.
        nodules_csv: centres in world mm (see :func:`read_nodule_centres`).
        output_dir: output folder (created).
        task: ``"segmentation"`` or ``"classification"``. Default segmentation.
        device: device. Default CPU.
        checkpoint: weights to load first (a state dict or ``{"network": ...}``). Default None.
        roi_size, spacing_mm: the crop (as trained). Default 48, 1.0.
        hu_range: intensity window. Default (-1024, 400).
        in_channels: network input channels. Default 3.
        coords_space: ``"LPS"`` or ``"RAS"`` for the CSV. Default LPS.
        threshold: foreground probability threshold of the mask. Default 0.5.
        batch_size: crops per forward pass. Default 8.

    Returns:
        ``{"nodules": [per-nodule dicts], "csv": path, "mask": path or None}``.

    Raises:
        FileNotFoundError: the CT or the CSV does not exist.
        ValueError: no CT or CSV given, a centre outside the CT (often: the wrong ``coords_space``), bad inputs.
    """
    from monai.data import DataLoader, Dataset
    from monai.engines import SupervisedEvaluator
    from monai.handlers import CheckpointLoader
    from monai.inferers import SimpleInferer
    from monai.transforms import Activationsd, Compose, EnsureTyped, RepeatChanneld, ScaleIntensityRanged

    from .transforms import NoduleCropd

    _check_task(task)
    items = nodule_items(image, nodules_csv, coords_space)
    lo, hi = float(hu_range[0]), float(hu_range[1])
    transform = Compose([
        NoduleCropd(roi_size, spacing_mm, cval=lo),
        ScaleIntensityRanged("image", lo, hi, 0.0, 1.0, clip=True),
        RepeatChanneld("image", in_channels),
        EnsureTyped("image", dtype=torch.float32),
    ])
    activation = Activationsd("pred", sigmoid=task == "classification", softmax=task == "segmentation")
    report = NoduleReport(task, output_dir, spacing_mm, threshold)
    handlers: list[Any] = [report]
    if checkpoint is not None:
        handlers.insert(0, CheckpointLoader(str(checkpoint), {"model": network}, map_location=torch.device(device)))
    evaluator = SupervisedEvaluator(
        device=torch.device(device), val_data_loader=DataLoader(Dataset(items, transform), batch_size=batch_size),
        network=network.to(device), inferer=SimpleInferer(), postprocessing=activation, val_handlers=handlers,
    )
    evaluator.run()
    return report.result


def _xyz(row: dict) -> dict:
    lps = row["centre_lps"]
    return {"x_lps": round(float(lps[0]), 3), "y_lps": round(float(lps[1]), 3), "z_lps": round(float(lps[2]), 3)}


def _csv_text(rows: list[dict], fields: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(fields)
    for row in rows:
        writer.writerow([" ".join(map(str, row[f])) if isinstance(row[f], list) else row[f] for f in fields])
    return buffer.getvalue()
