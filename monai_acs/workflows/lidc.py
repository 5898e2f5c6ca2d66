"""Steps of the LIDC-IDRI bundles (ACS paper Sec. IV-B): data lists, reports and 2D pretraining.

``bundles/lidc_seg_acs`` (nodule segmentation, Dice global) and ``bundles/lidc_cls_acs`` (malignancy
classification, AUC) read the crops that ``scripts/prepare_lidc.py`` writes (``datalist.json`` beside ``images/``
and ``masks/``; see :mod:`monai_acs.data.lidc`). Their configs call the functions here:

- :func:`lidc_datalist` turns ``datalist.json`` into MONAI items (absolute paths; an optional seeded fraction of the
  training set for the data-scale experiment, Fig. 4), failing fast with the expected layout and the command that
  makes it when the folder is missing or empty.
- the figures (Dice global, AUC) are metrics of the bundles' evaluators (:mod:`monai_acs.workflows.metrics`) and
  the reports come from :class:`monai_acs.workflows.report.MetricsReport`.

Per-nodule inference on a whole CT is :mod:`monai_acs.workflows.nodules`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoints import load_checkpoint, save_atomic
from .checks import require_dataset_dir

__all__ = [
    "LIDC_LAYOUT",
    "LIDC_PREPARE_COMMAND",
    "SEG_CLASS_NAMES",
    "axial_slice_samples",
    "binary_target",
    "describe_lidc_data",
    "lidc_datalist",
    "pretrain_lidc_2d",
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
        state = load_checkpoint(seg_path, what="2D pretrained segmenter")
        encoder = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
        cls.backbone.load_state_dict(encoder)
        save_atomic({k: v.cpu() for k, v in cls.state_dict().items()}, cls_path)
        save_atomic(json.dumps({**info, "encoder_from": str(seg_path), "head": "random (seeded)"}, indent=2) + "\n",
                    f"{cls_path}.json")
    return {"segmentation": str(seg_path), "classification": str(cls_path)}
