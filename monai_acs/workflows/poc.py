"""Steps of the proof-of-concept bundle (ACS paper Sec. IV-A): 2D pretraining on demand."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import torch
from monai.utils import str2bool

from ..data.synthetic import read_2d_samples
from ..networks.poc import poc_unet_2d
from .segmentation import pretrain_2d

__all__ = ["pretrained_2d_weights"]

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
    if not str2bool(pretrained):
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
