"""How the bundles' MONAI engines hand a batch to the network: optionally in ``channels_last_3d``.

On CPU, oneDNN runs 3D convolutions (ACS's views, 2.5D and 3D kernels alike) much faster on channels-last
tensors: a converted network fed a ``channels_last_3d`` batch keeps that layout layer after layer (see
docs/benchmarks.md for measured train steps). The bundles' ``channels_last`` key selects
:func:`channels_last_prepare_batch` for their ``SupervisedTrainer`` and ``SupervisedEvaluator``; the values
computed are the same, up to float rounding (a different summation order).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.engines import default_prepare_batch

__all__ = ["channels_last_prepare_batch", "select_prepare_batch"]


def channels_last_prepare_batch(
    batchdata: Any, device: str | torch.device | None = None, non_blocking: bool = False, **kwargs: Any
) -> Any:
    """MONAI's ``default_prepare_batch``, then a 5-D image (N, C, D, H, W) in ``torch.channels_last_3d``.

    Labels and other inputs are left as they are.

    Examples:
        >>> image, label = channels_last_prepare_batch({"image": torch.zeros(2, 3, 4, 5, 6), "label": torch.ones(2)})
        >>> image.is_contiguous(memory_format=torch.channels_last_3d), label.shape
        (True, torch.Size([2]))
    """
    prepared = default_prepare_batch(batchdata, device, non_blocking, **kwargs)
    image, rest = (prepared[0], prepared[1:]) if isinstance(prepared, tuple) else (prepared, None)
    if isinstance(image, torch.Tensor) and image.dim() == 5:
        image = image.contiguous(memory_format=torch.channels_last_3d)
    return image if rest is None else (image, *rest)


def select_prepare_batch(channels_last: Any) -> Callable:
    """:func:`channels_last_prepare_batch` if ``channels_last`` (bool, or a bundle CLI string such as ``"true"``), else
    MONAI's ``default_prepare_batch``."""
    from .runs import as_bool

    return channels_last_prepare_batch if as_bool(channels_last) else default_prepare_batch
