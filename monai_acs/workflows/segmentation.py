"""Segmentation steps shared by the bundles: 2D pretraining, feature mAUC, per-class evaluation and the report."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .. import metrics
from .checkpoints import save_atomic

__all__ = ["pretrain_2d", "feature_mauc_report"]

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
