"""Exact-type rule table: how each 2D module becomes its 3D counterpart."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops.misc import Permute

from ..layers import ACSConvTranspose, OperatorSpec
from ..layers.fusion import inflate_conv_weight

__all__ = [
    "LEFTOVER_2D_MODULES",
    "MODULE_RULES",
    "AvgPool3dExcludePad",
    "ConvertContext",
    "expand_pair",
    "find_rule",
    "keep_depth_correction",
    "map_permutation",
]


@dataclass
class ConvertContext:
    """Settings of one conversion."""

    spec: OperatorSpec
    keep_depth: bool = False
    options: dict[str, Any] = field(default_factory=dict)


def expand_pair(value: Any, keep_depth: bool, depth_value: int | None = None) -> tuple:
    """(h, w) -> (d, h, w) with d = h, or ``depth_value`` when ``keep_depth`` (None keeps d = h).

    A (d, h, w) triple is returned unchanged, so expanding twice is harmless.

    Examples:
        >>> expand_pair(3, keep_depth=False), expand_pair((3, 1), keep_depth=True, depth_value=1)
        ((3, 3, 3), (1, 3, 1))
    """
    if isinstance(value, (int, float)) or value is None:
        pair = (value, value)
    else:
        pair = tuple(value)
        if len(pair) == 3:
            return pair
        if len(pair) == 1:
            pair = (pair[0], pair[0])
    depth = depth_value if keep_depth and depth_value is not None else pair[0]
    return (depth, pair[0], pair[1])


def map_permutation(dims: tuple[int, ...] | list[int], where: str) -> list[int]:
    """Map a 4-D (N, C, H, W) permutation to 5-D (N, C, D, H, W).

    Only the channels-last round trip is supported: [0, 2, 3, 1] -> [0, 2, 3, 4, 1] and
    [0, 3, 1, 2] -> [0, 4, 1, 2, 3]; the identity stays the identity.

    Raises:
        NotImplementedError: any other 4-D permutation (naming ``where``).

    Examples:
        >>> map_permutation([0, 2, 3, 1], "block")
        [0, 2, 3, 4, 1]
    """
    dims = [int(d) for d in dims]
    table = {(0, 2, 3, 1): [0, 2, 3, 4, 1], (0, 3, 1, 2): [0, 4, 1, 2, 3], (0, 1, 2, 3): [0, 1, 2, 3, 4]}
    if tuple(dims) in table:
        return table[tuple(dims)]
    if len(dims) == 5:
        return dims
    raise NotImplementedError(
        f"permute{tuple(dims)} at '{where}': only the channels-last permutations (0, 2, 3, 1) / (0, 3, 1, 2) of a "
        f"(N, C, H, W) tensor can be converted to 3D"
    )


def _conv2d(module: nn.Conv2d, ctx: ConvertContext) -> nn.Module:
    try:
        return ctx.spec.layer.from_conv2d(module, keep_depth=ctx.keep_depth, **ctx.options)
    except TypeError as error:
        raise TypeError(
            f"operator {ctx.spec.name!r} does not accept the options {sorted(ctx.options)}: {error}"
        ) from error


def _conv_transpose2d(module: nn.ConvTranspose2d, ctx: ConvertContext) -> nn.Module:
    if ctx.spec.transposed == "i3d":
        kh, kw = module.kernel_size
        stride = expand_pair(module.stride, ctx.keep_depth, 1)
        padding = expand_pair(module.padding, ctx.keep_depth, (kh - 1) // 2 * module.dilation[0])
        out_pad = expand_pair(module.output_padding, ctx.keep_depth, 0)
        layer = nn.ConvTranspose3d(
            module.in_channels,
            module.out_channels,
            (kh, kh, kw),
            stride,
            padding,
            out_pad,
            module.groups,
            module.bias is not None,
            expand_pair(module.dilation, False),
            device=module.weight.device,
            dtype=module.weight.dtype,
        )
        with torch.no_grad():
            layer.weight.copy_(inflate_conv_weight(module.weight, kh))
            if module.bias is not None:
                layer.bias.copy_(module.bias)
        return layer
    mode = {"acs": "acs", "mean_acs": "mean"}.get(ctx.spec.transposed, "axial")
    return ACSConvTranspose.from_conv_transpose2d(module, keep_depth=ctx.keep_depth, mode=mode)


def _copy_state(src: nn.Module, dst: nn.Module) -> nn.Module:
    dst.load_state_dict(src.state_dict(), strict=True)
    param = next(src.parameters(), None)
    if param is not None:
        dst.to(device=param.device, dtype=param.dtype)
    dst.train(src.training)
    return dst


def _batch_norm(module: nn.BatchNorm2d, ctx: ConvertContext) -> nn.Module:
    new = nn.BatchNorm3d(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
    return _copy_state(module, new)


def _instance_norm(module: nn.InstanceNorm2d, ctx: ConvertContext) -> nn.Module:
    new = nn.InstanceNorm3d(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
    return _copy_state(module, new)


def _pool_args(module: nn.Module, ctx: ConvertContext) -> dict[str, Any]:
    kernel = expand_pair(module.kernel_size, ctx.keep_depth, 1)
    stride = expand_pair(module.stride if module.stride is not None else module.kernel_size, ctx.keep_depth, 1)
    padding = expand_pair(module.padding, ctx.keep_depth, 0)
    return {"kernel_size": kernel, "stride": stride, "padding": padding, "ceil_mode": module.ceil_mode}


def _max_pool(module: nn.MaxPool2d, ctx: ConvertContext) -> nn.Module:
    args = _pool_args(module, ctx)
    return nn.MaxPool3d(
        dilation=expand_pair(module.dilation, ctx.keep_depth, 1), return_indices=module.return_indices, **args
    )


class AvgPool3dExcludePad(nn.Module):
    """``AvgPool3d(count_include_pad=False)`` that also accepts maps smaller than the kernel (as ``AvgPool2d``
    does; ``AvgPool3d`` rejects them even when padded): the window sum of the zero-padded map over the window count
    of the zero-padded ones, which is the average over the real voxels of each window.

    Args:
        kernel_size, stride, padding: (D, H, W) triples.
        ceil_mode: as ``nn.AvgPool3d``. Default False.
    """

    def __init__(self, kernel_size: tuple, stride: tuple, padding: tuple, ceil_mode: bool = False) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding, self.ceil_mode = kernel_size, stride, padding, ceil_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pd, ph, pw = self.padding
        pads = [pw, pw, ph, ph, pd, pd]
        total = F.avg_pool3d(F.pad(x, pads), self.kernel_size, self.stride, 0, self.ceil_mode)
        ones = F.pad(torch.ones_like(x[:1, :1]), pads)
        count = F.avg_pool3d(ones, self.kernel_size, self.stride, 0, self.ceil_mode)
        return total / count

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, ceil_mode={self.ceil_mode}"
        )


def _avg_pool(module: nn.AvgPool2d, ctx: ConvertContext) -> nn.Module:
    args = _pool_args(module, ctx)
    padding = args["padding"]
    if any(padding) and not module.count_include_pad and module.divisor_override is None:
        return AvgPool3dExcludePad(args["kernel_size"], args["stride"], padding, module.ceil_mode)
    if any(padding) and module.count_include_pad and not module.ceil_mode:
        # AvgPool3d rejects maps smaller than its kernel even when padded (AvgPool2d accepts them); with the zeros
        # counted in the average, zero-padding first and pooling without padding is the same operation
        args["padding"] = 0
        pad = nn.ZeroPad3d((padding[2], padding[2], padding[1], padding[1], padding[0], padding[0]))
        return nn.Sequential(pad, nn.AvgPool3d(divisor_override=module.divisor_override, **args))
    return nn.AvgPool3d(count_include_pad=module.count_include_pad, divisor_override=module.divisor_override, **args)


def _lp_pool(module: nn.LPPool2d, ctx: ConvertContext) -> nn.Module:
    kernel = expand_pair(module.kernel_size, ctx.keep_depth, 1)
    stride = expand_pair(module.stride if module.stride is not None else module.kernel_size, ctx.keep_depth, 1)
    return nn.LPPool3d(module.norm_type, kernel, stride, module.ceil_mode)


def adaptive_output_size(output_size: Any) -> tuple:
    """Adaptive pools pool depth to 1: (h, w) -> (1, h, w), so a following Linear keeps its 2D weight."""
    pair = (output_size, output_size) if isinstance(output_size, int) or output_size is None else tuple(output_size)
    return (1, pair[0], pair[1])


def _adaptive_avg(module: nn.AdaptiveAvgPool2d, ctx: ConvertContext) -> nn.Module:
    return nn.AdaptiveAvgPool3d(adaptive_output_size(module.output_size))


def _adaptive_max(module: nn.AdaptiveMaxPool2d, ctx: ConvertContext) -> nn.Module:
    return nn.AdaptiveMaxPool3d(adaptive_output_size(module.output_size), module.return_indices)


def upsample_mode(mode: str) -> str:
    """2D interpolation modes in 3D: bilinear / bicubic -> trilinear; nearest modes stay."""
    return {"bilinear": "trilinear", "bicubic": "trilinear"}.get(mode, mode)


def _upsample(module: nn.Upsample, ctx: ConvertContext) -> nn.Module:
    if module.size is not None:
        raise NotImplementedError(
            f"nn.Upsample(size={module.size}) has a fixed 2D output size that does not define a depth; "
            f"use scale_factor instead"
        )
    scale = module.scale_factor
    if isinstance(scale, tuple) and len(scale) == 3:
        return module
    align = module.align_corners if upsample_mode(module.mode) in ("linear", "trilinear") else None
    return nn.Upsample(
        scale_factor=expand_pair(scale, ctx.keep_depth, 1.0), mode=upsample_mode(module.mode), align_corners=align
    )


def _dropout(module: nn.Dropout2d, ctx: ConvertContext) -> nn.Module:
    return nn.Dropout3d(module.p, module.inplace)


def _pad(module: nn.Module, ctx: ConvertContext) -> nn.Module:
    left, right, top, bottom = module.padding
    front, back = (0, 0) if ctx.keep_depth else (top, bottom)
    padding = (left, right, top, bottom, front, back)
    if isinstance(module, nn.ZeroPad2d):
        return nn.ZeroPad3d(padding)
    if isinstance(module, nn.ConstantPad2d):
        return nn.ConstantPad3d(padding, module.value)
    if isinstance(module, nn.ReflectionPad2d):
        return nn.ReflectionPad3d(padding)
    if isinstance(module, nn.ReplicationPad2d):
        return nn.ReplicationPad3d(padding)
    return nn.CircularPad3d(padding)


def _permute(module: Permute, ctx: ConvertContext) -> nn.Module:
    return Permute(map_permutation(module.dims, "Permute"))


def keep_depth_correction(old: nn.Module, new: nn.Module, ctx: ConvertContext) -> int:
    """Slices a ``keep_depth`` layer built from ``old`` loses (> 0) or adds (< 0) along depth.

    With ``keep_depth`` a convolution pads depth symmetrically by ``dilation * (kh - 1) // 2`` (the layers'
    box-kernel geometry), which keeps the depth for odd kernel heights. An even height (ConvNeXt's 4 x 4 stem,
    2 x 2 transposed convolutions) leaves one slice short (convolution) or over (transposed convolution); the
    graph pass pads / crops that slice at the back so that the depth stays D.
    """
    if not ctx.keep_depth or not isinstance(old, (nn.Conv2d, nn.ConvTranspose2d)):
        return 0
    padding = getattr(new, "padding", None)
    if isinstance(padding, str) or not isinstance(padding, (tuple, list)):
        return 0
    excess = old.dilation[0] * (old.kernel_size[0] - 1) - 2 * int(padding[0])
    return excess if isinstance(old, nn.Conv2d) else -excess


MODULE_RULES: dict[type, Callable[[Any, ConvertContext], nn.Module]] = {
    nn.Conv2d: _conv2d,
    nn.ConvTranspose2d: _conv_transpose2d,
    nn.BatchNorm2d: _batch_norm,
    nn.InstanceNorm2d: _instance_norm,
    nn.MaxPool2d: _max_pool,
    nn.AvgPool2d: _avg_pool,
    nn.LPPool2d: _lp_pool,
    nn.AdaptiveAvgPool2d: _adaptive_avg,
    nn.AdaptiveMaxPool2d: _adaptive_max,
    nn.Upsample: _upsample,
    nn.UpsamplingBilinear2d: _upsample,
    nn.UpsamplingNearest2d: _upsample,
    nn.Dropout2d: _dropout,
    nn.ZeroPad2d: _pad,
    nn.ConstantPad2d: _pad,
    nn.ReflectionPad2d: _pad,
    nn.ReplicationPad2d: _pad,
    nn.CircularPad2d: _pad,
    Permute: _permute,
}


class SamePad3d:
    """Forward pre-hook: TensorFlow "SAME" padding of a 5-D input for a (D, H, W) kernel / stride / dilation, computed
    from the input's size at run time (timm's ``Conv2dSame`` / ``MaxPool2dSame`` / ``AvgPool2dSame`` in 3D).

    Args:
        kernel, stride, dilation: (D, H, W) triples; a depth kernel of 1 with stride 1 pads nothing along depth.
        value: the padding value (``-inf`` for max pooling). Default 0.
    """

    def __init__(self, kernel: tuple, stride: tuple, dilation: tuple, value: float = 0.0) -> None:
        self.kernel, self.stride, self.dilation, self.value = tuple(kernel), tuple(stride), tuple(dilation), value

    def __call__(self, module: nn.Module, args: tuple) -> tuple:
        x = args[0]
        pads: list[int] = []
        for size, k, s, d in reversed(list(zip(x.shape[2:], self.kernel, self.stride, self.dilation))):
            total = max((math.ceil(int(size) / s) - 1) * s + (k - 1) * d + 1 - int(size), 0)
            pads += [total // 2, total - total // 2]
        return (F.pad(x, pads, value=self.value), *args[1:])


@functools.cache
def _timm_same_rules() -> dict[type, Callable[[Any, ConvertContext], nn.Module]]:
    """Rules for timm's dynamic "SAME" padding layers (only when the model uses timm)."""
    from timm.layers.conv2d_same import Conv2dSame
    from timm.layers.pool2d_same import AvgPool2dSame, MaxPool2dSame

    def conv_same(module: nn.Conv2d, ctx: ConvertContext) -> nn.Module:
        layer = _conv2d(module, ctx)
        kh, kw = module.kernel_size
        size = tuple(getattr(layer, "kernel_size", ()))
        # the layer's (D, H, W) extent: a 3D kernel (I3D's inflated one), else the ACS family's box
        box = size if len(size) == 3 else getattr(layer, "box_kernel_size", (kh, max(kh, kw), kw))
        kernel = (1 if ctx.keep_depth else box[0], box[1], box[2])  # keep_depth: the layer keeps the depth
        stride = (1 if ctx.keep_depth else module.stride[0], *module.stride)
        dilation = (module.dilation[0], *module.dilation)
        layer.register_forward_pre_hook(SamePad3d(kernel, stride, dilation))
        return layer

    def pool_same(module: nn.Module, ctx: ConvertContext) -> nn.Module:
        is_max = isinstance(module, nn.MaxPool2d)
        layer = _max_pool(module, ctx) if is_max else _avg_pool(module, ctx)
        kernel = expand_pair(module.kernel_size, ctx.keep_depth, 1)
        stride = expand_pair(module.stride if module.stride is not None else module.kernel_size, ctx.keep_depth, 1)
        dilation = expand_pair(getattr(module, "dilation", 1), ctx.keep_depth, 1)
        layer.register_forward_pre_hook(SamePad3d(kernel, stride, dilation, -math.inf if is_max else 0.0))
        return layer

    return {Conv2dSame: conv_same, MaxPool2dSame: pool_same, AvgPool2dSame: pool_same}


