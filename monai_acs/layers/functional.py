"""Functional core of the 3D context-fusion operators: pure, typed functions on tensors.

Geometry convention (used by every operator here and documented in ``docs/operators.md``):
a 2D kernel of size ``(kh, kw)`` becomes three *view kernels* on ``(D, H, W)``::

    axial    (1,  kh, kw)   the 2D kernel in the H-W plane
    coronal  (kh, 1,  kw)   the 2D kernel in the D-W plane
    sagittal (kh, kw, 1 )   the 2D kernel in the D-H plane

Each view kernel is placed inside a common *box* kernel of size ``(kh, max(kh, kw), kw)``, centred on every
axis (offset ``(box - k) // 2``, so for even sizes the lower centre). Stride, padding and dilation are per-axis
``(D, H, W)`` values that apply to the box: an ACS convolution equals ``F.conv3d`` with the box-sized,
block-sparse kernel whose non-zeros are the view kernels (each output channel uses one view). For square
kernels the box is ``K x K x K`` and the view kernels lie on its three centre planes (ACS paper, Algorithm 1).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "VIEWS",
    "default_split",
    "box_kernel_size",
    "view_kernel_size",
    "acs_conv3d",
    "mean_acs_conv3d",
    "acs_conv_transpose3d",
    "plan_conv_views",
    "run_conv_views",
    "plan_transposed_views",
    "run_transposed_views",
    "a3d_fuse",
    "tsm_shift",
    "shift_depth",
    "p3d_temporal",
]

VIEWS = ("axial", "coronal", "sagittal")
_VIEW_AXIS = {"axial": 0, "coronal": 1, "sagittal": 2}
IntOr3 = int | Sequence[int]


def _triple(value: IntOr3, name: str) -> tuple[int, int, int]:
    if isinstance(value, int):
        return (value, value, value)
    values = tuple(int(v) for v in value)
    if len(values) != 3:
        raise ValueError(f"{name} must be an int or a (D, H, W) triple, got {value!r}")
    return values  # type: ignore[return-value]


def default_split(out_channels: int, groups: int = 1) -> tuple[int, int, int]:
    """Split output channels into (axial, coronal, sagittal) parts, remainder to the first parts.

    With ``groups > 1`` whole groups are split, so every part is a multiple of ``out_channels // groups``.

    Args:
        out_channels: number of output channels.
        groups: convolution groups (default 1).

    Returns:
        The (axial, coronal, sagittal) channel counts; they sum to ``out_channels``.

    Examples:
        >>> default_split(64), default_split(10), default_split(2)
        ((22, 21, 21), (4, 3, 3), (1, 1, 0))
    """
    unit = 1 if groups == 1 else out_channels // groups
    units = out_channels // unit
    base, rest = divmod(units, 3)
    return tuple((base + (1 if i < rest else 0)) * unit for i in range(3))  # type: ignore[return-value]


def _check_split(split: Sequence[int], out_channels: int, groups: int) -> tuple[int, int, int]:
    parts = tuple(int(s) for s in split)
    if len(parts) != 3 or any(p < 0 for p in parts) or sum(parts) != out_channels:
        raise ValueError(
            f"split must be three non-negative channel counts (axial, coronal, sagittal) summing to "
            f"out_channels={out_channels}, got {tuple(split)}"
        )
    unit = 1 if groups == 1 else out_channels // groups
    if any(p % unit for p in parts):
        raise ValueError(
            f"with groups={groups} every split part must be a multiple of out_channels // groups = {unit}, "
            f"got {parts}"
        )
    return parts  # type: ignore[return-value]


def box_kernel_size(kernel_hw: Sequence[int]) -> tuple[int, int, int]:
    """The (D, H, W) size of the box kernel that holds the three view kernels of a 2D ``(kh, kw)`` kernel."""
    kh, kw = int(kernel_hw[0]), int(kernel_hw[1])
    return (kh, max(kh, kw), kw)


def view_kernel_size(kernel_hw: Sequence[int], view: str) -> tuple[int, int, int]:
    """The (D, H, W) kernel size of one view: axial (1, kh, kw), coronal (kh, 1, kw), sagittal (kh, kw, 1)."""
    kh, kw = int(kernel_hw[0]), int(kernel_hw[1])
    return {"axial": (1, kh, kw), "coronal": (kh, 1, kw), "sagittal": (kh, kw, 1)}[view]


def _padding_pairs(
    padding: str | IntOr3, box: Sequence[int], dilation: Sequence[int], stride: Sequence[int]
) -> list[tuple[int, int]]:
    if isinstance(padding, str):
        if padding == "valid":
            return [(0, 0)] * 3
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(f"padding='same' is not supported for strided convolutions (stride={tuple(stride)})")
            pairs = []
            for k, d in zip(box, dilation):
                total = d * (k - 1)
                pairs.append((total // 2, total - total // 2))
            return pairs
        raise ValueError(f"padding must be 'same', 'valid', an int or a (D, H, W) triple, got {padding!r}")
    return [(p, p) for p in _triple(padding, "padding")]


def _check_input(input: Tensor, weight_in_channels: int, groups: int, op: str) -> None:
    if input.dim() != 5:
        raise ValueError(f"{op} expects a 5-D input (N, C, D, H, W), got shape {tuple(input.shape)}")
    if input.shape[1] != weight_in_channels * groups:
        raise ValueError(
            f"{op} expects {weight_in_channels * groups} input channels, got input of shape {tuple(input.shape)}"
        )


# A view plan is plain data so that layers can precompute it once and TorchScript can run it:
# (w_start, w_stop, unsqueeze_dim, in_start, in_stop, groups,
#  crop [D lo, D hi, H lo, H hi, W lo, W hi], conv padding [D, H, W], extra F.pad [W lo, W hi, H lo, H hi, D lo, D hi],
#  dilation [D, H, W])
ViewPlan = Tuple[int, int, int, int, int, int, List[int], List[int], List[int], List[int]]
# A transposed view plan:
# (w_in_start, w_in_stop, w_out_start, w_out_stop, unsqueeze_dim, groups,
#  padding [D, H, W], output_padding [D, H, W], dilation [D, H, W], fix F.pad [W lo, W hi, H lo, H hi, D lo, D hi])
TransposedPlan = Tuple[int, int, int, int, int, int, List[int], List[int], List[int], List[int]]


def _fpad_order(pairs: Sequence[tuple[int, int]]) -> list[int]:
    return [v for pair in reversed(pairs) for v in pair]


def plan_conv_views(
    kernel_hw: Sequence[int],
    in_channels: int,
    out_channels: int,
    groups: int,
    stride: IntOr3,
    padding: str | IntOr3,
    dilation: IntOr3,
    padding_mode: str = "zeros",
    split: Sequence[int] | None = None,
    mean: bool = False,
) -> tuple[list[int], list[ViewPlan]]:
    """Precompute the per-view convolutions of an ACS-family layer.

    Args:
        kernel_hw: the 2D kernel size (kh, kw).
        in_channels: input channels.
        out_channels: output channels.
        groups: convolution groups.
        stride: int or (D, H, W) stride of the box kernel.
        padding: int, (D, H, W), ``"same"`` or ``"valid"`` padding of the box kernel.
        dilation: int or (D, H, W) dilation of the box kernel.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.
        split: (axial, coronal, sagittal) output channels; ignored when ``mean``.
        mean: every view uses the whole kernel (Mean-/Soft-ACS).

    Returns:
        (mode_pad, plans): the F.pad list applied first with ``padding_mode`` (empty for zeros) and one
        :data:`ViewPlan` per non-empty view.
    """
    if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
        raise ValueError(f"padding_mode must be 'zeros', 'reflect', 'replicate' or 'circular', got {padding_mode!r}")
    stride3, dilation3 = _triple(stride, "stride"), _triple(dilation, "dilation")
    box = box_kernel_size(kernel_hw)
    pads = _padding_pairs(padding, box, dilation3, stride3)
    mode_pad: list[int] = []
    if padding_mode != "zeros" and any(p for pair in pads for p in pair):
        mode_pad, pads = _fpad_order(pads), [(0, 0)] * 3
    in_per_group = in_channels // groups
    if mean:
        counts = [(view, 0, out_channels) for view in VIEWS]
    else:
        parts = default_split(out_channels, groups) if split is None else _check_split(split, out_channels, groups)
        starts = [0, parts[0], parts[0] + parts[1]]
        counts = [(view, s, s + n) for view, s, n in zip(VIEWS, starts, parts) if n]
    plans: list[ViewPlan] = []
    kernels: list[tuple[int, int, int]] = []
    for view, w_start, w_stop in counts:
        kernel = view_kernel_size(kernel_hw, view)
        view_pads = []
        for (lo, hi), big, k, d in zip(pads, box, kernel, dilation3):
            lead = (big - k) // 2
            view_pads.append((lo - lead * d, hi - (big - k - lead) * d))
        crop = [max(-v, 0) for pair in view_pads for v in pair]
        view_pads = [(max(lo, 0), max(hi, 0)) for lo, hi in view_pads]
        sym = [min(lo, hi) for lo, hi in view_pads]
        extra = _fpad_order([(lo - s, hi - s) for (lo, hi), s in zip(view_pads, sym)])
        if groups == 1 or mean:
            in_start, in_stop, view_groups = 0, in_channels, groups
        else:
            per_group = out_channels // groups
            g0, g1 = w_start // per_group, w_stop // per_group
            in_start, in_stop, view_groups = g0 * in_per_group, g1 * in_per_group, g1 - g0
        dil = [d if k > 1 else 1 for d, k in zip(dilation3, kernel)]
        plan: ViewPlan = (w_start, w_stop, 2 + _VIEW_AXIS[view], in_start, in_stop, view_groups, crop, sym, extra, dil)
        if not mean and plans and kernel == kernels[-1] and _mergeable(plans[-1], plan, groups):
            plans[-1] = _merge_plans(plans[-1], plan, groups)
            continue
        plans.append(plan)
        kernels.append(kernel)
    return mode_pad, plans


def _mergeable(first: ViewPlan, second: ViewPlan, groups: int) -> bool:
    """Two adjacent views whose kernels have the same (D, H, W) shape and geometry are one convolution.

    That is every view of a 1 x 1 kernel, axial + coronal for 1 x kw kernels and coronal + sagittal for kh x 1.
    """
    if first[1] != second[0] or first[6:] != second[6:]:
        return False
    if groups == 1:
        return first[3:5] == second[3:5]
    return first[4] == second[3]


def _merge_plans(first: ViewPlan, second: ViewPlan, groups: int) -> ViewPlan:
    merged_groups = first[5] if groups == 1 else first[5] + second[5]
    return (first[0], second[1], first[2], first[3], second[4], merged_groups, *first[6:])  # type: ignore[return-value]


def run_conv_views(
    input: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    stride: List[int],
    mode_pad: List[int],
    padding_mode: str,
    plans: List[ViewPlan],
    mean: bool = False,
    view_weights: Optional[Tensor] = None,
    layout_rule: bool = True,
) -> Tensor:
    """Run the view convolutions planned by :func:`plan_conv_views` (TorchScript-compatible).

    Without ``mean`` the views are concatenated by channel; with ``mean`` they are averaged, or weighted by
    ``view_weights``, and the bias is added once. ``layout_rule=False`` computes in the caller's layout (A3D's
    convolution, which follows its contiguous slice mix) instead of the layout rule's.
    """
    x = input
    if len(mode_pad) > 0:
        x = F.pad(x, mode_pad, mode=padding_mode)
    if not torch.jit.is_scripting():
        if not mean and layout_rule:
            box = _box_geometry_if_faster(x, weight, stride, plans)
            if box is not None:
                return _box_conv_views(x, weight, bias, stride, plans, box)
            if _fast_views_eligible(x, plans):  # re-lays the input out itself
                return _fast_conv_views(x, weight, bias, stride, plans)
        if layout_rule:
            x = _preferred_layout(x)
    outputs: List[Tensor] = []
    for i, plan in enumerate(plans):
        w_start, w_stop, dim, in_start, in_stop, groups, crop, pad, extra, dil = plan
        xin = x
        if in_start != 0 or in_stop != x.shape[1]:
            xin = xin[:, in_start:in_stop]
        for axis in range(3):
            lo = crop[2 * axis]
            hi = crop[2 * axis + 1]
            if lo != 0 or hi != 0:
                xin = xin.narrow(2 + axis, lo, xin.shape[2 + axis] - lo - hi)
        if extra[0] != 0 or extra[1] != 0 or extra[2] != 0 or extra[3] != 0 or extra[4] != 0 or extra[5] != 0:
            xin = F.pad(xin, extra)
        b: Optional[Tensor] = None
        if bias is not None and not mean:
            b = bias[w_start:w_stop]
        if torch.jit.is_scripting():
            y = F.conv3d(xin, weight[w_start:w_stop].unsqueeze(dim), b, stride, pad, dil, groups)
        else:  # oneDNN also where the dispatcher would pick slow_conv3d (batch 1, small C * D * H)
            y = _onednn_conv3d(xin, weight[w_start:w_stop].unsqueeze(dim), b, stride, pad, dil, groups)
        if mean:
            if view_weights is not None:
                y = y * view_weights[i]
            else:
                y = y / 3.0
        outputs.append(y)
    if mean:
        out = outputs[0] + outputs[1] + outputs[2]
        if bias is not None:
            out = out + bias.view(1, -1, 1, 1, 1)
    elif len(outputs) == 1:
        out = outputs[0]
    else:
        out = torch.cat(outputs, dim=1)
    if not torch.jit.is_scripting() and layout_rule:
        out = _answer_in_rule_layout(out, x)
    return _keep_channels_last(out, x)


@torch.jit.unused
def _answer_in_rule_layout(out: Tensor, x: Tensor) -> Tensor:
    """``out`` in channels_last_3d where the layout rule computes in it, also when the input was laid out both ways
    (one channel, as a network's first layer gets; or 1 x 1 planes), for which the convolution answers contiguous."""
    if _prefers_channels_last(x) and out.dim() == 5 and not out.is_contiguous(memory_format=_CHANNELS_LAST):
        return out.contiguous(memory_format=_CHANNELS_LAST)
    return out


def _keep_channels_last(out: Tensor, input: Tensor) -> Tensor:
    """``out`` in channels_last_3d when ``input`` came that way (TorchScript-compatible).

    Cropped or padded views, ``torch.cat`` and oneDNN's single-threaded 1 x 1 x 1 conv can return contiguous
    tensors for channels-last input; without this one copy the rest of a channels-last network would run
    contiguous.
    """
    cl = torch.channels_last_3d
    if input.is_contiguous(memory_format=cl) and not input.is_contiguous() and not out.is_contiguous(memory_format=cl):
        return out.contiguous(memory_format=cl)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# fast path of the split (ACS) views (eager and torch.compile): one autograd node, input gradient in one buffer
# ---------------------------------------------------------------------------------------------------------------------
_CHANNELS_LAST = torch.channels_last_3d
_accumulate_checked: list[bool] = []  # filled once by _mkldnn_accumulate_ok()


@torch.jit.unused
def _autocast_on(x: Tensor) -> bool:
    """Whether autocast (AMP) is on for ``x``'s device: the fused autograd nodes below then step aside, since their
    backward would meet the autocast dtype of the forward outside autocast. Devices autocast does not know (``meta``:
    shape-only runs) have none."""
    device_type = x.device.type
    if device_type == "meta" or not torch.amp.is_autocast_available(device_type):
        return False
    return torch.is_autocast_enabled(device_type)


def _fast_views_eligible(x: Tensor, plans: List[ViewPlan]) -> bool:
    """Views that read the whole input unpadded and uncropped, with groups=1: the common ACS layer."""
    if len(plans) < 2 or torch.jit.is_tracing():  # a traced model keeps plain aten ops: it loads without monai_acs
        return False
    if _autocast_on(x):
        return False
    for plan in plans:
        if not _plain_view(x, plan):
            return False
    return True


def _plain_view(x: Tensor, plan: ViewPlan) -> bool:
    """A view that reads every input channel, unpadded and uncropped, with groups=1."""
    return plan[3] == 0 and plan[4] == x.shape[1] and plan[5] == 1 and not any(plan[6]) and not any(plan[8])


def _memory_format(x: Tensor) -> torch.memory_format:
    """channels_last_3d for a tensor laid out that way (and not also plainly contiguous), else contiguous."""
    if x.is_contiguous(memory_format=_CHANNELS_LAST) and not x.is_contiguous():
        return _CHANNELS_LAST
    return torch.contiguous_format


def _sampled_axes(w: Tensor, stride: List[int], pad: List[int]) -> List[int]:
    """Axes (0, 1, 2 for D, H, W) where a plain view's kernel is 1 wide, unpadded and strided: the view reads only
    the input planes at multiples of the stride there."""
    return [a for a in range(3) if w.shape[2 + a] == 1 and stride[a] > 1 and pad[a] == 0]


def _transposed_padding(weight: Tensor, pad: List[int], dil: List[int]) -> List[int] | None:
    """Padding that makes a stride-1 forward conv with the flipped kernel the input gradient, or None."""
    out = []
    for k, p, d in zip(weight.shape[2:], pad, dil):
        q = d * (k - 1) - p
        if q < 0:
            return None
        out.append(q)
    return out


def _mkldnn_accumulate_ok() -> bool:
    """Whether oneDNN's in-place conv + add (``mkldnn::_convolution_pointwise_`` 'add', a private op that inductor
    uses) exists here and, with the swapped-role kernel gradient, matches ``aten.convolution_backward``.

    Checked once on a tiny problem; any failure disables the path (the generic backward is used).
    """
    if not _accumulate_checked:
        ok = False
        try:
            if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise_"):
                gen = torch.Generator().manual_seed(0)
                x = torch.randn(1, 4, 3, 4, 5, generator=gen).contiguous(memory_format=_CHANNELS_LAST)
                g = torch.randn(1, 3, 3, 4, 5, generator=gen).contiguous(memory_format=_CHANNELS_LAST)
                weights = [torch.randn(3, 4, 1, 3, 3, generator=gen), torch.randn(3, 4, 3, 1, 3, generator=gen)]
                pads = [[0, 1, 1], [1, 0, 1]]
                expected = torch.zeros_like(x)
                got = torch.zeros_like(x)
                ok = True
                for w, p in zip(weights, pads):
                    gx, gw, _ = torch.ops.aten.convolution_backward(
                        g, x, w, None, [1, 1, 1], p, [1, 1, 1], False, [0, 0, 0], 1, [True, True, False]
                    )
                    expected += gx
                    wt = w.flip(2, 3, 4).transpose(0, 1)
                    q = _transposed_padding(wt, p, [1, 1, 1])
                    torch.ops.mkldnn._convolution_pointwise_(
                        got, g, wt, None, q, [1, 1, 1], [1, 1, 1], 1, "add", None, None, [], None
                    )
                    swapped = torch.ops.aten.convolution_backward(
                        x, g, wt, None, [1, 1, 1], q, [1, 1, 1], False, [0, 0, 0], 1, [False, True, False]
                    )[1]
                    ok = ok and bool(torch.allclose(swapped.flip(2, 3, 4).transpose(0, 1), gw, rtol=1e-5, atol=1e-5))
                ok = ok and bool(torch.allclose(got, expected, rtol=1e-5, atol=1e-5))
        except Exception:  # noqa: BLE001 - a private op: any failure means "do not use it"
            ok = False
        _accumulate_checked.append(ok)
    return _accumulate_checked[0]


def _can_use_onednn(x: Tensor, weight: Tensor, stride: List[int], fmt: Optional[torch.memory_format] = None) -> bool:
    """CPU float32 channels_last_3d with stride 1, where the oneDNN ops of the backward below are checked exact
    (``fmt``: the layout the backward computes in, default ``x``'s)."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32:
        return False
    fmt = _memory_format(x) if fmt is None else fmt
    if any(s != 1 for s in stride) or fmt != _CHANNELS_LAST or not torch.backends.mkldnn.enabled:
        return False
    return _mkldnn_accumulate_ok()


@torch.jit.unused
def _prefers_channels_last(x: Tensor) -> bool:
    """The layout rule of the eager layers: where they compute in channels_last_3d whatever the caller's layout.

    | device | dtype   | layout the layer computes in                        | why (docs/benchmarks.md)          |
    |--------|---------|-----------------------------------------------------|-----------------------------------|
    | CPU    | float32 | channels_last_3d (one copy of a contiguous input)   | oneDNN's 3D convolutions and their |
    |        |         |                                                     | backward run 1.5-3x faster in it  |
    | other  | any     | the caller's (cuDNN picks its own; AMP, bfloat16    | not measured here: left as given  |
    |        |         | and half on CPU are left as given)                  |                                   |

    The output stays in the layout the layer computed in, as ``nn.Conv3d`` does for a channels-last weight, so the
    rest of a network (normalisation, activations, the next layers) runs channels-last too and only the network's
    first layer pays the copy.
    """
    return x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 5


@torch.jit.unused
def _preferred_layout(x: Tensor) -> Tensor:
    """``x`` in the layout :func:`_prefers_channels_last` picks (no copy when it is already there)."""
    if _prefers_channels_last(x) and not x.is_contiguous(memory_format=_CHANNELS_LAST):
        return x.contiguous(memory_format=_CHANNELS_LAST)
    return x


# ---------------------------------------------------------------------------------------------------------------------
# small split (ACS) layers as one convolution with the block-sparse box kernel
# ---------------------------------------------------------------------------------------------------------------------
# Below these sizes a split layer runs faster on CPU as one F.conv3d with the box kernel (three times the 2.5D
# arithmetic, two oneDNN calls per training step) than as its views (nine calls in the fused node): every oneDNN call
# costs 0.1-0.2 ms on the 2-core machine, and a view with few output channels fills a whole vector block. Measured
# on a grid of 168 layers (docs/benchmarks/box_grid.py, docs/operators.md): with both bounds the rule's choice is
# within 1.18x of the faster of the two paths everywhere; the 108 layers it sends to the box run 0.88-4.47x as fast
# as the views (median 2.4x).
_BOX_MAX_MACS = 24_000_000  # multiply-adds of the equivalent 2.5D convolution (N * output voxels * Cout * Cin * kh * kw)
_BOX_MAX_CHANNELS = 8192  # Cin * Cout: above it the 27-tap kernel's arithmetic dominates even for small planes
# Dead taps (_dead_tap_axes) are never computed: with two or three dead axes the layer takes the box, cut to its live
# taps (a third of the 2D kernel's taps or fewer), at any size; with one, small layers take the cut box and the others
# the views, each cut (measured in docs/benchmarks/dead_taps.py). False computes them (tests, A/B runs).
_CUT_DEAD_TAPS = True


BoxGeometry = Tuple[List[int], List[int], List[List[int]], List[int]]
# (box padding, box dilation, per view the (lead, trail) zero planes on each axis, the dead-tap axes cut to 1)


@torch.jit.unused
def _view_kernels(weight: Tensor, plans: List[ViewPlan], dead: List[int]) -> List[List[int]]:
    """Each view's 3D kernel size, 1 on the ``dead`` axes (:func:`_dead_tap_axes`)."""
    kernels = [list(weight.shape[2:]) for _ in plans]
    for kernel, plan in zip(kernels, plans):
        kernel.insert(plan[2] - 2, 1)
        for a in dead:
            kernel[a] = 1
    return kernels


