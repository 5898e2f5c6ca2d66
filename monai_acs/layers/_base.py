"""Shared base of the fusion layers that keep a 2D-shaped kernel (out, in / groups, kh, kw)."""

# no `from __future__ import annotations` here: TorchScript reads these class annotations at run time

import math
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from .functional import box_kernel_size

IntOr2or3 = int | Sequence[int]


def _kernel_pair(kernel_size: IntOr2or3) -> tuple[int, int]:
    if isinstance(kernel_size, int):
        return (kernel_size, kernel_size)
    values = tuple(int(k) for k in kernel_size)
    if len(values) == 2:
        return values  # type: ignore[return-value]
    if len(values) == 3 and values[0] == values[1]:
        return (values[1], values[2])  # a (K, K, K)-style box: the 2D kernel is its (H, W) part
    raise ValueError(f"kernel_size must be an int, a 2D (kh, kw) pair or a (kh, kh, kw) box, got {kernel_size!r}")


def _axis_triple(value: IntOr2or3, name: str) -> tuple[int, int, int]:
    if isinstance(value, int):
        return (value, value, value)
    values = tuple(int(v) for v in value)
    if len(values) != 3:
        raise ValueError(f"{name} must be an int or a (D, H, W) triple, got {value!r}")
    return values  # type: ignore[return-value]


def params_from_conv2d(
    kernel_hw: Sequence[int],
    stride: Sequence[int],
    padding: str | Sequence[int],
    dilation: Sequence[int],
    keep_depth: bool,
) -> tuple[tuple[int, int, int], str | tuple[int, int, int], tuple[int, int, int]]:
    """Map a 2D convolution's (row, col) stride/padding/dilation to (D, H, W) values for the box kernel.

    D takes the row values, W the column values, H the values of the larger kernel side (the side that sets the
    box's H size). With ``keep_depth`` the depth stride is 1 and depth padding keeps the depth unchanged.

    Returns:
        (stride, padding, dilation) as (D, H, W) triples (padding may stay ``"same"``/``"valid"``).
    """
    kh, kw = int(kernel_hw[0]), int(kernel_hw[1])
    h_src = 0 if kh >= kw else 1
    stride3 = (1 if keep_depth else stride[0], stride[h_src], stride[1])
    dilation3 = (dilation[0], dilation[h_src], dilation[1])
    if isinstance(padding, str):
        if keep_depth and padding == "valid" and kh > 1:
            padding = (0, 0)
        else:
            return stride3, padding, dilation3
    pad_d = padding[0]
    if keep_depth:
        pad_d = dilation[0] * (kh - 1) // 2
    return stride3, (pad_d, padding[h_src], padding[1]), dilation3


class Conv2dWeightLayer(nn.Module):
    """Base for 3D layers whose learnable kernel keeps the 2D shape (out, in / groups, kh, kw).

    The constructor follows ``nn.Conv3d``; ``stride``, ``padding`` and ``dilation`` are per-axis (D, H, W)
    values of the box kernel (see :mod:`monai_acs.layers.functional`).
    """

    source_name: str
    __jit_unused_properties__ = ["box_kernel_size"]

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
    ) -> None:
        super().__init__()
        if groups <= 0 or in_channels % groups or out_channels % groups:
            raise ValueError(
                f"{type(self).__name__}: in_channels={in_channels} and out_channels={out_channels} must be "
                f"divisible by groups={groups}"
            )
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError(f"padding_mode must be 'zeros', 'reflect', 'replicate' or 'circular', got {padding_mode!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _kernel_pair(kernel_size)
        self.stride = _axis_triple(stride, "stride")
        self.padding = padding if isinstance(padding, str) else _axis_triple(padding, "padding")
        if isinstance(self.padding, str) and self.padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same', 'valid', an int or a (D, H, W) triple, got {padding!r}")
        if self.padding == "same" and any(s != 1 for s in self.stride):
            raise ValueError(f"padding='same' is not supported for strided convolutions (stride={self.stride})")
        self.dilation = _axis_triple(dilation, "dilation")
        self.groups = groups
        self.padding_mode = padding_mode
        self.source_name = ""
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self.reset_parameters()

    @property
    def box_kernel_size(self) -> tuple[int, int, int]:
        """(D, H, W) size of the equivalent dense 3D kernel."""
        return box_kernel_size(self.kernel_size)

    def reset_parameters(self) -> None:
        """Initialise like ``nn.Conv2d`` (Kaiming uniform on the 2D kernel)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.kernel_size[0] * self.kernel_size[1]
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def _init_kwargs_from_conv2d(cls, conv2d: nn.Conv2d, keep_depth: bool) -> dict[str, Any]:
        if not isinstance(conv2d, nn.Conv2d):
            raise TypeError(f"{cls.__name__}.from_conv2d expects an nn.Conv2d, got {type(conv2d).__name__}")
        stride, padding, dilation = params_from_conv2d(
            conv2d.kernel_size, conv2d.stride, conv2d.padding, conv2d.dilation, keep_depth
        )
        return dict(
            in_channels=conv2d.in_channels,
            out_channels=conv2d.out_channels,
            kernel_size=conv2d.kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=conv2d.groups,
            bias=conv2d.bias is not None,
            padding_mode=conv2d.padding_mode,
            device=conv2d.weight.device,
            dtype=conv2d.weight.dtype,
        )

    @classmethod
    def from_conv2d(cls, conv2d: nn.Conv2d, *, keep_depth: bool = False, **options: Any) -> "Conv2dWeightLayer":
        """Build the layer from a 2D convolution, copying its kernel and bias unchanged.

        Args:
            conv2d: the 2D convolution.
            keep_depth: depth stride 1 and depth-preserving padding. Default False.
            **options: operator options (e.g. ``split`` for ACS, ``depth`` for A3D).

        Returns:
            The new layer, on the 2D layer's device and dtype.
        """
        layer = cls(**cls._init_kwargs_from_conv2d(conv2d, keep_depth), **options)
        with torch.no_grad():
            layer.weight.copy_(conv2d.weight)
            if conv2d.bias is not None:
                layer.bias.copy_(conv2d.bias)
        return layer

    def _check_input(self, x: Tensor) -> None:
        where = f" at '{self.source_name}'" if self.source_name else ""
        if x.dim() != 5:
            raise ValueError(
                f"{type(self).__name__}{where} expects a 5-D input (N, C, D, H, W), got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__}{where} expects {self.in_channels} input channels, "
                f"got input of shape {tuple(x.shape)}"
            )

    def extra_repr(self) -> str:
        text = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}"
        )
        if self.dilation != (1, 1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode}"
        return text
