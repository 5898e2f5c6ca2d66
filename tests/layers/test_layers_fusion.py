"""I3D, P3D, TSM and A3D (A3D paper Sec. 2.1-2.2) against independent loop-based references.

Every reference here is written with explicit python loops over slices / channels and ``F.conv2d`` on single
slices; none calls ``monai_acs`` helpers.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from monai_acs.layers import A3DConv, Conv2p5d, I3DConv, P3DConv, TSMConv, a3d_fuse, inflate_conv_weight, tsm_shift

DT = torch.float64
TOL = {"rtol": 1e-9, "atol": 1e-10}


def _triple(v):
    return (v, v, v) if isinstance(v, int) else tuple(v)


def ref_slicewise_2p5d(x, w, bias, stride=1, padding=1, dilation=1, groups=1):
    """2.5D conv (square kernel, box geometry): F.conv2d on the depth slices visited by the box's centre plane."""
    kh = w.shape[-2]
    (sd, sh, sw), (pd, ph, pw), (dd, dh, dw) = _triple(stride), _triple(padding), _triple(dilation)
    xp = F.pad(x, (0, 0, 0, 0, pd, pd))
    lead = (kh - 1) // 2 * dd
    n_out = (xp.shape[2] - (dd * (kh - 1) + 1)) // sd + 1
    return torch.stack(
        [F.conv2d(xp[:, :, i * sd + lead], w, bias, (sh, sw), (ph, pw), (dh, dw), groups) for i in range(n_out)], 2
    )


def _leaves(*tensors):
    return [t.detach().clone().requires_grad_(True) for t in tensors]


def _assert_same_forward_and_grads(fn_test, fn_ref, inputs):
    a, b = _leaves(*inputs), _leaves(*inputs)
    out_t, out_r = fn_test(*a), fn_ref(*b)
    assert out_t.shape == out_r.shape, (out_t.shape, out_r.shape)
    torch.testing.assert_close(out_t, out_r, **TOL)
    g = torch.randn_like(out_r)
    for i, (gt, gr) in enumerate(zip(torch.autograd.grad(out_t, a, g), torch.autograd.grad(out_r, b, g))):
        torch.testing.assert_close(gt, gr, **TOL, msg=lambda m, i=i: f"gradient of input {i}: {m}")
    return out_t


def _call(layer, names):
    def fn(x, *params):
        return torch.func.functional_call(layer, dict(zip(names, params)), (x,))

    return fn


# ---------------------------------------------------------------------------------------------------------------------
# I3D
# ---------------------------------------------------------------------------------------------------------------------
def ref_i3d(x, w3, bias, stride, padding, dilation, groups=1):
    """Sum over kernel depth offsets t of F.conv2d(input slice i*s + t*d, w3[:, :, t]) (+ bias once)."""
    kd = w3.shape[2]
    (sd, sh, sw), (pd, ph, pw), (dd, dh, dw) = _triple(stride), _triple(padding), _triple(dilation)
    xp = F.pad(x, (0, 0, 0, 0, pd, pd))
    n_out = (xp.shape[2] - (dd * (kd - 1) + 1)) // sd + 1
    slices = []
    for i in range(n_out):
        acc = 0
        for t in range(kd):
            acc = acc + F.conv2d(xp[:, :, i * sd + t * dd], w3[:, :, t], None, (sh, sw), (ph, pw), (dh, dw), groups)
        if bias is not None:
            acc = acc + bias.view(1, -1, 1, 1)
        slices.append(acc)
    return torch.stack(slices, 2)