@torch.jit.unused
def _dead_tap_axes(x: Tensor, weight: Tensor, plans: List[ViewPlan]) -> List[int]:
    """The axes on which every view reads only its centre tap: the input is no longer than the views' dilation
    there and their zero padding is centred, so each other tap of a kernel extent k > 1 reads padding at every
    output position (|offset| >= dilation >= size; any stride). A view 1 wide there must be unpadded.

    On such an axis the layer equals the same convolution with each view's kernel cut to its centre, unpadded and
    undilated there: the deep layers of a DeepLab at few slices (depth 1 or 2 against dilations 2-36) and the
    ASPP branches whose rates exceed the feature map.
    """
    dead: List[int] = []
    kernels = _view_kernels(weight, plans, [])
    for a in range(3):
        ok = any(kernel[a] > 1 for kernel in kernels)
        for kernel, plan in zip(kernels, plans):
            k, pad, dil = kernel[a], plan[7][a], plan[9][a]
            if k == 1:
                ok = ok and pad == 0
            else:
                ok = ok and k % 2 == 1 and pad == dil * (k - 1) // 2 and dil >= x.shape[2 + a]
        if ok:
            dead.append(a)
    return dead


@torch.jit.unused
def _box_geometry(weight: Tensor, plans: List[ViewPlan],
                  dead: Optional[List[int]] = None) -> Optional[BoxGeometry]:
    """(box padding, box dilation, per view the (lead, trail) zero planes on each axis, ``dead``) of plain views
    that are centred in a common box, or None when they are not (an even kernel whose views sit off-centre). On
    the ``dead`` axes every view is cut to its centre tap: the box is 1 wide there, unpadded and undilated."""
    dead = [] if dead is None else dead
    kernels = _view_kernels(weight, plans, dead)
    box = [max(k[a] for k in kernels) for a in range(3)]
    dilation = [1 if a in dead else max(p[9][a] for p in plans) for a in range(3)]
    padding: List[int] = []
    zeros: List[List[int]] = [[] for _ in plans]
    for a in range(3):
        pads = set()
        for i, (kernel, plan) in enumerate(zip(kernels, plans)):
            spare = box[a] - kernel[a]
            if spare % 2:
                return None
            pads.add((0 if a in dead else plan[7][a]) + spare // 2 * dilation[a])
            zeros[i] += [spare // 2, spare // 2]
        if len(pads) != 1:
            return None
        padding.append(pads.pop())
    return padding, dilation, zeros, dead


@torch.jit.unused
def _box_is_faster(x: Tensor, weight: Tensor, stride: List[int], plans: List[ViewPlan]) -> bool:
    """Whether a split layer computes as one box-kernel convolution (CPU float32, plain views, below the bounds)."""
    return _box_geometry_if_faster(x, weight, stride, plans) is not None


@torch.jit.unused
def _box_geometry_if_faster(x: Tensor, weight: Tensor, stride: List[int],
                            plans: List[ViewPlan]) -> Optional[BoxGeometry]:
    """The box geometry (:func:`_box_geometry`) when the layer computes as one box-kernel convolution, else None."""
    if len(plans) < 2 or not _prefers_channels_last(x) or _autocast_on(x) or weight.dtype != torch.float32:
        return None
    if not all(_plain_view(x, p) for p in plans):
        return None
    if [p[0] for p in plans[1:]] != [p[1] for p in plans[:-1]]:  # views that do not split the channels (Mean-ACS)
        return None
    dead = _dead_tap_axes(x, weight, plans) if _CUT_DEAD_TAPS else []
    if len(dead) >= 2:  # the box cut to its live taps has a third of the 2D kernel's taps or fewer: at any size
        return _box_geometry(weight, plans, dead)
    if x.shape[1] * weight.shape[0] > _BOX_MAX_CHANNELS:
        return None
    dim, pad, dil = plans[0][2], plans[0][7], plans[0][9]
    kernel = list(weight.shape[2:])
    kernel.insert(dim - 2, 1)
    voxels = x.shape[0]
    for a in range(3):
        voxels *= (x.shape[2 + a] + 2 * pad[a] - dil[a] * (kernel[a] - 1) - 1) // stride[a] + 1
    if voxels * weight.shape[0] * weight.shape[1] * weight.shape[2] * weight.shape[3] > _BOX_MAX_MACS:
        return None
    return _box_geometry(weight, plans, dead)  # one dead axis: the 2D kernel's taps instead of the full box's


@torch.jit.unused
def _box_conv_views(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int], plans: List[ViewPlan],
                    geometry: BoxGeometry) -> Tensor:
    """The split views as one ``F.conv3d`` with the block-sparse box kernel (each view's kernel zero-padded to the
    box, cut to its centre tap on the dead axes), in the layout rule's layout."""
    padding, dilation, _, _ = geometry
    box = _BoxKernel.apply(weight, plans, geometry)
    out = _onednn_conv3d(_preferred_layout(x), box, bias, stride, padding, dilation, 1)
    return _answer_in_rule_layout(out, x)


def _box_kernel(weight: Tensor, plans: List[ViewPlan], geometry: BoxGeometry) -> Tensor:
    """The box kernel of the 2D kernel ``weight``: per view its 3D kernel, cut to the centre tap on the dead axes,
    zero-padded to the box; views concatenated by output channel."""
    _, _, zeros, dead = geometry
    kernels = [F.pad(_live_view_kernel(weight, plan, dead)[0], [w0, w1, h0, h1, d0, d1])
               for plan, (d0, d1, h0, h1, w0, w1) in zip(plans, zeros)]
    return torch.cat(kernels, dim=0)


def _unbox_kernel(grad_box: Tensor, plans: List[ViewPlan], geometry: BoxGeometry, kernel_hw: List[int]) -> Tensor:
    """The 2D kernel's gradient from the box kernel's: per view the taps it placed in the box (zero on the dead
    taps, which only ever read padding), concatenated by output channel. Plain ops: differentiable again."""
    _, _, zeros, dead = geometry
    grads: List[Tensor] = []
    for plan, (d0, d1, h0, h1, w0, w1) in zip(plans, zeros):
        g = grad_box[plan[0]:plan[1]]
        g = g.narrow(2, d0, g.shape[2] - d0 - d1).narrow(3, h0, g.shape[3] - h0 - h1).narrow(4, w0, g.shape[4] - w0 - w1)
        grads.append(_uncut_kernel_grad(g, plan, kernel_hw, dead))
    return torch.cat(grads, dim=0)


class _BoxKernel(torch.autograd.Function):
    """:func:`_box_kernel` as one autograd node whose backward is :func:`_unbox_kernel`: one pass over the kernel
    each way. Through plain autograd, each view's weight slice sent a full-size zero gradient back to be summed
    (2.2 against 0.4 ms for a 256 x 256 x 3 x 3 kernel, forward + backward, 2 threads)."""

    @staticmethod
    def forward(ctx, weight: Tensor, plans: List[ViewPlan], geometry: BoxGeometry) -> Tensor:
        ctx.plans, ctx.geometry, ctx.kernel_hw = plans, geometry, list(weight.shape[2:])
        return _box_kernel(weight, plans, geometry)

    @staticmethod
    def backward(ctx, grad_box: Tensor):
        return _unbox_kernel(grad_box, ctx.plans, ctx.geometry, ctx.kernel_hw), None, None


# The fused node is a pair of registered custom ops (forward, backward) with fake implementations, so that
# torch.compile / torch.export trace it as one opaque kernel (no graph break; ``fullgraph=True`` works) while eager
# mode runs the same code. A view plan travels as a flat list of ints.
_PLAN_INTS = 24


def _flat_plans(plans: List[ViewPlan]) -> List[int]:
    flat: List[int] = []
    for plan in plans:
        flat += [*plan[:6], *plan[6], *plan[7], *plan[8], *plan[9]]
    return flat


def _unflat_plans(flat: Sequence[int]) -> List[ViewPlan]:
    plans: List[ViewPlan] = []
    for i in range(0, len(flat), _PLAN_INTS):
        v = [int(a) for a in flat[i : i + _PLAN_INTS]]
        plans.append((v[0], v[1], v[2], v[3], v[4], v[5], v[6:12], v[12:15], v[15:21], v[21:24]))
    return plans


def _computing_format(x: Tensor) -> torch.memory_format:
    """The layout the fused ACS node computes and answers in for input ``x``: the layout rule's
    (:func:`_prefers_channels_last`), else the caller's."""
    return _CHANNELS_LAST if _prefers_channels_last(x) else _memory_format(x)


def _split_views_forward(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int],
                         plans: List[ViewPlan]) -> Tensor:
    """Each view's output written into one preallocated tensor in the computing layout (no ``torch.cat``).

    A contiguous input that the layout rule wants channels-last is copied here, and the copy dies with this call:
    the node saves the caller's tensor, and its backward lays it out again (see :func:`_split_views_backward`).
    """
    dead = _dead_tap_axes(x, weight, plans) if _CUT_DEAD_TAPS else []
    x = _preferred_layout(x)
    fmt = _computing_format(x)  # channels-last also for an input that is both (one channel, or 1 x 1 planes)
    out: Optional[Tensor] = None
    for plan in plans:
        w_start, w_stop, groups = plan[0], plan[1], plan[5]
        w, pad, dil = _live_view_kernel(weight, plan, dead)
        b = bias[w_start:w_stop] if bias is not None else None
        y = _onednn_conv3d(x, w, b, stride, pad, dil, groups)
        if out is None:
            out = torch.empty((y.shape[0], weight.shape[0], *y.shape[2:]), dtype=y.dtype, device=y.device,
                              memory_format=fmt)
        out[:, w_start:w_stop].copy_(y)
        del y
    assert out is not None
    return out


