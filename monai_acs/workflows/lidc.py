"""Steps of the LIDC-IDRI bundles (ACS paper Sec. IV-B): data lists, reports, and per-nodule inference on a CT.

``bundles/lidc_seg_acs`` (nodule segmentation, Dice global) and ``bundles/lidc_cls_acs`` (malignancy
classification, AUC) read the crops that ``scripts/prepare_lidc.py`` writes (``datalist.json`` beside ``images/``
and ``masks/``; see :mod:`monai_acs.data.lidc`). Their configs call the functions here:

- :func:`lidc_datalist` turns ``datalist.json`` into MONAI items (absolute paths; an optional seeded fraction of the
  training set for the data-scale experiment, Fig. 4), failing fast with the expected layout and the command that
  makes it when the folder is missing or empty.
- :func:`finish_lidc_run` / :func:`evaluate_lidc` evaluate a checkpoint on the validation split and print and save
  the report (``results.json`` / ``results.md``); :func:`evaluate_classification` computes the AUC.
- :func:`predict_nodules` runs a trained network on a whole CT (NIfTI file or DICOM series folder) at nodule centres
  given in world millimetres (CSV): it resamples the 1 mm crop each nodule had in training around each centre,
  and writes per-nodule malignancy probabilities (classification) or a nodule label map in the CT's own voxel
  grid and affine (segmentation), with a CSV of per-nodule results.

Geometry. Training crops are indexed ``[x, y, z]`` along the patient's L, P, S axes (LPS+), centred on the nodule
(see :func:`monai_acs.data.lidc.crop_coordinates`). :func:`sample_nodule_crop` builds the same grid around a world
point and reads the CT through its RAS affine (MONAI's ``LoadImage`` gives RAS for NIfTI and DICOM alike).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from .. import metrics
from .checks import check_volume
from .runs import load_checkpoint, load_weights, publish_model, require_dataset_dir, save_atomic
from .segmentation import evaluate_segmentation, write_report

__all__ = [
    "LIDC_LAYOUT",
    "LIDC_PREPARE_COMMAND",
    "SEG_CLASS_NAMES",
    "axial_slice_samples",
    "binary_target",
    "describe_lidc_data",
    "evaluate_classification",
    "evaluate_lidc",
    "finish_lidc_run",
    "format_classification_table",
    "lidc_datalist",
    "load_ct",
    "paste_nodule_probability",
    "predict_nodules",
    "pretrain_lidc_2d",
    "read_nodule_centres",
    "sample_nodule_crop",
    "write_classification_report",
]

logger = logging.getLogger(__name__)

#: What the LIDC bundles read from ``dataset_dir``.
LIDC_LAYOUT = (
    "the output folder of scripts/prepare_lidc.py: datalist.json (MONAI datalist with 'training'/'validation' "
    "segmentation items and 'training_cls'/'validation_cls' classification items), images/<nodule>.nii.gz "
    "(80^3 voxels of 1 mm, HU) and masks/<nodule>_r<reader>.nii.gz"
)
#: The command that writes a small data set without the LIDC images (real masks, synthetic background).
LIDC_PREPARE_COMMAND = "python scripts/prepare_lidc.py --annotations_only --limit 64 --out <dataset_dir>"

#: Class names of the segmentation bundle.
SEG_CLASS_NAMES: tuple[str, ...] = ("background", "nodule")

_TASKS = ("segmentation", "classification")


def _check_task(task: str) -> str:
    if task not in _TASKS:
        raise ValueError(f"task must be one of {_TASKS}, got {task!r}")
    return task


def _read_datalist(dataset_dir: str | os.PathLike) -> tuple[Path, dict]:
    folder = Path(require_dataset_dir(dataset_dir, LIDC_LAYOUT, LIDC_PREPARE_COMMAND))
    path = folder / "datalist.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"dataset_dir {str(folder)!r} has no datalist.json. Expected: {LIDC_LAYOUT}. "
            f"To make a small demo data set: {LIDC_PREPARE_COMMAND}"
        )
    try:
        return path, json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"cannot parse {path}: {err}") from err


def describe_lidc_data(dataset_dir: str | os.PathLike) -> str:
    """One line saying what the data are: real CT crops, or real masks in a SYNTHETIC background.

    Raises:
        FileNotFoundError: as :func:`lidc_datalist`.
    """
    path, datalist = _read_datalist(dataset_dir)
    n = {k: len(datalist.get(k, [])) for k in ("training", "validation", "training_cls", "validation_cls")}
    counts = (f"segmentation {n['training']}/{n['validation']}, classification {n['training_cls']}/"
              f"{n['validation_cls']} nodules (training/validation)")
    if datalist.get("synthetic_background", False):
        return (f"annotation-derived LIDC masks and labels in a SYNTHETIC lung background "
                f"(prepare_lidc.py --annotations_only; not LIDC-IDRI images), {counts}, {path}")
    return f"LIDC-IDRI CT crops, {counts}, {path}"


def lidc_datalist(
    dataset_dir: str | os.PathLike,
    split: str,
    task: str = "segmentation",
    fraction: float = 1.0,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """The MONAI items of one split of ``<dataset_dir>/datalist.json``.

    Segmentation items are ``{"image", "label", "name"}`` (``label``: the mask of the first reader with a
    non-empty mask, as the paper uses "one of the up to 4 annotations"); classification items are
    ``{"image", "label", "name"}`` with ``label`` 0 (benign) or 1 (malignant). Paths are absolute.

    Args:
        dataset_dir: the folder ``scripts/prepare_lidc.py`` wrote.
        split: ``"training"`` or ``"validation"``.
        task: ``"segmentation"`` or ``"classification"``. Default segmentation.
        fraction: keep this fraction of the items (the data-scale experiment, ACS paper Fig. 4): a seeded random
            subset, stratified by class for classification, at least one item (per class). Default 1.0.
        seed: seed of the subset. Default 0.

    Returns:
        The items.

    Raises:
        FileNotFoundError: ``dataset_dir`` is missing or empty, or has no ``datalist.json`` (the message gives
            the expected layout and the command that writes it).
        ValueError: unknown split or task, a fraction outside (0, 1], an empty split, or a bad label.

    Examples:
        >>> lidc_datalist("/no/such/folder", "training")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        FileNotFoundError: dataset_dir '/no/such/folder' does not exist. ...
    """
    if split not in ("training", "validation"):
        raise ValueError(f"split must be 'training' or 'validation', got {split!r}")
    _check_task(task)
    if not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    path, datalist = _read_datalist(dataset_dir)
    key = split if task == "segmentation" else f"{split}_cls"
    raw = datalist.get(key)
    if not raw:
        raise ValueError(
            f"{path} has no {key!r} items. Expected: {LIDC_LAYOUT}. Write more nodules (e.g. a larger --limit) with: "
            f"{LIDC_PREPARE_COMMAND}"
        )
    items = []
    for i, it in enumerate(raw):
        label = it.get("label")
        if task == "classification":
            if label not in (0, 1):
                raise ValueError(f"{path}: {key}[{i}] ({it.get('name')}) has label {label!r}; expected 0 or 1")
        elif not isinstance(label, str):
            raise ValueError(f"{path}: {key}[{i}] ({it.get('name')}) has no segmentation mask (label {label!r})")
        else:
            label = str(path.parent / label)
        items.append({"image": str(path.parent / it["image"]), "label": label, "name": str(it.get("name", i))})
    if float(fraction) < 1.0:
        items = _subset(items, float(fraction), seed, stratify=task == "classification")
    return items


def _subset(items: list[dict], fraction: float, seed: int, stratify: bool) -> list[dict]:
    rng = np.random.default_rng(seed)
    groups: dict[Any, list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault(it["label"] if stratify else None, []).append(i)
    kept = []
    for idx in groups.values():
        n = max(1, round(fraction * len(idx)))
        kept += list(rng.permutation(idx)[:n])
    return [items[i] for i in sorted(kept)]


def binary_target(label: Any) -> torch.Tensor:
    """A class label (0/1) as the float tensor ``(1,)`` that ``BCEWithLogitsLoss`` compares with one logit.

    Examples:
        >>> binary_target(1)
        tensor([1.])
    """
    return torch.as_tensor(label, dtype=torch.float32).reshape(1)


# ----------------------------------------------------------------------------------------------------------------
# Evaluation and reports
# ----------------------------------------------------------------------------------------------------------------


def _load_checkpoint(network: nn.Module, checkpoint: str | os.PathLike) -> None:
    load_weights(network, load_checkpoint(checkpoint, what="model"), checkpoint)


@torch.no_grad()
def evaluate_classification(
    network: nn.Module, loader: Any, device: str | torch.device = "cpu", checkpoint: str | None = None
) -> dict[str, Any]:
    """AUC (ACS paper Table V) and accuracy at probability 0.5 of a one-logit malignancy classifier.

    Args:
        network: the 3D classifier, ``(N, C, D, H, W) -> (N, 1)`` logits.
        loader: yields ``image`` and ``label`` (0/1, any shape with one element per case).
        device: device. Default CPU.
        checkpoint: optional weights file (a state dict or a dict holding one under ``network``).

    Returns:
        ``{"auc", "accuracy", "cases", "malignant", "benign"}``; ``auc`` is ``nan`` if one class is absent.
    """
    if checkpoint is not None:
        _load_checkpoint(network, checkpoint)
    network = network.to(device).eval()
    probs, labels = [], []
    for batch in loader:
        logits = network(batch["image"].to(device)).float().cpu()
        probs.append(torch.sigmoid(logits).reshape(-1))
        labels.append(torch.as_tensor(batch["label"]).float().reshape(-1))
    p, y = torch.cat(probs).numpy(), torch.cat(labels).numpy()
    positives = int(y.sum())
    value = metrics.auc(p, y) if 0 < positives < len(y) else float("nan")
    if math.isnan(value):
        logger.warning("AUC undefined: the evaluation set holds one class only (%d cases)", len(y))
    return {
        "auc": float(value),
        "accuracy": float(((p >= 0.5) == (y >= 0.5)).mean()),
        "cases": len(y),
        "malignant": positives,
        "benign": int(len(y) - positives),
    }


def format_classification_table(results: dict[str, Any]) -> str:
    """Markdown table of :func:`evaluate_classification` results (percent)."""
    def pct(v: float | None) -> str:
        return "n/a" if v is None or math.isnan(v) else f"{100 * v:.1f}"

    row = (f"| {results['cases']} ({results['benign']} / {results['malignant']}) | {pct(results['auc'])} | "
           f"{pct(results['accuracy'])} |")
    return f"| cases (benign / malignant) | AUC | accuracy (p >= 0.5) |\n|---|---|---|\n{row}"


def write_classification_report(
    results: dict[str, Any], out_dir: str, title: str, extra: dict | None = None
) -> dict[str, Any]:
    """Print the AUC table and write ``results.json`` and ``results.md`` into ``out_dir``."""
    return write_report(results, out_dir, title, extra, table=format_classification_table)


def evaluate_lidc(
    task: str,
    network: nn.Module,
    loader: Any,
    device: Any,
    output_dir: str,
    title: str,
    extra: dict | None = None,
    checkpoint: str | None = None,
) -> dict[str, Any]:
    """Evaluate on ``loader`` (Dice global for segmentation, AUC for classification), print and save the report.

    Args:
        task: ``"segmentation"`` or ``"classification"``.
        network: the 3D network.
        loader: the validation loader.
        device: device.
        output_dir: where ``results.json`` / ``results.md`` go.
        title: report title.
        extra: entries added to the report (settings, data description, ...).
        checkpoint: optional weights file to load first.

    Returns:
        The report.
    """
    if _check_task(task) == "segmentation":
        results = evaluate_segmentation(network, loader, SEG_CLASS_NAMES, device, checkpoint=checkpoint)
        return write_report(results, output_dir, title, extra)
    return write_classification_report(evaluate_classification(network, loader, device, checkpoint), output_dir,
                                       title, extra)


def finish_lidc_run(
    task: str,
    network: nn.Module,
    loader: Any,
    device: Any,
    run_dir: str,
    models_dir: str,
    settings: dict[str, Any],
    data: str,
    publish: bool = True,
) -> dict[str, Any]:
    """Evaluate the run's best checkpoint on the validation split, print and save the report, and (unless
    ``publish=False``, as ``scripts/compare.py`` runs do) publish the weights to ``<models_dir>/model.pt``.

    Raises:
        FileNotFoundError: the run wrote no ``model_best.pt`` (validation never ran, or its metric was undefined).
    """
    best = Path(run_dir) / "model_best.pt"
    if not best.is_file():
        raise FileNotFoundError(
            f"{best} was not written: did validation run (val_interval <= epochs), and does the validation split "
            f"give a defined metric (both classes for the AUC, a non-empty mask for Dice)?"
        )
    extra = {**settings, "run_dir": run_dir, "best_checkpoint": str(best), "data": data}
    metric = "Dice global" if task == "segmentation" else "AUC"
    title = (f"LIDC {task} validation, best checkpoint by {metric} ({settings.get('backbone', 'resnet18')}, "
             f"{settings.get('operator')}, {'p.' if settings.get('pretrained') else 'r.'})")
    report = evaluate_lidc(task, network, loader, device, run_dir, title, extra, checkpoint=str(best))
    if publish:
        published = publish_model(best, models_dir, info=extra)
        print(f"best model published to {published}; logs and checkpoints in {run_dir}", flush=True)
    else:
        print(f"logs and checkpoints in {run_dir} (not published: publish=false)", flush=True)
    return report


def axial_slice_samples(
    items: Sequence[dict[str, Any]], load: Any, roi_size: int, in_channels: int = 3
) -> list[dict[str, np.ndarray]]:
    """2D training samples from LIDC crops: every axial slice (last array axis, S) of each centred ``roi_size``^3
    crop, image repeated to ``in_channels`` and its nodule mask.

    Args:
        items: segmentation items (``image``, ``label`` paths), e.g. ``lidc_datalist(d, "training")``.
        load: the bundle's loading transform (``load_and_window``: HU window to [0, 1], resampling), giving
            channel-first ``image`` / ``label`` arrays (1, S, S, S).
        roi_size: side of the centred crop, as the bundle's validation crop.
        in_channels: image channels of the samples. Default 3.

    Returns:
        ``{"image": (in_channels, roi, roi), "label": (1, roi, roi)}`` float32 arrays.

    Raises:
        ValueError: a loaded crop smaller than ``roi_size``.
    """
    samples = []
    for item in items:
        data = load(dict(item))
        image = np.asarray(data["image"], dtype=np.float32)
        label = np.asarray(data["label"], dtype=np.float32)
        size = image.shape[1:]
        if min(size) < roi_size:
            raise ValueError(f"{item.get('image')}: loaded crop {tuple(size)} is smaller than roi_size={roi_size}")
        lo = [(s - roi_size) // 2 for s in size]  # MONAI's CenterSpatialCrop
        box = tuple(slice(a, a + roi_size) for a in lo)
        image, label = image[(slice(None), *box)], label[(slice(None), *box)]
        for k in range(roi_size):
            samples.append({
                "image": np.repeat(image[:, :, :, k], in_channels, axis=0),
                "label": np.ascontiguousarray(label[:, :, :, k]),
            })
    return samples


def pretrain_lidc_2d(
    items: Sequence[dict[str, Any]],
    load: Any,
    out_dir: str | os.PathLike,
    backbone: str = "resnet18",
    width: int = 64,
    roi_size: int = 48,
    in_channels: int = 3,
    epochs: int = 5,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, str]:
    """2D pretraining on axial slices of the LIDC training crops: a stand-in for ImageNet where no ImageNet file
    exists (as on a machine without internet). Not the paper's "p.": report runs that use it as such.

    Trains the 2D segmentation network of the bundles (:func:`monai_acs.networks.lidc_net_2d`) to segment the nodule
    on every axial slice of the training crops (Dice + cross-entropy, Adam), then writes two whole-network 2D
    state dicts for the bundles' ``weights_2d`` key: ``seg_2d.pt`` (that network) and ``cls_2d.pt`` (the 2D
    classifier with the pretrained encoder and a freshly initialised, seeded head, as ImageNet weights give the
    encoder only). Pass only training items: validation crops must stay unseen.

    Args:
        items: training segmentation items.
        load: the bundle's loading transform (see :func:`axial_slice_samples`).
        out_dir: output folder (created); existing files are reused, not overwritten.
        backbone, width, in_channels: the bundles' network keys.
        roi_size: crop side (the bundles' ``roi_size``).
        epochs, batch_size, learning_rate, seed, device: 2D training settings.

    Returns:
        ``{"segmentation": path, "classification": path}``.
    """
    from ..networks import lidc_net_2d
    from .segmentation import pretrain_2d

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seg_path, cls_path = out / "seg_2d.pt", out / "cls_2d.pt"
    info = {"what": "2D pretraining on axial slices of the LIDC training crops (a stand-in for ImageNet, not "
                    "the paper's ImageNet 'p.')", "backbone": backbone, "width": int(width),
            "roi_size": int(roi_size), "training_crops": len(items), "seed": int(seed)}
    if not seg_path.is_file():
        samples = axial_slice_samples(items, load, roi_size, in_channels)
        torch.manual_seed(seed)
        net = lidc_net_2d("segmentation", backbone, width, in_channels)
        pretrain_2d(net, samples, str(seg_path), epochs, batch_size, learning_rate, device, seed, info)
    if not cls_path.is_file():
        torch.manual_seed(seed)
        cls = lidc_net_2d("classification", backbone, width, in_channels)
        state = torch.load(seg_path, map_location="cpu", weights_only=True)
        encoder = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
        cls.backbone.load_state_dict(encoder)
        save_atomic({k: v.cpu() for k, v in cls.state_dict().items()}, cls_path)
        save_atomic(json.dumps({**info, "encoder_from": str(seg_path), "head": "random (seeded)"}, indent=2) + "\n",
                    f"{cls_path}.json")
    return {"segmentation": str(seg_path), "classification": str(cls_path)}


# ----------------------------------------------------------------------------------------------------------------
# Inference on a whole CT
# ----------------------------------------------------------------------------------------------------------------

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


def load_ct(image: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a CT volume (NIfTI/any ITK file, or a folder holding one DICOM series) in HU.

    Returns:
        ``(hu, affine)``: float32 ``(X, Y, Z)`` array and its 4x4 RAS affine (MONAI ``LoadImage``).

    Raises:
        FileNotFoundError: no such file or folder.
        ValueError: unreadable, or not a 3D volume.
    """
    from monai.transforms import LoadImage

    path = Path(image)
    if not path.exists():
        raise FileNotFoundError(f"CT {str(path)!r} does not exist (a NIfTI file or a folder with one DICOM series)")
    try:
        img = LoadImage(image_only=True, reader="ITKReader" if path.is_dir() else None)(str(path))
    except Exception as err:
        raise ValueError(f"cannot read CT {str(path)!r}: {type(err).__name__}: {err}") from err
    hu = np.asarray(img, dtype=np.float32)
    if hu.ndim == 4 and 1 in (hu.shape[0], hu.shape[-1]):
        hu = hu.squeeze(0) if hu.shape[0] == 1 else hu.squeeze(-1)
    if hu.ndim != 3:
        raise ValueError(f"CT {str(path)!r} has shape {hu.shape}; expected a 3D volume")
    affine = np.asarray(img.affine, dtype=np.float64)
    check_volume(hu, f"CT {str(path)!r}", affine=affine)  # NaN, singular affine (else a bare LinAlgError), ...
    return hu, affine


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


@torch.no_grad()
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
    """Per-nodule inference on a whole CT at given nodule centres.

    Each centre gets the crop the network was trained on (:func:`sample_nodule_crop`), windowed to ``hu_range``
    and scaled to [0, 1], the grey channel repeated ``in_channels`` times. Classification writes
    ``<output_dir>/<ct>_malignancy.csv`` (one probability per nodule). Segmentation resamples every nodule's
    foreground probability into the CT grid (:func:`paste_nodule_probability`) and writes
    ``<output_dir>/<ct>_nodules.nii.gz`` - uint16 labels, nodule k (CSV order) = k + 1, background 0; where
    crops overlap, the most probable nodule wins - with the CT's affine, and ``<ct>_nodules.csv`` (voxels and
    volume per nodule).

    Args:
        network: the trained 3D network (seg: ``(N, C, r, r, r) -> (N, 2, r, r, r)``; cls: ``-> (N, 1)``).
        image: the CT: a NIfTI (or other ITK) file or a folder with one DICOM series.
        nodules_csv: centres in world mm (see :func:`read_nodule_centres`).
        output_dir: output folder (created).
        task: ``"segmentation"`` or ``"classification"``. Default segmentation.
        device: device. Default CPU.
        checkpoint: weights to load first (a state dict or ``{"network": ...}``). Default None.
        roi_size: crop voxels per side (as trained). Default 48.
        spacing_mm: crop voxel size (as trained). Default 1.0.
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
    _check_task(task)
    if image is None or nodules_csv is None:
        raise ValueError("predict_nodules: give the CT (--image <NIfTI file or DICOM series folder>) and the nodule "
                         "centres (--nodules_csv <CSV with coordX, coordY, coordZ in world mm>)")
    hu, affine = load_ct(image)
    rows = read_nodule_centres(nodules_csv, coords_space)
    if checkpoint is not None:
        _load_checkpoint(network, checkpoint)
    network = network.to(device).eval()
    inv = np.linalg.inv(affine)
    for i, row in enumerate(rows):
        ijk = inv[:3, :3] @ (_LPS_TO_RAS @ row["centre_lps"]) + inv[:3, 3]
        row["voxel"] = [round(float(v), 2) for v in ijk]
        if np.any(ijk < -0.5) or np.any(ijk > np.asarray(hu.shape) - 0.5):
            raise ValueError(
                f"{nodules_csv}: nodule {row['id']} (row {i + 1}) at LPS {row['centre_lps'].round(2).tolist()} mm "
                f"falls at voxel {row['voxel']} outside the CT {image} of shape {hu.shape}; are the coordinates "
                f"{coords_space}? (set coords_space)"
            )
    lo, hi = float(hu_range[0]), float(hu_range[1])
    crops = np.stack([sample_nodule_crop(hu, affine, r["centre_lps"], roi_size, spacing_mm, cval=lo) for r in rows])
    x = torch.from_numpy((np.clip(crops, lo, hi) - lo) / (hi - lo))[:, None].repeat(1, in_channels, 1, 1, 1)
    outputs = torch.cat([network(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(image).name.split(".")[0] if Path(image).is_file() else Path(image).name
    result: dict[str, Any] = {"nodules": [], "mask": None}
    if task == "classification":
        probs = torch.sigmoid(outputs.reshape(len(rows), -1)[:, 0]).numpy()
        for row, p in zip(rows, probs):
            result["nodules"].append({"id": row["id"], **_xyz(row), "voxel": row["voxel"],
                                      "malignancy_probability": round(float(p), 4)})
        result["csv"] = str(out / f"{stem}_malignancy.csv")
    else:
        import nibabel as nib

        fg = torch.softmax(outputs, dim=1)[:, 1].numpy()
        best = np.zeros(hu.shape, np.float32)
        labels = np.zeros(hu.shape, np.uint16)
        for k, (row, prob) in enumerate(zip(rows, fg)):
            box, values = paste_nodule_probability(prob, row["centre_lps"], hu.shape, affine, spacing_mm)
            win = (values >= threshold) & (values > best[box])
            best[box] = np.where(win, values, best[box])
            labels[box] = np.where(win, k + 1, labels[box])
        voxel_mm3 = float(abs(np.linalg.det(affine[:3, :3])))
        for k, row in enumerate(rows):
            n = int((labels == k + 1).sum())
            result["nodules"].append({"id": row["id"], **_xyz(row), "voxel": row["voxel"], "label": k + 1,
                                      "voxels": n, "volume_mm3": round(n * voxel_mm3, 1)})
        mask_path = out / f"{stem}_nodules.nii.gz"
        nib.save(nib.Nifti1Image(labels, affine), str(mask_path))
        result["mask"] = str(mask_path)
        result["csv"] = str(out / f"{stem}_nodules.csv")
    fields = list(result["nodules"][0])
    text = _csv_text(result["nodules"], fields)
    save_atomic(text, result["csv"])
    print(f"{len(rows)} nodule(s) of {image}:\n{text}" + (f"mask: {result['mask']}\n" if result["mask"] else "")
          + f"table: {result['csv']}", flush=True)
    return result


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