@pytest.mark.parametrize(
    "k, stride, padding, dilation, groups",
    [(3, 1, 1, 1, 1), (3, 2, 1, 1, 1), (3, 1, 0, 1, 2), (3, 1, 2, 2, 1), (5, 2, 2, 1, 1), (2, 1, 0, 1, 1)],
)
def test_i3d_matches_slice_sum_and_inflated_conv3d(k, stride, padding, dilation, groups):
    conv2d = nn.Conv2d(4, 6, k, stride, padding, dilation, groups, dtype=DT)
    layer = I3DConv.from_conv2d(conv2d)
    assert isinstance(layer, nn.Conv3d)
    w3 = inflate_conv_weight(conv2d.weight, k)
    assert layer.weight.shape == (6, 4 // groups, k, k, k)
    torch.testing.assert_close(layer.weight, w3, **TOL)
    torch.testing.assert_close(w3.sum(2), conv2d.weight, **TOL)  # inflation sums back to the 2D kernel
    # inflation: every depth slice is the 2D kernel / K
    for t in range(k):
        torch.testing.assert_close(w3[:, :, t] * k, conv2d.weight, **TOL)
    x = torch.randn(2, 4, 7, 8, 9, dtype=DT)

    def ref(x_, w_, b_):
        return ref_i3d(x_, w_, b_, stride, padding, dilation, groups)

    out = _assert_same_forward_and_grads(_call(layer, ["weight", "bias"]), ref, [x, w3, conv2d.bias])
    torch.testing.assert_close(out, F.conv3d(x, w3, conv2d.bias, stride, padding, dilation, groups), **TOL)


def test_i3d_non_square_kernel():
    conv2d = nn.Conv2d(3, 2, (3, 1), padding=(1, 0), dtype=DT)
    layer = I3DConv.from_conv2d(conv2d)
    assert layer.weight.shape == (2, 3, 3, 3, 1)
    x = torch.randn(1, 3, 5, 6, 7, dtype=DT)
    torch.testing.assert_close(layer(x), ref_i3d(x, layer.weight, layer.bias, 1, (1, 1, 0), 1), **TOL)


def test_i3d_on_depth_constant_volume_equals_2d_conv():
    conv2d = nn.Conv2d(3, 5, 3, padding=1, dtype=DT)
    layer = I3DConv.from_conv2d(conv2d)
    x2d = torch.randn(2, 3, 8, 9, dtype=DT)
    x = x2d.unsqueeze(2).expand(-1, -1, 6, -1, -1).contiguous()
    out = layer(x)
    expected = conv2d(x2d)
    for d in range(1, 5):  # interior slices: the whole inflated kernel sees the same slice
        torch.testing.assert_close(out[:, :, d], expected, **TOL)
    assert not torch.allclose(out[:, :, 0], expected)  # the border slice sees depth zero padding


# ---------------------------------------------------------------------------------------------------------------------
# P3D
# ---------------------------------------------------------------------------------------------------------------------
def ref_depth_conv_loop(y, temporal):
    """Explicit depth convolution, 'same' padding (left (K-1)//2): out[:, o, d] = sum_c,t T[o,c,t] y[:, c, d+t-l]."""
    co, ci, k = temporal.shape[:3]
    left = (k - 1) // 2
    depth = y.shape[2]
    out = torch.zeros(y.shape[0], co, *y.shape[2:], dtype=y.dtype)
    for d in range(depth):
        for t in range(k):
            src = d + t - left
            if not 0 <= src < depth:
                continue
            for o in range(co):
                for c in range(ci):
                    out[:, o, d] = out[:, o, d] + temporal[o, c, t, 0, 0] * y[:, c, src]
    return out


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize("k, stride, padding", [(3, 1, 1), (3, (1, 2, 2), 1), (2, 1, "same")])
def test_p3d_matches_slicewise_then_loop_depth_conv(k, stride, padding):
    layer = P3DConv(3, 4, k, stride=stride, padding=padding, dtype=DT)
    assert layer.temporal_weight.shape == (4, 4, k, 1, 1)
    x = torch.randn(2, 3, 5, 6, 7, dtype=DT)
    w, b = torch.randn(4, 3, k, k, dtype=DT), torch.randn(4, dtype=DT)
    temporal = torch.randn(4, 4, k, 1, 1, dtype=DT)

    def ref(x_, w_, b_, t_):
        if padding == "same":  # box (k, k, k), lower-centre: pad (k-1)//2 before, the rest after, per axis
            lo, hi = (k - 1) // 2, k - 1 - (k - 1) // 2
            xp = F.pad(x_, (lo, hi, lo, hi, lo, hi))
            y = ref_slicewise_2p5d(xp, w_, b_, stride, 0)
        else:
            y = ref_slicewise_2p5d(x_, w_, b_, stride, padding)
        return ref_depth_conv_loop(y, t_)

    _assert_same_forward_and_grads(_call(layer, ["weight", "bias", "temporal_weight"]), ref, [x, w, b, temporal])


def test_fresh_p3d_equals_conv2p5d_exactly():
    conv2d = nn.Conv2d(3, 4, 3, stride=2, padding=1)
    p3d, c2p5d = P3DConv.from_conv2d(conv2d), Conv2p5d.from_conv2d(conv2d)
    expected = torch.zeros(4, 4, 3, 1, 1)
    expected[range(4), range(4), 1] = 1.0  # [0, 1, 0] on the channel diagonal
    assert torch.equal(p3d.temporal_weight, expected)
    x = torch.randn(2, 3, 6, 8, 10)
    torch.testing.assert_close(p3d(x), c2p5d(x), rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# TSM
# ---------------------------------------------------------------------------------------------------------------------
def ref_shift_loop(x, split):
    """Channels [0, up): slice d takes d+1 (last zero); [up, up+down): d takes d-1 (first zero); rest kept."""
    up, down, _ = split
    out = torch.zeros_like(x)
    depth = x.shape[2]
    for c in range(x.shape[1]):
        for d in range(depth):
            if c < up:
                src = d + 1
            elif c < up + down:
                src = d - 1
            else:
                src = d
            if 0 <= src < depth:
                out[:, c, d] = x[:, c, src]
    return out


def test_tsm_shift_directions_on_a_ramp():
    x = torch.arange(4.0).view(1, 1, 4, 1, 1).repeat(1, 3, 1, 1, 1)
    out = tsm_shift(x, (1, 1, 1))[0, :, :, 0, 0]
    assert out.tolist() == [[1, 2, 3, 0], [0, 0, 1, 2], [0, 1, 2, 3]]


@pytest.mark.parametrize(
    "cin, shift_split, expected_split",
    [(3, None, (1, 1, 1)), (4, None, (2, 1, 1)), (5, (0, 2, 3), None), (4, (4, 0, 0), None), (2, None, (1, 1, 0))],
)
def test_tsm_matches_loop_shift_then_slicewise_conv(cin, shift_split, expected_split):
    layer = TSMConv(cin, 3, 3, padding=1, shift_split=shift_split, dtype=DT)
    split = tuple(layer.shift_split)
    assert split == (expected_split if shift_split is None else tuple(shift_split))
    x = torch.randn(2, cin, 5, 6, 7, dtype=DT)
    torch.testing.assert_close(tsm_shift(x, split), ref_shift_loop(x, split), rtol=0, atol=0)
    w, b = torch.randn(3, cin, 3, 3, dtype=DT), torch.randn(3, dtype=DT)

    def ref(x_, w_, b_):
        return ref_slicewise_2p5d(ref_shift_loop(x_, split), w_, b_)

    _assert_same_forward_and_grads(_call(layer, ["weight", "bias"]), ref, [x, w, b])


# ---------------------------------------------------------------------------------------------------------------------
# A3D
# ---------------------------------------------------------------------------------------------------------------------
def ref_a3d_fuse_loop(x, fusion):
    """out[:, c, k] = sum_d P[d, k, c] x[:, c, d], one channel and one output slice at a time."""
    _n, c, depth = x.shape[:3]
    out = torch.zeros_like(x)
    for ch in range(c):
        for k in range(depth):
            for d in range(depth):
                out[:, ch, k] = out[:, ch, k] + fusion[d, k, ch] * x[:, ch, d]
    return out


@pytest.mark.parametrize("stride, padding", [(1, 1), ((1, 2, 2), 1), (1, (0, 1, 1))])
def test_a3d_matches_loop_fusion_then_slicewise_conv(stride, padding):
    depth = 4
    layer = A3DConv(3, 5, 3, stride=stride, padding=padding, depth=depth, dtype=DT)
    assert layer.fusion.shape == (depth, depth, 3)
    x = torch.randn(2, 3, depth, 6, 7, dtype=DT)
    w, b = torch.randn(5, 3, 3, 3, dtype=DT), torch.randn(5, dtype=DT)
    fusion = torch.randn(depth, depth, 3, dtype=DT)  # asymmetric, far from identity

    def ref(x_, w_, b_, p_):
        return ref_slicewise_2p5d(ref_a3d_fuse_loop(x_, p_), w_, b_, stride, padding)

    _assert_same_forward_and_grads(_call(layer, ["weight", "bias", "fusion"]), ref, [x, w, b, fusion])
    torch.testing.assert_close(a3d_fuse(x, fusion), ref_a3d_fuse_loop(x, fusion), **TOL)


def test_a3d_fusion_init_is_identity_plus_uniform_noise():
    layer = A3DConv(16, 4, 3, padding=1, depth=7)
    eye = torch.eye(7)[:, :, None]
    delta = layer.fusion.detach() - eye
    assert delta.abs().max() <= 0.1
    assert delta.abs().max() > 0.05  # 784 draws of U(-0.1, 0.1): the max is near 0.1, not degenerate
    assert not torch.equal(layer.fusion.detach(), eye.expand_as(layer.fusion))
    assert (delta > 0).any() and (delta < 0).any()
    # the perturbation differs per channel (each channel gets its own matrix)
    assert not torch.equal(delta[:, :, 0], delta[:, :, 1])
    assert A3DConv(2, 2, 3, depth=3, init_noise=0.0).fusion.equal(torch.eye(3)[:, :, None].expand(3, 3, 2))


def test_a3d_near_identity_is_close_to_no_fusion():
    conv2d = nn.Conv2d(3, 4, 3, padding=1)
    a3d, c2p5d = A3DConv.from_conv2d(conv2d, depth=5), Conv2p5d.from_conv2d(conv2d)
    x = torch.randn(1, 3, 5, 6, 7)
    with torch.no_grad():
        a3d.fusion.copy_(torch.eye(5)[:, :, None].expand(5, 5, 3))
    torch.testing.assert_close(a3d(x), c2p5d(x), rtol=1e-5, atol=1e-5)


def test_a3d_depth_mismatch_raises_with_shape():
    layer = A3DConv(2, 3, 3, padding=1, depth=5)
    with pytest.raises(ValueError, match=r"\(1, 2, 4, 6, 7\)") as info:
        layer(torch.randn(1, 2, 4, 6, 7))
    assert "5" in str(info.value)
    with pytest.raises(ValueError, match=r"\(1, 2, 4, 6, 7\)"):
        a3d_fuse(torch.randn(1, 2, 4, 6, 7), torch.randn(5, 5, 2))