@torch.jit.unused
def _dispatcher_skips_onednn(x: Tensor, w: Tensor, groups: int) -> bool:
    """Whether ``F.conv3d`` and ``aten.convolution_backward`` would run PyTorch's native ``slow_conv3d`` instead of
    oneDNN for this CPU float32 view: ATen's ``use_mkldnn`` (ConvUtils.h) keeps oneDNN for a batch of one only when
    groups > 1, both last kernel sizes exceed 3, or N * C * D * H > 20480. Measured on 2 threads, ``slow_conv3d`` is
    up to 4.6x slower for the views of a LIDC-sized network at batch 1 (docs/benchmarks.md, session 9), and its
    weight gradient through the swapped or plain call was the whole of a 7 x 7 stem's 85 ms layer step. Kernels of
    one tap stay with the dispatcher: for DeepLesion's 1 x 1 convs at 7 x 6 x 6 its native gemm path was as fast
    (forward 0.82 vs 0.87 ms) or faster (2.5D layer step 1.94 vs 2.46 ms, 992 -> 128)."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():  # a traced graph keeps F.conv3d: it may run on
        return False  # another device later; torch.compile has no fake kernel for aten.mkldnn_convolution
    return (x.device.type == "cpu" and x.dtype == torch.float32 and groups == 1 and x.shape[0] == 1
            and not (w.shape[-1] > 3 and w.shape[-2] > 3) and x.shape[1] * x.shape[2] * x.shape[3] <= 20480
            and w.shape[2] * w.shape[3] * w.shape[4] > 1)  # 1 x 1 x 1: the native gemm was as fast or faster


@torch.jit.unused
def _onednn_conv3d(x: Tensor, w: Tensor, b: Optional[Tensor], stride: List[int], pad: List[int], dil: List[int],
                   groups: int) -> Tensor:
    """``F.conv3d``, through oneDNN where the dispatcher would pick ``slow_conv3d`` (:func:`_dispatcher_skips_onednn`;
    ``aten.mkldnn_convolution`` has its own autograd formula, double backward included)."""
    if _dispatcher_skips_onednn(x, w, groups):
        return torch.ops.aten.mkldnn_convolution(x, w.contiguous(), b, pad, stride, dil, groups)
    return F.conv3d(x, w, b, stride, pad, dil, groups)


def _live_view_kernel(weight: Tensor, plan: ViewPlan, dead: List[int]) -> Tuple[Tensor, List[int], List[int]]:
    """A view's 3D kernel, padding and dilation, cut to its centre tap on the ``dead`` axes
    (:func:`_dead_tap_axes`): unpadded and undilated there, the same result with fewer taps (a coronal view of
    a depth-1 input is a 1 x 1 x kw convolution)."""
    w = weight[plan[0]:plan[1]].unsqueeze(plan[2])
    pad, dil = list(plan[7]), list(plan[9])
    for a in dead:
        if w.shape[2 + a] > 1:
            w = w.narrow(2 + a, (w.shape[2 + a] - 1) // 2, 1)
            pad[a], dil[a] = 0, 1
    return w, pad, dil


def _uncut_kernel_grad(gw: Tensor, plan: ViewPlan, kernel_hw: List[int], dead: List[int]) -> Tensor:
    """A view's kernel gradient (of :func:`_live_view_kernel`'s kernel) as the 2D kernel's slice: zero on the dead
    taps, which only ever read padding."""
    full = list(kernel_hw)
    full.insert(plan[2] - 2, 1)
    spread = [0] * 6  # F.pad order: W, H, D
    for a in dead:
        if gw.shape[2 + a] != full[a]:
            side = (full[a] - 1) // 2
            spread[4 - 2 * a], spread[5 - 2 * a] = side, full[a] - 1 - side
    if any(spread):
        gw = F.pad(gw, spread)
    return gw.squeeze(plan[2])


def _view_kernel_grad(g: Tensor, x: Tensor, w: Tensor, stride: List[int], pad: List[int], dil: List[int],
                      groups: int, q: Optional[List[int]], swapped: bool, flipped: Optional[Tensor]) -> Tensor:
    """One view's kernel gradient, shaped like ``w`` (the one place that builds this ``convolution_backward`` call).

    ``swapped`` (stride 1, oneDNN, ``q`` the flipped kernel's padding, ``flipped`` that kernel): the kernel
    gradient of the input gradient's forward conv, with the roles of ``x`` and ``g`` swapped; oneDNN runs it
    faster with few input channels, much slower with >= 128 input channels and < 32 view channels (measured, see
    docs/benchmarks.md).
    """
    if swapped and q is not None and flipped is not None:
        gw = torch.ops.aten.convolution_backward(
            x, g, flipped, None, [1, 1, 1], q, dil, False, [0, 0, 0], 1, [False, True, False]
        )[1]
        return gw.flip(2, 3, 4).transpose(0, 1)
    return torch.ops.aten.convolution_backward(
        g, x, w, None, stride, pad, dil, False, [0, 0, 0], groups, [False, True, False]
    )[1]


def _fold_planes(t: Tensor, d: int, rest: List[int]) -> Tensor:
    """(N, C, ...) with dim ``d`` folded into the batch: a channels-last 2D tensor (N * t.shape[d], C, *rest), in
    one copy (whatever ``t``'s layout)."""
    folded = t.permute(0, d, rest[0], rest[1], 1).contiguous()  # (N, planes, rest0, rest1, C)
    return folded.view(-1, *folded.shape[2:]).permute(0, 3, 1, 2)


def _folded_kernel_grad(g: Tensor, x: Tensor, w: Tensor, stride: List[int], pad: List[int], dil: List[int],
                        axis: int) -> Tensor:
    """The kernel gradient of a strided view that reads every stride-th plane of ``axis`` (its kernel is 1 wide,
    unpadded there), as the 2D convolution it is: those planes folded into the batch, channels-last 2D.

    oneDNN's 3D strided kernel gradient of the coronal and sagittal views runs 4-13x slower than the axial view's
    (docs/benchmarks.md, the strided breakdown); folded, each is an axial-like 2D problem. The folded copy of the
    sampled planes (half the input at stride 2) is freed before the input gradient is allocated (two passes in
    :func:`_split_views_backward`).
    """
    d = 2 + axis
    n, o = g.shape[0], g.shape[1]
    index: List[slice] = [slice(None)] * 5
    index[d] = slice(None, None, stride[axis])
    rest = [a for a in (2, 3, 4) if a != d]
    xs, gs = _fold_planes(x[tuple(index)], d, rest), _fold_planes(g, d, rest)
    other = [a - 2 for a in rest]
    gw = torch.ops.aten.convolution_backward(
        gs, xs, w.squeeze(d), None, [stride[a] for a in other], [pad[a] for a in other], [dil[a] for a in other],
        False, [0, 0], 1, [False, True, False],
    )[1]
    return gw.unsqueeze(d)


def _view_input_grad(grad_x: Optional[Tensor], g: Tensor, x_shape: List[int], fmt: torch.memory_format, w: Tensor,
                     stride: List[int], pad: List[int], dil: List[int], groups: int, q: Optional[List[int]],
                     dtype: torch.dtype, flipped: Optional[Tensor]) -> Tensor:
    """Add one view's input gradient into ``grad_x`` (or start it when None) and return the buffer."""
    if q is not None and flipped is not None:
        # stride 1: the input gradient of this view is the forward conv of g with the flipped kernel (C output
        # channels, so oneDNN's 16-channel blocking wastes nothing), added in place into one buffer
        if grad_x is None:
            return torch.ops.mkldnn._convolution_pointwise(g, flipped, None, q, [1, 1, 1], dil, 1, "none", [], None)
        torch.ops.mkldnn._convolution_pointwise_(grad_x, g, flipped, None, q, [1, 1, 1], dil, 1, "add", None, None,
                                                 [], None)
        return grad_x
    sampled = _sampled_axes(w, stride, pad) if grad_x is not None else []
    if not sampled:  # (the empty tensor only gives the input's shape and layout: its pages are never touched)
        gx = torch.ops.aten.convolution_backward(
            g, torch.empty(x_shape, dtype=dtype, device=g.device, memory_format=fmt), w, None, stride, pad, dil,
            False, [0, 0, 0], groups, [True, False, False]
        )[0]
        if grad_x is None:
            return gx
        return grad_x.add_(gx)
    assert grad_x is not None
    # a strided view whose kernel is 1 wide on a strided axis (axial on D, coronal on H, sagittal on W) reads only
    # every stride-th input plane there: its input gradient is that of a conv on those planes alone, added into
    # them. Each output plane on that axis reads one input plane, so it runs in chunks of planes: the temporary is
    # a chunk's, not an input-sized one per view
    a0 = sampled[0]
    like_shape, sub_stride = list(x_shape), list(stride)
    index: List[slice] = [slice(None)] * 5
    for a in sampled:
        like_shape[2 + a], sub_stride[a], index[2 + a] = g.shape[2 + a], 1, slice(None, None, stride[a])
    whole = 1
    for size in like_shape:
        whole *= size  # the temporary of all planes at once
    for o0, o1 in _plane_chunks(g.shape[2 + a0], whole * g.element_size()):
        like_shape[2 + a0] = o1 - o0
        like = torch.empty(like_shape, dtype=dtype, device=g.device, memory_format=fmt)  # only its shape is read
        gx = torch.ops.aten.convolution_backward(
            g.narrow(2 + a0, o0, o1 - o0), like, w, None, sub_stride, pad, dil, False, [0, 0, 0], groups,
            [True, False, False],
        )[0]
        index[2 + a0] = slice(o0 * stride[a0], o1 * stride[a0], stride[a0])
        grad_x[tuple(index)].add_(gx)
        del gx, like
    return grad_x


_SAMPLED_CHUNKS = 4  # at most this many chunks of output planes for the strided views' sampled-plane gradients
_SAMPLED_CHUNK_BYTES = 4 * 2**20  # a temporary up to this is not split: each chunk costs a oneDNN call (0.1-0.2 ms)


def _plane_chunks(length: int, whole_bytes: int) -> List[Tuple[int, int]]:
    """Near-equal ``(start, stop)`` ranges covering ``range(length)``: one per ``_SAMPLED_CHUNK_BYTES`` of the
    unsplit temporary (``whole_bytes``), at least one, at most ``_SAMPLED_CHUNKS``."""
    n = max(1, min(_SAMPLED_CHUNKS, length, -(-whole_bytes // _SAMPLED_CHUNK_BYTES)))
    bounds = [length * i // n for i in range(n + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(n)]


def _split_views_backward(grad_out: Tensor, x: Tensor, weight: Tensor, stride: List[int], plans: List[ViewPlan],
                          need_x: bool, need_w: bool, need_b: bool) -> tuple[Tensor, Tensor, Tensor]:
    """The input gradient in one buffer, each view's kernel gradient, the bias gradient once.

    ``x`` is the caller's input; when the layout rule computes in another layout it is laid out again here, the
    kernel gradients (which read it) are computed first and the copy is freed before the input gradient is
    allocated, so that the node's peak holds one input-sized buffer beside the caller's, as a 2.5D conv's does.
    On CPU float32 channels_last_3d with stride 1, each view's input gradient is a stride-1 forward convolution
    with the flipped kernel that oneDNN adds in place; elsewhere the views' ``aten.convolution_backward`` results
    are summed in place. Gradients that are not needed come back as empty tensors.
    """
    x_shape = list(x.shape)
    dead = _dead_tap_axes(x, weight, plans) if _CUT_DEAD_TAPS else []
    kernel_hw = list(weight.shape[2:])
    relaid = _prefers_channels_last(x) and _memory_format(x) != _CHANNELS_LAST
    fmt = _computing_format(x)
    onednn = _can_use_onednn(x, weight, stride, fmt)
    xc: Optional[Tensor] = None if relaid else x  # laid out again on first use (strided views fold x instead)
    grad_x: Optional[Tensor] = None
    grad_ws: List[Tensor] = []
    # the bias gradient: one reduction over the whole output gradient (the views' channel ranges tile it in order),
    # measured 3-4x faster than one per view slice
    grad_b = grad_out.sum(dim=(0, 2, 3, 4)) if need_b else weight.new_empty(0)
    # two passes over the views' output-gradient slices, the kernel gradients first, when the input was laid out
    # again here (the copy is freed before the input gradient is allocated) or the layer is strided (oneDNN's
    # strided kernel gradient of the coronal and sagittal views gathers the planes it reads into a temporary of
    # half the input, which then does not meet the input gradient); otherwise one pass
    two_pass = (relaid or any(s != 1 for s in stride)) and need_x and need_w
    passes = [(need_w, False), (False, need_x)] if two_pass else [(need_w, need_x)]
    # each view's flipped kernel (oneDNN's input gradient and swapped kernel gradient), made once per backward:
    # a flip copies the kernel (6 ms for a 2048 x 86 x 3 x 3 view on 2 threads)
    flips: List[Optional[Tensor]] = [None] * len(plans)
    # the views' dense output-gradient slices share one buffer (a fresh allocation per slice pays its page faults
    # again: about 0.35 ms per MiB on the 2-core machine, docs/benchmarks.md)
    slice_buf: Optional[Tensor] = None
    for do_w, do_x in passes:
        for i, plan in enumerate(plans):
            w_start, w_stop, groups = plan[0], plan[1], plan[5]
            w, pad, dil = _live_view_kernel(weight, plan, dead)
            g = grad_out[:, w_start:w_stop]
            if not g.is_contiguous(memory_format=fmt):
                if slice_buf is None:
                    slice_buf = grad_out.new_empty(max(_numel_of_slice(g, a, b) for a, b, *_ in plans))
                g = _dense_like(slice_buf, g, fmt).copy_(g)
            q = _transposed_padding(w, pad, dil) if onednn else None  # flipping keeps the kernel's sizes
            swapped = x_shape[1] <= 64 or w_stop - w_start >= 32
            if q is not None and flips[i] is None and (do_x or swapped):
                flips[i] = w.flip(2, 3, 4).transpose(0, 1)
            if do_w:
                folded = _sampled_axes(w, stride, pad) if q is None and _prefers_channels_last(x) and groups == 1 else []
                if not folded and _dispatcher_skips_onednn(x, w, groups):  # the view's flat axis into the batch
                    folded = [plan[2] - 2]
                if folded:  # reads the caller's tensor directly, in any layout
                    gw = _folded_kernel_grad(g, x, w, stride, pad, dil, folded[0])
                else:
                    if xc is None:
                        xc = _preferred_layout(x)
                    gw = _view_kernel_grad(g, xc, w, stride, pad, dil, groups, q, swapped, flips[i])
                grad_ws.append(_uncut_kernel_grad(gw, plan, kernel_hw, dead))
                del gw
            if do_x:
                grad_x = _view_input_grad(grad_x, g, x_shape, fmt, w, stride, pad, dil, groups, q, x.dtype, flips[i])
            del g  # before the next view copies its own slice
        if relaid and do_w:
            # the re-laid-out input is not needed by the input gradient: with oneDNN's in-place accumulation its
            # buffer becomes the input gradient (zeroed; no second input-sized allocation), else it is freed
            if onednn and need_x and xc is not None and xc.data_ptr() != x.data_ptr():
                grad_x = xc.zero_()
            xc = None
    # the layouts the fake implementation promises; unneeded gradients are distinct empty tensors (no aliasing)
    grad_x = grad_x.contiguous(memory_format=fmt) if grad_x is not None else weight.new_empty(0)
    grad_w = torch.cat(grad_ws, dim=0).contiguous() if need_w else weight.new_empty(0)
    return grad_x, grad_w, grad_b


def _numel_of_slice(g: Tensor, start: int, stop: int) -> int:
    """Elements of ``g``'s shape with ``stop - start`` channels."""
    return g.shape[0] * (stop - start) * g.shape[2] * g.shape[3] * g.shape[4]


def _dense_like(buf: Tensor, like: Tensor, fmt: torch.memory_format) -> Tensor:
    """A tensor of ``like``'s shape, dense in ``fmt``, on the front of the flat buffer ``buf``."""
    n, c, d, h, w = like.shape
    front = buf[: n * c * d * h * w]
    if fmt == _CHANNELS_LAST:
        return front.view(n, d, h, w, c).permute(0, 4, 1, 2, 3)
    return front.view(n, c, d, h, w)


@torch.library.custom_op("monai_acs::split_views_conv", mutates_args=())
def _split_views_op(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int],
                    plans: List[int]) -> Tensor:
    return _split_views_forward(x, weight, bias, stride, _unflat_plans(plans))


@_split_views_op.register_fake
def _(x, weight, bias, stride, plans):
    w_start, w_stop, dim, _, _, groups, _, pad, _, dil = _unflat_plans(plans)[0]
    y = F.conv3d(x, weight[w_start:w_stop].unsqueeze(dim), None, stride, pad, dil, groups)
    return x.new_empty((y.shape[0], weight.shape[0], *y.shape[2:])).contiguous(memory_format=_computing_format(x))


@torch.library.custom_op("monai_acs::split_views_conv_backward", mutates_args=())
def _split_views_backward_op(grad_out: Tensor, x: Tensor, weight: Tensor, stride: List[int], plans: List[int],
                             need_x: bool, need_w: bool, need_b: bool) -> tuple[Tensor, Tensor, Tensor]:
    return _split_views_backward(grad_out, x, weight, stride, _unflat_plans(plans), need_x, need_w, need_b)


@_split_views_backward_op.register_fake
def _(grad_out, x, weight, stride, plans, need_x, need_w, need_b):
    grad_x = x.new_empty(x.shape).contiguous(memory_format=_computing_format(x)) if need_x else weight.new_empty(0)
    grad_w = weight.new_empty(weight.shape) if need_w else weight.new_empty(0)
    grad_b = weight.new_empty(weight.shape[:1]) if need_b else weight.new_empty(0)
    return grad_x, grad_w, grad_b


def _split_views_setup(ctx, inputs, output) -> None:
    x, weight, bias, stride, plans = inputs
    ctx.save_for_backward(x, weight)  # the input once, as a 2.5D conv keeps it
    ctx.stride, ctx.plans, ctx.has_bias = stride, plans, bias is not None


def _split_views_grad(ctx, grad_out: Tensor):
    x, weight = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    need_b = need_b and ctx.has_bias
    if torch.is_grad_enabled():  # create_graph=True (double backward, gradient penalties): differentiable ops
        return _split_views_grad_differentiable(grad_out, x, weight, ctx.stride, _unflat_plans(ctx.plans), need_x,
                                                need_w, need_b)
    grad_x, grad_w, grad_b = _split_views_backward_op(grad_out, x, weight, ctx.stride, ctx.plans, need_x, need_w,
                                                      need_b)
    return grad_x if need_x else None, grad_w if need_w else None, grad_b if need_b else None, None, None


def _split_views_grad_differentiable(grad_out: Tensor, x: Tensor, weight: Tensor, stride: List[int],
                                    plans: List[ViewPlan], need_x: bool, need_w: bool, need_b: bool):
    """The same gradients through plain autograd ops (per-view ``F.conv3d``), so that they have gradients too."""
    def views(x: Tensor, weight: Tensor) -> Tensor:
        return torch.cat([F.conv3d(x, weight[p[0]:p[1]].unsqueeze(p[2]), None, stride, p[7], p[9], p[5])
                          for p in plans], dim=1)

    grad_x, grad_w = _differentiable_grads(views, [(x, need_x), (weight, need_w)], grad_out)
    return grad_x, grad_w, grad_out.sum(dim=(0, 2, 3, 4)) if need_b else None, None, None


def _differentiable_grads(fn, inputs: List[tuple[Tensor, bool]], grad_out: Tensor) -> List[Optional[Tensor]]:
    """Gradients of ``fn(*tensors)`` for the tensors flagged as needed (None for the others), with a graph of their
    own: the ``create_graph=True`` backward of the fused nodes."""
    wanted = [t for t, need in inputs if need]
    grads: List[Tensor] = []
    if wanted:
        with torch.enable_grad():
            grads = list(torch.autograd.grad(fn(*[t for t, _ in inputs]), wanted, grad_out, create_graph=True))
    return [grads.pop(0) if need else None for _, need in inputs]


_split_views_op.register_autograd(_split_views_grad, setup_context=_split_views_setup)


@torch.jit.unused
def _fast_conv_views(
    x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int], plans: List[ViewPlan]
) -> Tensor:
    """Split (ACS) view convolutions as one autograd node that saves only the input and the 2D kernel."""
    return _split_views_op(x, weight, bias, stride, _flat_plans(plans))


def acs_conv3d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntOr3 = 1,
    padding: str | IntOr3 = 0,
    dilation: IntOr3 = 1,
    groups: int = 1,
    split: Sequence[int] | None = None,
    padding_mode: str = "zeros",
) -> Tensor:
    """ACS convolution: a 2D kernel split by output channel across the axial, coronal and sagittal views.

    Implements ACS paper Sec. III-A / Algorithm 1. The result equals ``F.conv3d`` with the block-sparse box
    kernel described in this module's docstring, with the same stride, padding and dilation.

    Args:
        input: (N, C_in, D, H, W) tensor.
        weight: 2D kernel (C_out, C_in / groups, kh, kw).
        bias: optional (C_out,) tensor. Default None.
        stride: int or (D, H, W) stride. Default 1.
        padding: int, (D, H, W) triple, ``"same"`` or ``"valid"``. Default 0.
        dilation: int or (D, H, W) dilation. Default 1.
        groups: convolution groups. Default 1.
        split: (axial, coronal, sagittal) output channel counts; default :func:`default_split`.
        padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``. Default ``"zeros"``.

    Returns:
        (N, C_out, D_out, H_out, W_out) tensor, views concatenated in axial, coronal, sagittal order.

    Raises:
        ValueError: on a non 5-D input, a channel mismatch, or an invalid split / padding.

    Examples:
        >>> x, w = torch.randn(1, 4, 5, 6, 7), torch.randn(6, 4, 3, 3)
        >>> acs_conv3d(x, w, padding=1).shape
        torch.Size([1, 6, 5, 6, 7])
    """
    _check_input(input, weight.shape[1], groups, "acs_conv3d")
    mode_pad, plans = plan_conv_views(
        weight.shape[-2:], input.shape[1], weight.shape[0], groups, stride, padding, dilation, padding_mode, split
    )
    return run_conv_views(input, weight, bias, list(_triple(stride, "stride")), mode_pad, padding_mode, plans)


def mean_acs_conv3d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntOr3 = 1,
    padding: str | IntOr3 = 0,
    dilation: IntOr3 = 1,
    groups: int = 1,
    view_weights: Tensor | None = None,
    padding_mode: str = "zeros",
) -> Tensor:
    """Mean-ACS (ACS paper Eq. 4) or, with ``view_weights``, Soft-ACS (Eq. 5).

    The full 2D kernel runs on all three views; the view outputs are averaged, or summed with the given
    per-view weights (Soft-ACS passes the softmax of its three learnable logits). The bias is added once.

    Args:
        input: (N, C_in, D, H, W) tensor.
        weight: 2D kernel (C_out, C_in / groups, kh, kw).
        bias: optional (C_out,) tensor. Default None.
        stride: int or (D, H, W) stride. Default 1.
        padding: int, (D, H, W) triple, ``"same"`` or ``"valid"``. Default 0.
        dilation: int or (D, H, W) dilation. Default 1.
        groups: convolution groups. Default 1.
        view_weights: optional (3,) weights for (axial, coronal, sagittal); default 1/3 each.
        padding_mode: as in :func:`acs_conv3d`. Default ``"zeros"``.

    Returns:
        (N, C_out, D_out, H_out, W_out) tensor.

    Examples:
        >>> mean_acs_conv3d(torch.randn(1, 2, 4, 5, 6), torch.randn(3, 2, 3, 3), padding=1).shape
        torch.Size([1, 3, 4, 5, 6])
    """
    _check_input(input, weight.shape[1], groups, "mean_acs_conv3d")
    mode_pad, plans = plan_conv_views(
        weight.shape[-2:], input.shape[1], weight.shape[0], groups, stride, padding, dilation, padding_mode, mean=True
    )
    stride3 = list(_triple(stride, "stride"))
    return run_conv_views(input, weight, bias, stride3, mode_pad, padding_mode, plans, True, view_weights)


def plan_transposed_views(
    kernel_hw: Sequence[int],
    in_channels: int,
    out_channels: int,
    groups: int,
    stride: IntOr3,
    padding: IntOr3,
    output_padding: IntOr3,
    dilation: IntOr3,
    split: Sequence[int] | None = None,
    mean: bool = False,
) -> list[TransposedPlan]:
    """Precompute the per-view transposed convolutions of a transposed ACS-family layer (see
    :func:`acs_conv_transpose3d`). Axes where a view kernel is smaller than the box run unpadded and are
    re-aligned afterwards with one ``F.pad`` (negative values crop)."""
    _triple(stride, "stride")  # checked here; the views run with the caller's stride
    dilation3 = _triple(dilation, "dilation")
    padding3, out_pad3 = _triple(padding, "padding"), _triple(output_padding, "output_padding")
    box = box_kernel_size(kernel_hw)
    per_group_out, in_per_group = out_channels // groups, in_channels // groups
    if mean:
        views = [(view, 0, out_channels) for view in VIEWS]
    else:
        parts = default_split(out_channels, groups) if split is None else _check_split(split, out_channels, groups)
        starts = [0, parts[0], parts[0] + parts[1]]
        views = [(view, s, s + n) for view, s, n in zip(VIEWS, starts, parts) if n]
    plans: list[TransposedPlan] = []
    for view, o_start, o_stop in views:
        kernel = view_kernel_size(kernel_hw, view)
        pad, out_pad, dil, fix = [], [], [], []
        for big, k, p, op, d in zip(box, kernel, padding3, out_pad3, dilation3):
            if k == big:
                pad.append(p), out_pad.append(op), dil.append(d), fix.append((0, 0))
                continue
            left = (big - k) // 2 * d - p
            pad.append(0), out_pad.append(0), dil.append(d if k > 1 else 1)
            fix.append((left, d * (big - k) - 2 * p + op - left))
        if groups == 1 or mean:
            w_in, w_out, view_groups = (0, in_channels), (o_start, o_stop), groups
        else:
            g0, g1 = o_start // per_group_out, o_stop // per_group_out
            w_in, w_out, view_groups = (g0 * in_per_group, g1 * in_per_group), (0, per_group_out), g1 - g0
        plans.append((*w_in, *w_out, 2 + _VIEW_AXIS[view], view_groups, pad, out_pad, dil, _fpad_order(fix)))
    return plans


def run_transposed_views(
    input: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int], plans: List[TransposedPlan], mean: bool
) -> Tensor:
    """Run the views planned by :func:`plan_transposed_views` (TorchScript-compatible)."""
    outputs: List[Tensor] = []
    for plan in plans:
        w_in_start, w_in_stop, w_out_start, w_out_stop, dim, groups, pad, out_pad, dil, fix = plan
        xin = input
        if w_in_start != 0 or w_in_stop != input.shape[1]:
            xin = input[:, w_in_start:w_in_stop]
        w = weight[w_in_start:w_in_stop, w_out_start:w_out_stop].unsqueeze(dim)
        y = F.conv_transpose3d(xin, w, None, stride, pad, out_pad, groups, dil)
        if fix[0] != 0 or fix[1] != 0 or fix[2] != 0 or fix[3] != 0 or fix[4] != 0 or fix[5] != 0:
            y = F.pad(y, fix)
        outputs.append(y / 3.0 if mean else y)
    if mean:
        out = outputs[0] + outputs[1] + outputs[2]
    elif len(outputs) == 1:
        out = outputs[0]
    else:
        out = torch.cat(outputs, dim=1)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1, 1)
    return _keep_channels_last(out, input)


