"""Steps of the proof-of-concept bundle (ACS paper Sec. IV-A): 2D pretraining on demand and the final report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..data.synthetic import read_2d_samples
from ..networks.poc import poc_unet_2d
from .runs import as_bool, publish_model
from .segmentation import evaluate_segmentation, pretrain_2d, write_report

__all__ = ["pretrained_2d_weights", "finish_run"]

logger = logging.getLogger(__name__)


def pretrained_2d_weights(
    pretrained: bool,
    datalist: str,
    models_dir: str,
    channels: Sequence[int],
    strides: Sequence[int],
    num_res_units: int,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    device: Any,
    seed: int = 0,
) -> str | None:
    """Path of the pretrained 2D UNet weights ("p."), pretraining them first if absent; None for "r.".

    The file name encodes the architecture, data size, epochs and seed, so every run and operator with the same
    settings shares one 2D pretraining.
    """
    if not as_bool(pretrained):
        return None
    samples = read_2d_samples(Path(datalist).parent / "pretrain_2d_training.npz")
    name = (
        f"pretrained_2d_unet_c{'-'.join(map(str, channels))}_s{'-'.join(map(str, strides))}_r{num_res_units}"
        f"_n{len(samples)}_e{epochs}_seed{seed}.pt"
    )
    torch.manual_seed(seed)
    network = poc_unet_2d(channels=channels, strides=strides, num_res_units=num_res_units)
    return pretrain_2d(
        network, samples, str(Path(models_dir) / name), epochs, batch_size, learning_rate, device, seed,
        info={"channels": list(channels), "strides": list(strides), "num_res_units": num_res_units,
              "data": "synthetic 2D shapes (monai_acs.data.synthetic), generated"},
    )


def finish_run(
    network: nn.Module,
    loader: Any,
    class_names: Sequence[str],
    device: Any,
    run_dir: str,
    models_dir: str,
    settings: dict[str, Any],
    feature_mauc: float | None = None,
    publish: bool = True,
) -> dict[str, Any]:
    """Evaluate the run's best checkpoint on the validation set, print and save the table, and (unless
    ``publish=False``, as ``scripts/compare.py`` runs do) publish the weights to ``<models_dir>/model.pt``."""
    best = Path(run_dir) / "model_best.pt"
    if not best.is_file():
        raise FileNotFoundError(f"{best} was not written: did validation run? (val_interval <= epochs)")
    results = evaluate_segmentation(network, loader, class_names, device, checkpoint=str(best))
    extra = {**settings, "run_dir": run_dir, "best_checkpoint": str(best), "data": "synthetic (generated)"}
    if feature_mauc is not None:
        extra["feature_mauc_before_3d_training"] = round(feature_mauc, 4)
    title = f"Validation, best checkpoint ({settings.get('operator')}, {'p.' if settings.get('pretrained') else 'r.'})"
    report = write_report(results, run_dir, title, extra)
    if as_bool(publish):
        published = publish_model(best, models_dir, info=extra)  # a plain state dict, as model zoo bundles ship
        print(f"best model published to {published}; logs and checkpoints in {run_dir}", flush=True)
    else:
        print(f"logs and checkpoints in {run_dir} (not published: publish=false)", flush=True)
    return report
