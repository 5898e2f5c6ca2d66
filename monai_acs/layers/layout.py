"""Modules that keep the layout rule's channels-last tensors channels-last (CPU float32).

The fusion layers compute and answer in ``channels_last_3d`` on CPU float32 (``_prefers_channels_last`` in
:mod:`monai_acs.layers.functional`). Two common modules of the bundles' networks answer a channels-last input with a
contiguous tensor on CPU, so the next layer copies it back: ``nn.InstanceNorm3d`` (the PoC UNet, five times per
step) and ``nn.AvgPool3d`` (the DenseNet transitions of the DeepLesion backbone). :func:`keep_channels_last` swaps the
class of such modules for a subclass with the same parameters, buffers and state-dict keys that keeps the layout:

| module | channels-last CPU float32 input computed as | otherwise |
|---|---|---|
| ``nn.InstanceNorm3d`` without running statistics | C a multiple of 16: ``F.batch_norm`` per sample on its | unchanged |
| | (D·H·W, C) rows (the same normalisation, in place in channels-last memory); other C: ``F.instance_norm`` | |
| | on a contiguous copy, copied back. Forward + backward 1.5-2.5x faster than ``F.group_norm`` with one group | |
| | per channel, which the layer used before (docs/benchmarks/instance_norm_cl.py) | |
| ``nn.AvgPool3d`` with a depth kernel and stride of 1, no depth padding | ``F.avg_pool2d`` on the depth slices folded | unchanged |
| | into the batch (a view, no copy: channels-last 2D keeps the layout) | |

On CUDA, under autocast and for contiguous inputs nothing changes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["keep_channels_last"]

_CL = torch.channels_last_3d


@torch.jit.unused
def _is_cl_cpu_float(x: Tensor) -> bool:
    return (x.dim() == 5 and x.device.type == "cpu" and x.dtype == torch.float32 and not x.is_contiguous()
            and x.is_contiguous(memory_format=_CL) and not torch.is_autocast_enabled("cpu"))


class ChannelsLastInstanceNorm3d(nn.InstanceNorm3d):
    """``nn.InstanceNorm3d`` that keeps a channels-last CPU float32 input channels-last (see the module docstring)."""

    def forward(self, input: Tensor) -> Tensor:
        if not torch.jit.is_scripting():  # eager only; TorchScript runs nn.InstanceNorm3d's own forward
            if not self.track_running_stats and _is_cl_cpu_float(input):  # (never one voxel: that is contiguous)
                if input.shape[1] % 16 == 0:
                    return self._per_sample_batch_norm(input)
                # few or odd channels: PyTorch's channels-last batch norm runs 2-4x slower than a copy to contiguous,
                # F.instance_norm there and a copy back
                out = F.instance_norm(input.contiguous(), None, None, self.weight, self.bias, True, 0.0, self.eps)
                return out.contiguous(memory_format=_CL)
        # nn.InstanceNorm3d's computation (TorchScript has no super())
        return F.instance_norm(input, self.running_mean, self.running_var, self.weight, self.bias,
                               self.training or not self.track_running_stats,
                               self.momentum if self.momentum is not None else 0.0, self.eps)

    @torch.jit.unused
    def _per_sample_batch_norm(self, input: Tensor) -> Tensor:
        # channels-last memory of one sample is a (D * H * W, C) matrix: a batch norm over its rows normalises each
        # channel over that sample's voxels, which is the instance norm; the samples are stacked back in one copy
        n, c = input.shape[:2]
        rows = input.permute(0, 2, 3, 4, 1).reshape(n, -1, c)  # a view: no copy for channels-last memory
        normed = [F.batch_norm(rows[i], None, None, self.weight, self.bias, True, 0.0, self.eps) for i in range(n)]
        out = normed[0].unsqueeze(0) if n == 1 else torch.stack(normed)
        return out.view(n, *input.shape[2:], c).permute(0, 4, 1, 2, 3)


class ChannelsLastAvgPool3d(nn.AvgPool3d):
    """``nn.AvgPool3d`` with a 1-deep window that keeps a channels-last CPU float32 input channels-last."""

    def forward(self, input: Tensor) -> Tensor:
        if not torch.jit.is_scripting():  # eager only; TorchScript runs nn.AvgPool3d's own computation
            if _is_cl_cpu_float(input) and self._folds():
                return self._folded(input)
        # nn.AvgPool3d's computation (TorchScript has no super())
        return F.avg_pool3d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad,
                            self.divisor_override)

    @torch.jit.unused
    def _folded(self, input: Tensor) -> Tensor:
        n, c, d, h, w = input.shape
        # (N, D, C, H, W) -> (N * D, C, H, W): a view of channels-last memory, itself a channels-last 2D tensor
        flat = input.permute(0, 2, 1, 3, 4).reshape(n * d, c, h, w)
        k, s, p = self._triple(self.kernel_size), self._triple(self.stride or self.kernel_size), \
            self._triple(self.padding)
        out = F.avg_pool2d(flat, k[1:], s[1:], p[1:], self.ceil_mode, self.count_include_pad, self.divisor_override)
        return out.reshape(n, d, c, *out.shape[2:]).permute(0, 2, 1, 3, 4)

    @staticmethod
    @torch.jit.unused
    def _triple(value) -> tuple:
        return tuple(value) if isinstance(value, (tuple, list)) else (value,) * 3

    @torch.jit.unused
    def _folds(self) -> bool:
        k, s, p = self._triple(self.kernel_size), self._triple(self.stride or self.kernel_size), \
            self._triple(self.padding)
        return k[0] == 1 and s[0] == 1 and p[0] == 0


_SWAPS = {nn.InstanceNorm3d: ChannelsLastInstanceNorm3d, nn.AvgPool3d: ChannelsLastAvgPool3d}


def keep_channels_last(module: nn.Module) -> nn.Module:
    """Swap, in place, the class of every plain ``nn.InstanceNorm3d`` and ``nn.AvgPool3d`` in ``module`` for its
    layout-keeping subclass (:class:`ChannelsLastInstanceNorm3d`, :class:`ChannelsLastAvgPool3d`).

    Parameters, buffers, state-dict keys and results (to float32 rounding for the norm) are unchanged; only exact
    instances of the two classes are swapped (subclasses are left alone).

    Args:
        module: a network (typically built by ``convert_to_3d``).

    Returns:
        ``module`` itself.

    Examples:
        >>> net = keep_channels_last(nn.Sequential(nn.InstanceNorm3d(4)))
        >>> type(net[0]).__name__
        'ChannelsLastInstanceNorm3d'
    """
    for sub in module.modules():
        swap = _SWAPS.get(type(sub))
        if swap is not None:
            sub.__class__ = swap
    return module