def acs_conv_transpose3d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntOr3 = 1,
    padding: IntOr3 = 0,
    output_padding: IntOr3 = 0,
    groups: int = 1,
    dilation: IntOr3 = 1,
    split: Sequence[int] | None = None,
    mean: bool = False,
) -> Tensor:
    """Transposed ACS convolution: ``F.conv_transpose3d`` with the block-sparse box kernel of a 2D kernel.

    Args:
        input: (N, C_in, D, H, W) tensor.
        weight: 2D transposed kernel (C_in, C_out / groups, kh, kw).
        bias: optional (C_out,) tensor. Default None.
        stride: int or (D, H, W). Default 1.
        padding: int or (D, H, W), applied to the box kernel. Default 0.
        output_padding: int or (D, H, W). Default 0.
        groups: convolution groups. Default 1.
        dilation: int or (D, H, W). Default 1.
        split: (axial, coronal, sagittal) output channel counts; ``(C_out, 0, 0)`` gives the 2.5D transposed conv.
        mean: average the full kernel over the three views instead of splitting (Mean-ACS). Default False.

    Returns:
        (N, C_out, D_out, H_out, W_out) tensor.

    Examples:
        >>> acs_conv_transpose3d(torch.randn(1, 4, 3, 4, 5), torch.randn(4, 2, 2, 2), stride=2).shape
        torch.Size([1, 2, 6, 8, 10])
    """
    if input.dim() != 5 or input.shape[1] != weight.shape[0]:
        raise ValueError(
            f"acs_conv_transpose3d expects a 5-D input with {weight.shape[0]} channels, got {tuple(input.shape)}"
        )
    out_channels = weight.shape[1] * groups
    plans = plan_transposed_views(
        weight.shape[-2:], weight.shape[0], out_channels, groups, stride, padding, output_padding, dilation, split, mean
    )
    return run_transposed_views(input, weight, bias, list(_triple(stride, "stride")), plans, mean)


