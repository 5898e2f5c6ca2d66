"""The other 3D context-fusion operators the A3D paper compares: I3D, P3D and TSM (A3D paper Sec. 2.1)."""

# no `from __future__ import annotations` here: TorchScript reads these class annotations at run time

from typing import Any, List, Optional, Sequence

import torch
from torch import Tensor, nn

from ._base import params_from_conv2d
from .acs import Conv2p5d
from .functional import default_split, p3d_temporal, shift_depth
from .registry import register_operator

__all__ = ["I3DConv", "P3DConv", "TSMConv", "inflate_conv_weight"]


def inflate_conv_weight(weight: Tensor, depth: int) -> Tensor:
    """I3D inflation: repeat a 2D kernel ``depth`` times along a new depth axis and divide by ``depth``.

    Args:
        weight: (out, in / groups, kh, kw) kernel.
        depth: kernel depth.

    Returns:
        (out, in / groups, depth, kh, kw) kernel whose depth sum equals ``weight``.

    Examples:
        >>> inflate_conv_weight(torch.ones(1, 1, 3, 3), 3).sum().item()
        9.0
    """
    return weight.unsqueeze(2).repeat(1, 1, depth, 1, 1) / depth


@register_operator(
    "i3d",
    summary="I3D: K x K x K Conv3d initialised with the 2D kernel repeated along depth and divided by K",
    params_overhead="K",
    flops_overhead="K",
    transposed="i3d",
)
class I3DConv(nn.Conv3d):
    """I3D convolution (A3D paper Sec. 2.1 (b)): an ``nn.Conv3d`` whose kernel is inflated from a 2D kernel.

    A 2D kernel (kh, kw) becomes (kh, kh, kw); the 2D row stride/padding/dilation apply to D and H.

    Examples:
        >>> I3DConv.from_conv2d(nn.Conv2d(2, 3, 3, padding=1)).weight.shape
        torch.Size([3, 2, 3, 3, 3])
    """

    source_name: str = ""

    @classmethod
    def from_conv2d(cls, conv2d: nn.Conv2d, *, keep_depth: bool = False) -> "I3DConv":
        """Build from a 2D convolution with the inflated kernel; ``keep_depth`` keeps depth stride 1 and depth."""
        kh, kw = conv2d.kernel_size
        stride, padding, dilation = params_from_conv2d(
            conv2d.kernel_size, conv2d.stride, conv2d.padding, conv2d.dilation, keep_depth
        )
        if not isinstance(padding, str):
            padding = (padding[0], conv2d.padding[0], padding[2])
        layer = cls(
            conv2d.in_channels,
            conv2d.out_channels,
            (kh, kh, kw),
            stride=(stride[0], conv2d.stride[0], conv2d.stride[1]),
            padding=padding,
            dilation=(dilation[0], conv2d.dilation[0], conv2d.dilation[1]),
            groups=conv2d.groups,
            bias=conv2d.bias is not None,
            padding_mode=conv2d.padding_mode,
            device=conv2d.weight.device,
            dtype=conv2d.weight.dtype,
        )
        with torch.no_grad():
            layer.weight.copy_(inflate_conv_weight(conv2d.weight, kh))
            if conv2d.bias is not None:
                layer.bias.copy_(conv2d.bias)
        return layer

    def forward(self, x: Tensor) -> Tensor:
        # nn.Conv3d alone would take a 4-D tensor as one unbatched volume: reject it like the other layers do
        if not torch.jit.is_scripting() and (x.dim() != 5 or x.shape[1] != self.in_channels):
            where = f" at '{self.source_name}'" if self.source_name else ""
            raise ValueError(
                f"I3DConv{where} expects a 5-D input (N, C, D, H, W) with {self.in_channels} channels, "
                f"got shape {tuple(x.shape)}"
            )
        return self._conv_forward(x, self.weight, self.bias)


@register_operator(
    "p3d",
    summary="P3D: 1 x K x K conv from the 2D kernel, then a K x 1 x 1 depth conv initialised to the identity",
    params_overhead="1 + Co/(Ci K)",
    flops_overhead="1 + Co/(Ci K)",
)
class P3DConv(Conv2p5d):
    """P3D convolution (A3D paper Sec. 2.1 (c)): a 2.5D conv followed by a (K, 1, 1) depth convolution.

    The depth kernel ``temporal_weight`` (out, out, K, 1, 1), K the 2D kernel height, is initialised to
    [0, .., 1, .., 0] on the diagonal (identity), so a fresh P3D layer equals the 2.5D conv. It has no bias.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode, device, dtype:
            as in :class:`~monai_acs.ACSConv`.

    Examples:
        >>> conv = P3DConv(2, 3, 3, padding=1)
        >>> conv.temporal_weight.shape, conv(torch.randn(1, 2, 4, 5, 6)).shape
        (torch.Size([3, 3, 3, 1, 1]), torch.Size([1, 3, 4, 5, 6]))
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        depth = self.kernel_size[0]
        self.temporal_weight = nn.Parameter(
            torch.zeros(self.out_channels, self.out_channels, depth, 1, 1, device=self.weight.device,
                        dtype=self.weight.dtype)
        )
        self.reset_temporal()

    def reset_temporal(self) -> None:
        """Set the depth kernel to the identity ([0, .., 1, .., 0] on the channel diagonal)."""
        with torch.no_grad():
            self.temporal_weight.zero_()
            idx = torch.arange(self.out_channels, device=self.temporal_weight.device)
            self.temporal_weight[idx, idx, (self.kernel_size[0] - 1) // 2, 0, 0] = 1.0

    def forward(self, x: Tensor) -> Tensor:
        if not torch.jit.is_scripting():
            self._check_input(x)
        return p3d_temporal(self._run_views(x), self.temporal_weight)


@register_operator(
    "tsm",
    summary="TSM shift: input channels split in 3, shifted up / down / kept along depth, then 1 x K x K conv",
    params_overhead="1",
    flops_overhead="1",
)
class TSMConv(Conv2p5d):
    """TSM convolution (A3D paper Sec. 2.1 (e)): shift input channel parts along depth, then a 2.5D conv.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode, device, dtype:
            as in :class:`~monai_acs.ACSConv`.
        shift_split: (up, down, kept) input-channel counts; default :func:`default_split` of ``in_channels``.

    Examples:
        >>> TSMConv(3, 4, 3, padding=1)(torch.randn(1, 3, 4, 5, 6)).shape
        torch.Size([1, 4, 4, 5, 6])
    """

    def __init__(self, *args: Any, shift_split: Optional[Sequence[int]] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shift_split: List[int] = list(shift_split) if shift_split is not None else list(
            default_split(self.in_channels)
        )
        if len(self.shift_split) != 3 or sum(self.shift_split) != self.in_channels:
            raise ValueError(f"shift_split must be (up, down, kept) summing to {self.in_channels}, got {shift_split}")

    def forward(self, x: Tensor) -> Tensor:
        if not torch.jit.is_scripting():
            self._check_input(x)
        return self._run_views(shift_depth(x, self.shift_split[0], self.shift_split[1]))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", shift_split={tuple(self.shift_split)}"
