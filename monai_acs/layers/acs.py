"""ACS convolutions (ACS paper Sec. III) and the Mean-ACS / Soft-ACS variants (Sec. III-C)."""

# no `from __future__ import annotations` here: TorchScript reads these class annotations at run time

from typing import Any, List, Optional, Sequence

import torch
from torch import Tensor, nn

from ._base import Conv2dWeightLayer, IntOr2or3
from .functional import default_split, plan_conv_views, run_conv_views
from .registry import register_operator

__all__ = ["ACSConv", "MeanACSConv", "SoftACSConv", "Conv2p5d"]


class _PlannedConv(Conv2dWeightLayer):
    """A 2D-weight layer whose forward runs a precomputed list of view convolutions."""

    _mean: bool = False
    _mode_pad: List[int]
    _stride_list: List[int]

    def __init__(self, *args: Any, split: Sequence[int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        mode_pad, plans = plan_conv_views(
            self.kernel_size,
            self.in_channels,
            self.out_channels,
            self.groups,
            self.stride,
            self.padding,
            self.dilation,
            self.padding_mode,
            split=self._resolve_split(split),
            mean=self._mean,
        )
        self._mean = bool(type(self)._mean)  # instance copy: TorchScript reads instance attributes
        self._mode_pad = mode_pad
        self._plans = plans
        self._stride_list = list(self.stride)

    def _resolve_split(self, split: Sequence[int] | None) -> Sequence[int] | None:
        return split

    def _view_weights(self) -> Optional[Tensor]:
        return None

    def _run_views(self, x: Tensor, layout_rule: bool = True) -> Tensor:
        return run_conv_views(
            x, self.weight, self.bias, self._stride_list, self._mode_pad, self.padding_mode, self._plans, self._mean,
            self._view_weights(), layout_rule,
        )

    def forward(self, x: Tensor) -> Tensor:
        if not torch.jit.is_scripting():
            self._check_input(x)
        return self._run_views(x)


@register_operator(
    "acs",
    summary="ACS: 2D kernel split by output channel into axial / coronal / sagittal views (ACS paper Sec. III-A)",
    params_overhead="1",
    flops_overhead="1",
    transposed="acs",
)
class ACSConv(_PlannedConv):
    """ACS convolution (ACS paper Sec. III-A, Algorithm 1) with the ``nn.Conv3d`` constructor signature.

    The kernel keeps the 2D shape (out, in / groups, kh, kw), so 2D state dicts load unchanged. Output channels
    are split into axial (kernel 1 x kh x kw on D x H x W), coronal (kh x 1 x kw) and sagittal (kh x kw x 1)
    parts, concatenated in that order. The layer equals a 3D convolution with a block-sparse kernel.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: 2D kernel size, int or (kh, kw).
        stride: int or (D, H, W). Default 1.
        padding: int, (D, H, W), ``"same"`` or ``"valid"`` (of the box kernel). Default 0.
        dilation: int or (D, H, W). Default 1.
        groups: convolution groups. Default 1.
        bias: learnable bias. Default True.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``. Default ``"zeros"``.
        device: parameter device. Default None.
        dtype: parameter dtype. Default None.
        split: (axial, coronal, sagittal) output channels summing to ``out_channels``; default gives the remainder
            to the first parts (64 -> 22, 21, 21). With groups, every part must be a multiple of
            ``out_channels // groups``.

    Note:
        Non-square kernels use the box rule of :mod:`monai_acs.layers.functional`.

    Examples:
        >>> conv = ACSConv(4, 10, 3, padding=1)
        >>> conv.split, conv(torch.randn(1, 4, 5, 6, 7)).shape
        ((4, 3, 3), torch.Size([1, 10, 5, 6, 7]))
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOr2or3,
        stride: IntOr2or3 = 1,
        padding: str | IntOr2or3 = 0,
        dilation: IntOr2or3 = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: Any = None,
        split: Sequence[int] | None = None,
    ) -> None:
        self.split = tuple(split) if split is not None else default_split(out_channels, groups)
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode, device, dtype,
            split=self.split,
        )

    def extra_repr(self) -> str:
        return super().extra_repr() + f", split={self.split}"


@register_operator(
    "conv2p5d",
    summary="2.5D / no fusion: the 2D kernel as a 1 x K x K Conv3d (ACS paper Sec. III-B, A3D paper (a))",
    params_overhead="1",
    flops_overhead="1",
    transposed="conv2p5d",
)
class Conv2p5d(_PlannedConv):
    """2.5D convolution ("no fusion"): the 2D kernel as a 1 x kh x kw Conv3d, weight kept in 2D shape.

    Geometry follows the ACS box rule: ``padding``/``stride``/``dilation`` are those of the K x K x K box, and the
    axial kernel sits on its centre plane, so a 2.5D network has the same feature shapes as its ACS twin and
    depth padding of a converted 'same' convolution leaves the depth unchanged.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode, device, dtype:
            as in :class:`ACSConv`.

    Examples:
        >>> Conv2p5d(2, 3, 3, padding=1)(torch.randn(1, 2, 4, 5, 6)).shape
        torch.Size([1, 3, 4, 5, 6])
    """

    def _resolve_split(self, split: Sequence[int] | None) -> Sequence[int] | None:
        return (self.out_channels, 0, 0)

    def forward(self, x: Tensor) -> Tensor:
        if not torch.jit.is_scripting():
            self._check_input(x)
        # one 1 x kh x kw conv runs in the caller's layout: on CPU it is as fast or faster contiguous than
        # channels-last at stride 1 (the layout rule table in docs/operators.md), so re-laying it out gains nothing
        return self._run_views(x, False)


@register_operator(
    "mean_acs",
    summary="Mean-ACS: full 2D kernel on all three views, averaged (ACS paper Eq. 4)",
    params_overhead="1",
    flops_overhead="3",
    transposed="mean_acs",
)
class MeanACSConv(_PlannedConv):
    """Mean-ACS convolution (ACS paper Eq. 4): the full 2D kernel on the three views, outputs averaged.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode, device, dtype:
            as in :class:`ACSConv`.

    Examples:
        >>> MeanACSConv(2, 3, 3, padding=1)(torch.randn(1, 2, 4, 5, 6)).shape
        torch.Size([1, 3, 4, 5, 6])
    """

    _mean = True


@register_operator(
    "soft_acs",
    summary="Soft-ACS: full 2D kernel on all three views, softmax-weighted by 3 learnable logits (ACS paper Eq. 5)",
    params_overhead="1 + 3/(Co Ci K^2) (3 per layer)",
    flops_overhead="3",
    transposed="mean_acs",
)
class SoftACSConv(_PlannedConv):
    """Soft-ACS convolution (ACS paper Eq. 5): views weighted by ``softmax(view_logits)``, 3 parameters per layer.

    The logits start at zero, so a fresh Soft-ACS layer equals Mean-ACS.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode, device, dtype:
            as in :class:`ACSConv`.

    Examples:
        >>> conv = SoftACSConv(2, 3, 3, padding=1)
        >>> conv.view_logits.shape, conv(torch.randn(1, 2, 4, 5, 6)).shape
        (torch.Size([3]), torch.Size([1, 3, 4, 5, 6]))
    """

    _mean = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.view_logits = nn.Parameter(torch.zeros(3, device=self.weight.device, dtype=self.weight.dtype))

    def _view_weights(self) -> Optional[Tensor]:
        return torch.softmax(self.view_logits, dim=0)