def a3d_fuse(input: Tensor, fusion: Tensor) -> Tensor:
    """A3D asymmetric context fusion (A3D paper Eq. 1, Algorithm 1): per channel, mix the D slices.

    ``out[n, c, k] = sum_d fusion[d, k, c] * input[n, c, d]``.

    Args:
        input: (N, C, D, H, W) tensor.
        fusion: (D, D, C) fusion weights P.

    Returns:
        (N, C, D, H, W) tensor.

    Raises:
        ValueError: if the input depth or channels do not match ``fusion``.

    Examples:
        >>> x = torch.randn(1, 2, 3, 4, 4)
        >>> torch.allclose(a3d_fuse(x, torch.eye(3)[:, :, None].repeat(1, 1, 2)), x)
        True
    """
    if input.dim() != 5:
        raise ValueError(f"a3d_fuse expects a 5-D input (N, C, D, H, W), got shape {tuple(input.shape)}")
    depth, _, channels = fusion.shape
    if input.shape[2] != depth or input.shape[1] != channels:
        raise ValueError(
            f"a3d_fuse: fusion weights are built for depth D={depth} and C={channels} channels, "
            f"got input of shape {tuple(input.shape)} (N, C, D, H, W)"
        )
    return _a3d_mix(input, fusion)


def _a3d_mix(input: Tensor, fusion: Tensor) -> Tensor:
    """The unchecked core of :func:`a3d_fuse` (TorchScript-ready): one batched matrix product.

    Per (n, c) the (D, H*W) slice matrix is multiplied by ``fusion[:, :, c]`` transposed, on the contiguous
    (N, C, D, H*W) view of the input: this reads and writes each element once (``torch.einsum`` permutes the
    channel axis to the front and back, several times slower on CPU). A channels_last_3d input is made
    contiguous first; the result is contiguous.
    """
    n, c, d, h, w = input.shape
    # the (C, D, D) matrices dense: a permuted view sends CPU matmul to one small gemm per (n, c) (6-30x slower
    # at DeepLesion's 24 x 24 and smaller planes, docs/benchmarks.md); the copy is C * D^2 numbers
    out = torch.matmul(fusion.permute(2, 1, 0).contiguous(), input.reshape(n, c, d, h * w))
    return out.view(n, c, d, h, w)


