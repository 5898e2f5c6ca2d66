"""Transposed convolutions for converted decoders (MONAI UNet / BasicUNet up-sampling)."""

# no `from __future__ import annotations` here: TorchScript reads these class annotations at run time

import math
from typing import Any, List, Sequence

import torch
from torch import Tensor, nn

from ._base import _axis_triple, _kernel_pair, params_from_conv2d
from .functional import default_split, plan_transposed_views, run_transposed_views

__all__ = ["ACSConvTranspose"]


class ACSConvTranspose(nn.Module):
    """Transposed ACS convolution with a 2D-shaped kernel (in, out / groups, kh, kw).

    It equals ``F.conv_transpose3d`` with the block-sparse box kernel (see :mod:`monai_acs.layers.functional`).
    ``mode="acs"`` splits output channels across the views, ``"mean"`` averages the full kernel over the views
    (Mean-/Soft-ACS decoders), ``"axial"`` is the 2.5D transposed conv (no fusion, TSM, P3D, A3D decoders).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: 2D kernel size, int or (kh, kw).
        stride: int or (D, H, W). Default 1.
        padding: int or (D, H, W). Default 0.
        output_padding: int or (D, H, W). Default 0.
        groups: groups. Default 1.
        bias: learnable bias. Default True.
        dilation: int or (D, H, W). Default 1.
        padding_mode: only ``"zeros"``, as for ``nn.ConvTranspose3d``.
        device: parameter device. Default None.
        dtype: parameter dtype. Default None.
        mode: ``"acs"``, ``"mean"`` or ``"axial"``. Default ``"acs"``.
        split: (axial, coronal, sagittal) output channels for ``mode="acs"``.

    Examples:
        >>> ACSConvTranspose(4, 2, 2, stride=2)(torch.randn(1, 4, 3, 4, 5)).shape
        torch.Size([1, 2, 6, 8, 10])
    """

    source_name: str

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        output_padding: int | Sequence[int] = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: int | Sequence[int] = 1,
        padding_mode: str = "zeros",
        device: Any = None,
        dtype: Any = None,
        mode: str = "acs",
        split: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if padding_mode != "zeros":
            raise ValueError(f"ACSConvTranspose supports only padding_mode='zeros', got {padding_mode!r}")
        if mode not in ("acs", "mean", "axial"):
            raise ValueError(f"mode must be 'acs', 'mean' or 'axial', got {mode!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels={in_channels} and out_channels={out_channels} must divide groups={groups}")
        self.in_channels, self.out_channels, self.groups, self.mode = in_channels, out_channels, groups, mode
        self.kernel_size = _kernel_pair(kernel_size)
        self.stride = _axis_triple(stride, "stride")
        self.padding = _axis_triple(padding, "padding")
        self.output_padding = _axis_triple(output_padding, "output_padding")
        self.dilation = _axis_triple(dilation, "dilation")
        self.source_name = ""
        if mode == "axial":
            split = (out_channels, 0, 0)
        elif mode == "acs" and split is None:
            split = default_split(out_channels, groups)
        self.split = None if split is None else tuple(split)
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(in_channels, out_channels // groups, *self.kernel_size, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self.reset_parameters()
        self._plans = plan_transposed_views(
            self.kernel_size, in_channels, out_channels, groups, self.stride, self.padding, self.output_padding,
            self.dilation, self.split, mode == "mean",
        )
        self._stride_list: List[int] = list(self.stride)
        self._mean = mode == "mean"

    def reset_parameters(self) -> None:
        """Initialise like ``nn.ConvTranspose2d``."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.kernel_size[0] * self.kernel_size[1]
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_conv_transpose2d(
        cls, conv: nn.ConvTranspose2d, *, keep_depth: bool = False, mode: str = "acs", **options: Any
    ) -> "ACSConvTranspose":
        """Build from an ``nn.ConvTranspose2d``, copying its kernel and bias unchanged."""
        if not isinstance(conv, nn.ConvTranspose2d):
            raise TypeError(f"expected an nn.ConvTranspose2d, got {type(conv).__name__}")
        stride, padding, dilation = params_from_conv2d(conv.kernel_size, conv.stride, conv.padding, conv.dilation, False)
        if keep_depth:
            stride = (1, stride[1], stride[2])
            padding = ((dilation[0] * (conv.kernel_size[0] - 1)) // 2, padding[1], padding[2])
        op = conv.output_padding
        output_padding = (0 if keep_depth else op[0], op[0] if conv.kernel_size[0] >= conv.kernel_size[1] else op[1], op[1])
        layer = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, stride, padding, output_padding, conv.groups,
            conv.bias is not None, dilation, conv.padding_mode, conv.weight.device, conv.weight.dtype, mode=mode,
            **options,
        )
        with torch.no_grad():
            layer.weight.copy_(conv.weight)
            if conv.bias is not None:
                layer.bias.copy_(conv.bias)
        return layer

    def forward(self, x: Tensor) -> Tensor:
        if not torch.jit.is_scripting():
            if x.dim() != 5 or x.shape[1] != self.in_channels:
                where = f" at '{self.source_name}'" if self.source_name else ""
                raise ValueError(
                    f"ACSConvTranspose{where} expects a 5-D input with {self.in_channels} channels, "
                    f"got shape {tuple(x.shape)}"
                )
        return run_transposed_views(x, self.weight, self.bias, self._stride_list, self._plans, self._mean)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, output_padding={self.output_padding}, mode={self.mode}"
        )
