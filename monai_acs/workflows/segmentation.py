"""Segmentation steps shared by the bundles: 2D pretraining, feature mAUC, per-class evaluation and the report."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .. import metrics
from .runs import load_checkpoint, load_weights, save_atomic

__all__ = ["pretrain_2d", "feature_mauc_report", "evaluate_segmentation", "write_report", "format_table"]

logger = logging.getLogger(__name__)


def pretrain_2d(
    network: nn.Module,
    samples: Sequence[dict],
    out_path: str,
    epochs: int = 3,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    device: str | torch.device = "cpu",
    seed: int = 0,
    info: dict | None = None,
) -> str:
    """Train a 2D segmentation network with MONAI's ``SupervisedTrainer`` and save its state dict atomically.

    Skipped when ``out_path`` already exists (the pretrained 2D weights are shared by every run and operator).

    Args:
        network: the 2D network.
        samples: dicts with channel-first ``image`` / ``label`` arrays (1, H, W).
        out_path: where the 2D state dict goes.
        epochs: epochs. Default 3.
        batch_size: batch size. Default 32.
        learning_rate: Adam learning rate. Default 1e-3.
        device: training device. Default CPU.
        seed: shuffling seed. Default 0.
        info: extra entries saved in ``<out_path>.json``.

    Returns:
        ``out_path``.
    """
    from monai.data import DataLoader, Dataset
    from monai.engines import SupervisedTrainer
    from monai.handlers import StatsHandler
    from monai.losses import DiceCELoss
    from monai.transforms import EnsureTyped

    from .handlers import ProgressBar

    target = Path(out_path)
    if target.is_file():
        logger.info("2D pretrained weights found: %s (delete it to pretrain again)", target)
        return str(target)
    if not samples:
        raise ValueError("pretrain_2d: no 2D samples")
    logger.info("pretraining the 2D network on %d samples for %d epochs -> %s", len(samples), epochs, target)
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        Dataset(samples, transform=EnsureTyped(keys=["image", "label"], track_meta=False)),
        batch_size=batch_size,
        shuffle=True,
        generator=generator,
    )
    network = network.to(device)
    trainer = SupervisedTrainer(
        device=torch.device(device),
        max_epochs=epochs,
        train_data_loader=loader,
        network=network,
        optimizer=torch.optim.Adam(network.parameters(), learning_rate),
        loss_function=DiceCELoss(to_onehot_y=True, softmax=True),
        train_handlers=[StatsHandler(tag_name="pretrain_2d_loss", iteration_log=False), ProgressBar(desc="2D")],
    )
    trainer.run()
    save_atomic({k: v.cpu() for k, v in network.state_dict().items()}, target)
    save_atomic(json.dumps({"samples": len(samples), "epochs": epochs, **(info or {})}, indent=2) + "\n",
                f"{target}.json")
    return str(target)


@torch.no_grad()
def _predict(network: nn.Module, batch: dict, device: Any, inferer: Callable | None) -> torch.Tensor:
    image = batch["image"].to(device)
    return inferer(image, network) if inferer is not None else network(image)


def feature_mauc_report(
    network: nn.Module,
    loader: Any,
    device: str | torch.device = "cpu",
    num_classes: int | None = None,
    reduction: str = "max",
    out_file: str | None = None,
) -> float:
    """Feature mAUC of a network *before* 3D training: how well its final-layer output separates each foreground
    class from background (see :func:`monai_acs.metrics.feature_mauc`; ACS paper Table IV).

    The features are the network's final-layer output (the per-class logits, one channel per class). For every
    foreground class c and channel k, the AUC of channel k's value at class-c voxels against background voxels is
    taken as max(AUC, 1 - AUC); ``reduction="max"`` keeps the best channel; the score is the mean over classes.

    Args:
        network: the converted 3D network.
        loader: validation data loader (``image``, ``label``).
        device: device. Default CPU.
        num_classes: number of classes. Default: inferred.
        reduction: channel reduction, ``"max"`` or ``"mean"``. Default ``"max"``.
        out_file: optional JSON file for the result.

    Returns:
        The feature mAUC in [0.5, 1].
    """
    network = network.to(device).eval()
    features, labels = [], []
    for batch in loader:
        features.append(_predict(network, batch, device, None).float().cpu())
        labels.append(batch["label"].cpu())
    value = metrics.feature_mauc(
        torch.cat(features), torch.cat(labels), num_classes=num_classes, channel_reduction=reduction
    )
    logger.info("feature mAUC before 3D training: %.4f", value)
    print(f"feature mAUC (final-layer output, before 3D training): {value:.4f}", flush=True)
    if out_file is not None:
        save_atomic(json.dumps({"feature_mauc": value, "reduction": reduction}, indent=2) + "\n", out_file)
    return float(value)


def evaluate_segmentation(
    network: nn.Module,
    loader: Any,
    class_names: Sequence[str],
    device: str | torch.device = "cpu",
    checkpoint: str | None = None,
    inferer: Callable | None = None,
) -> dict[str, Any]:
    """Per-class Dice (global and per case) and IoU over a data set.

    Args:
        network: the 3D network.
        loader: data loader yielding ``image`` / ``label`` batches.
        class_names: names indexed by class id (background first).
        device: device. Default CPU.
        checkpoint: optional file with the weights (a state dict, or a dict holding one under ``network``).
        inferer: optional callable ``(image, network) -> logits`` (e.g. MONAI ``SlidingWindowInferer``).

    Returns:
        ``{"classes": {name: {"dice_global", "dice_per_case", "iou"}}, "mean": {...}, "cases": n}``; means are over
        the foreground classes.
    """
    if checkpoint is not None:
        load_weights(network, load_checkpoint(checkpoint), checkpoint)
    network = network.to(device).eval()
    preds, labels = [], []
    for batch in loader:
        logits = _predict(network, batch, device, inferer)
        preds += list(logits.argmax(1).cpu().numpy().astype(np.uint8))
        labels += list(batch["label"][:, 0].cpu().numpy().astype(np.uint8))
    n = len(class_names)
    dice_g = metrics.dice_global(preds, labels, num_classes=n)
    dice_c = metrics.dice_per_case(preds, labels, num_classes=n)
    iou = metrics.iou(preds, labels, num_classes=n)
    classes = {
        name: {"dice_global": float(dice_g[i]), "dice_per_case": float(dice_c[i]), "iou": float(iou[i])}
        for i, name in enumerate(class_names)
        if i > 0
    }
    fg = lambda key: float(np.nanmean([c[key] for c in classes.values()]))  # noqa: E731
    return {
        "classes": classes,
        "mean": {"dice_global": fg("dice_global"), "dice_per_case": fg("dice_per_case"), "miou": fg("iou")},
        "cases": len(preds),
    }


def format_table(results: dict[str, Any]) -> str:
    """Markdown table of :func:`evaluate_segmentation` results (percent)."""
    pct = lambda v: "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"  # noqa: E731
    lines = ["| class | Dice (global) | Dice (per case) | IoU |", "|---|---|---|---|"]
    for name, row in results["classes"].items():
        lines.append(f"| {name} | {pct(row['dice_global'])} | {pct(row['dice_per_case'])} | {pct(row['iou'])} |")
    mean = results["mean"]
    lines.append(f"| **mean (foreground)** | {pct(mean['dice_global'])} | {pct(mean['dice_per_case'])} | "
                 f"{pct(mean['miou'])} |")
    return "\n".join(lines)


def write_report(
    results: dict[str, Any],
    out_dir: str,
    title: str,
    extra: dict | None = None,
    table: Callable[[dict[str, Any]], str] | None = None,
) -> dict[str, Any]:
    """Print the result table and write ``results.json`` and ``results.md`` into ``out_dir``.

    ``table`` formats ``results`` as Markdown (default :func:`format_table`, the per-class segmentation table).
    """
    report = {**results, **(extra or {})}
    text = f"## {title}\n\n{(table or format_table)(results)}\n"
    if extra:
        text += "\n" + "\n".join(f"- {k}: {v}" for k, v in extra.items()) + "\n"
    save_atomic(json.dumps(report, indent=2, default=str) + "\n", Path(out_dir) / "results.json")
    save_atomic(text, Path(out_dir) / "results.md")
    print("\n" + text + f"\n(results written to {out_dir}/results.json and results.md)", flush=True)
    return report