def a3d_fast_eligible(x: Tensor, mode_pad: List[int], plans: List[ViewPlan]) -> bool:
    """The plain A3D layer (zeros padding, one full-width 1 x kh x kw conv, groups 1), in eager mode."""
    if torch.jit.is_tracing() or len(mode_pad) > 0 or len(plans) != 1 or _autocast_on(x):
        return False
    return _plain_view(x, plans[0])


class _MixThenConv(torch.autograd.Function):
    """A3D's slice mix and the 2.5D conv after it as one autograd node that saves only the layer's input.

    Composed of two autograd ops, the mix would save the input and the conv the mixed tensor: two activations of
    the input's size per layer. Here backward recomputes the mix (one batched matmul) instead, so the layer keeps
    what a 2.5D conv keeps: its input (a contiguous copy of it if it came channels_last_3d).
    """

    @staticmethod
    def forward(ctx, x: Tensor, fusion: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int],
                plan: ViewPlan):
        _, _, dim, _, _, groups, _, pad, _, dil = plan
        x = x.contiguous()  # the mix's layout: a channels_last_3d input is copied once, here, and that copy is kept
        # the conv runs in the mix's (contiguous) layout and answers in it: re-laying the mixed tensor out
        # channels-last and the next A3D layer's input back cost more than the conv gains (docs/operators.md)
        mixed = _a3d_mix(x, fusion)
        y = _onednn_conv3d(mixed, weight.unsqueeze(dim), bias, stride, pad, dil, groups)
        del mixed
        ctx.save_for_backward(x, fusion, weight)
        ctx.stride, ctx.plan, ctx.has_bias = stride, plan, bias is not None
        return y

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, fusion, weight = ctx.saved_tensors
        need_x, need_p, need_w, need_b = ctx.needs_input_grad[:4]
        need_b = need_b and ctx.has_bias
        _, _, dim, _, _, groups, _, pad, _, dil = ctx.plan
        if torch.is_grad_enabled():  # create_graph=True (double backward): the same gradients, differentiable
            grads = _differentiable_grads(
                lambda x, p, w: F.conv3d(_a3d_mix(x, p), w.unsqueeze(dim), None, ctx.stride, pad, dil, groups),
                [(x, need_x), (fusion, need_p), (weight, need_w)], grad_out,
            )
            return (*grads, grad_out.sum(dim=(0, 2, 3, 4)) if need_b else None, None, None)
        mixed = _a3d_mix(x, fusion)
        grad_out = grad_out.contiguous()  # the conv's backward in the layout its forward ran in
        need_mixed = need_x or need_p
        grad_m, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad_out, mixed, weight.unsqueeze(dim), [weight.shape[0]] if need_b else None, ctx.stride, pad, dil,
            False, [0, 0, 0], groups, [need_mixed, need_w, need_b],
        )
        grad_x: Optional[Tensor] = None
        grad_p: Optional[Tensor] = None
        if need_mixed:
            n, c, d, h, w = x.shape
            g = grad_m.contiguous().view(n, c, d, h * w)  # the mix's layout
            if need_p:  # dP[d, k, c] = sum over n and pixels of x[n, c, d] * g[n, c, k]
                grad_p = torch.matmul(x.reshape(n, c, d, h * w), g.transpose(-1, -2)).sum(0).permute(1, 2, 0)
            if need_x:  # dx[n, c, d] = sum_k P[d, k, c] g[n, c, k], written over the recomputed mix (read by the
                # conv's backward only): no fresh input-sized buffer, whose page faults cost more than the matmul
                grad_x = torch.matmul(fusion.permute(2, 0, 1).contiguous(), g, out=mixed.view(n, c, d, h * w))
                grad_x = grad_x.view(n, c, d, h, w)
        del mixed
        return (grad_x, grad_p, grad_w.squeeze(dim) if need_w else None, grad_b if need_b else None, None, None)