_FORWARD_METHODS = ("forward", "_conv_forward", "_check_input_dim")


def find_rule(module: nn.Module) -> Callable[[Any, ConvertContext], nn.Module] | None:
    """The rule for ``module``: its exact type's, else the nearest rule-table base class's when the subclass keeps
    that base's ``forward`` (a subclass that only changes ``__init__`` or adds attributes computes what its base
    computes). A subclass with its own ``forward`` (timm's ``BatchNormAct2d``, ``Conv2dSame``) has no rule: it is
    traced through, so its forward is rewritten like any other code.

    Examples:
        >>> class MyConv(nn.Conv2d): ...
        >>> find_rule(MyConv(1, 1, 3)) is MODULE_RULES[nn.Conv2d]
        True
    """
    kind = type(module)
    rule = MODULE_RULES.get(kind)
    if rule is not None:
        return rule
    if kind.__module__.startswith("timm."):  # timm is imported only for timm models
        rule = _timm_same_rules().get(kind)
        if rule is not None:
            return rule
    for base in kind.__mro__[1:]:
        if base in MODULE_RULES:
            same = all(getattr(kind, name, None) is getattr(base, name, None) for name in _FORWARD_METHODS)
            return MODULE_RULES[base] if same else None
    return None


# Module types that must not survive a conversion (checked after it).
LEFTOVER_2D_MODULES: tuple[type, ...] = (
    nn.Conv2d,
    nn.ConvTranspose2d,
    nn.BatchNorm2d,
    nn.InstanceNorm2d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.LPPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.FractionalMaxPool2d,
    nn.MaxUnpool2d,
    nn.Dropout2d,
    nn.ZeroPad2d,
    nn.ConstantPad2d,
    nn.ReflectionPad2d,
    nn.ReplicationPad2d,
    nn.CircularPad2d,
    nn.UpsamplingBilinear2d,
    nn.UpsamplingNearest2d,
    nn.PixelShuffle,
    nn.PixelUnshuffle,
)