@torch.jit.unused
def _fast_a3d(x: Tensor, fusion: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int],
              plan: ViewPlan) -> Tensor:
    return _MixThenConv.apply(x, fusion, weight, bias, stride, plan)


def tsm_shift(input: Tensor, split: Sequence[int] | None = None) -> Tensor:
    """TSM shift along depth (A3D paper Sec. 2.1 (e)): the first channel part moves up, the second down.

    "Up" means slice ``d`` takes the value of slice ``d + 1`` (the last slice becomes zero); "down" means slice
    ``d`` takes slice ``d - 1`` (the first becomes zero); the third part is kept.

    Args:
        input: (N, C, D, H, W) tensor.
        split: (up, down, kept) channel counts summing to C; default :func:`default_split` of C.

    Returns:
        Tensor of the same shape.

    Examples:
        >>> tsm_shift(torch.arange(3.0).view(1, 1, 3, 1, 1).repeat(1, 3, 1, 1, 1)).flatten().tolist()
        [1.0, 2.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 2.0]
    """
    if input.dim() != 5:
        raise ValueError(f"tsm_shift expects a 5-D input (N, C, D, H, W), got shape {tuple(input.shape)}")
    channels = input.shape[1]
    up, down, _ = default_split(channels) if split is None else _check_split(split, channels, 1)
    return shift_depth(input, up, down)


def shift_depth(input: Tensor, up: int, down: int) -> Tensor:
    """Shift channels ``[0, up)`` up and ``[up, up + down)`` down by one slice along depth (TorchScript-ready)."""
    pieces: List[Tensor] = []
    if up > 0:
        pieces.append(F.pad(input[:, :up, 1:], [0, 0, 0, 0, 0, 1]))
    if down > 0:
        pieces.append(F.pad(input[:, up : up + down, :-1], [0, 0, 0, 0, 1, 0]))
    if up + down < input.shape[1]:
        pieces.append(input[:, up + down :])
    if len(pieces) == 1:
        return pieces[0]
    return torch.cat(pieces, dim=1)


def p3d_temporal(input: Tensor, weight: Tensor) -> Tensor:
    """The depth convolution of P3D: a (kD, 1, 1) convolution, stride 1, depth-preserving ('same') padding.

    Args:
        input: (N, C, D, H, W) tensor.
        weight: (C, C, kD, 1, 1) kernel.

    Returns:
        Tensor of the same shape as ``input``.
    """
    return F.conv3d(input, weight, None, 1, "same")
