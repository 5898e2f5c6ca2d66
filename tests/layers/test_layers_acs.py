"""ACS-family operators against an independent reference: ``F.conv3d`` with a block-sparse box kernel.

The reference here never calls ``monai_acs`` helpers. It builds the dense 3D kernel by hand: a 2D kernel of size
(kh, kw) lives in a box of size (kh, max(kh, kw), kw); each output channel's kernel is written on the centre plane of
its view (offset ``(box - k) // 2`` on every axis):

    axial    (1,  kh, kw)   rows -> H, cols -> W
    coronal  (kh, 1,  kw)   rows -> D, cols -> W
    sagittal (kh, kw, 1 )   rows -> D, cols -> H
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from monai_acs.layers import (
    ACSConv,
    ACSConvTranspose,
    Conv2p5d,
    MeanACSConv,
    SoftACSConv,
    acs_conv3d,
    acs_conv_transpose3d,
    default_split,
    mean_acs_conv3d,
)

DT = torch.float64
TOL = {"rtol": 1e-9, "atol": 1e-10}
VIEWS = ("axial", "coronal", "sagittal")


# ---------------------------------------------------------------------------------------------------------------------
# independent reference
# ---------------------------------------------------------------------------------------------------------------------
def _triple(v):
    return (v, v, v) if isinstance(v, int) else tuple(v)


def ref_box(kh: int, kw: int) -> tuple[int, int, int]:
    return (kh, max(kh, kw), kw)


def ref_embed(w2d: torch.Tensor, view: str) -> torch.Tensor:
    """(I, kh, kw) 2D kernel -> (I, box_d, box_h, box_w) kernel with the view kernel on its centre plane."""
    kh, kw = w2d.shape[-2:]
    bd, bh, bw = ref_box(kh, kw)
    out = w2d.new_zeros(w2d.shape[0], bd, bh, bw)
    if view == "axial":  # (1, kh, kw): D offset (bd-1)//2, H offset (bh-kh)//2, W offset 0
        d0, h0 = (bd - 1) // 2, (bh - kh) // 2
        out[:, d0, h0 : h0 + kh, :] = w2d
    elif view == "coronal":  # (kh, 1, kw): D offset 0, H offset (bh-1)//2, W offset 0
        out[:, :, (bh - 1) // 2, :] = w2d
    elif view == "sagittal":  # (kh, kw, 1): D offset 0, H offset (bh-kw)//2, W offset (bw-1)//2
        h0 = (bh - kw) // 2
        out[:, :, h0 : h0 + kw, (bw - 1) // 2] = w2d
    else:
        raise AssertionError(view)
    return out


def ref_views(split) -> list[str]:
    return [v for v, n in zip(VIEWS, split) for _ in range(n)]


def ref_dense_kernel(w: torch.Tensor, views: list[str]) -> torch.Tensor:
    """(O, I/g, kh, kw) -> (O, I/g, box) block-sparse kernel, output channel o on the plane of ``views[o]``."""
    return torch.stack([ref_embed(w[o], views[o]) for o in range(w.shape[0])])


def ref_conv3d(x, dense, bias, stride, padding, dilation, groups, padding_mode="zeros"):
    """``F.conv3d``; for non-zero padding modes: ``F.pad`` with the mode, then an unpadded ``F.conv3d``."""
    if padding_mode == "zeros":
        return F.conv3d(x, dense, bias, stride, padding, dilation, groups)
    box, dil = dense.shape[-3:], _triple(dilation)
    if padding == "valid":
        pairs = [(0, 0)] * 3
    elif padding == "same":
        pairs = [(d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for k, d in zip(box, dil)]
    else:
        pairs = [(p, p) for p in _triple(padding)]
    flat = [v for lo_hi in reversed(pairs) for v in lo_hi]  # F.pad order: W, H, D
    return F.conv3d(F.pad(x, flat, mode=padding_mode), dense, bias, stride, 0, dilation, groups)


def ref_acs(x, w, bias, split, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
    return ref_conv3d(x, ref_dense_kernel(w, ref_views(split)), bias, stride, padding, dilation, groups, padding_mode)


def ref_mean_acs(x, w, bias, view_weights=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
    """Sum over the three views of weight[v] * conv3d(box kernel with the FULL 2D kernel on view v's plane)."""
    out = 0
    for i, view in enumerate(VIEWS):
        dense = ref_dense_kernel(w, [view] * w.shape[0])
        y = ref_conv3d(x, dense, bias, stride, padding, dilation, groups, padding_mode)
        out = out + (y / 3 if view_weights is None else view_weights[i] * y)
    return out


def ref_slicewise_2p5d(x, w, bias, stride, padding, dilation, groups=1):
    """2.5D conv: F.conv2d on the depth slices the box kernel's centre plane visits (square kernels)."""
    kh = w.shape[-2]
    (sd, sh, sw), (pd, ph, pw), (dd, dh, dw) = _triple(stride), _triple(padding), _triple(dilation)
    xp = F.pad(x, (0, 0, 0, 0, pd, pd))
    lead = (kh - 1) // 2 * dd
    n_out = (xp.shape[2] - (dd * (kh - 1) + 1)) // sd + 1
    slices = [F.conv2d(xp[:, :, i * sd + lead], w, bias, (sh, sw), (ph, pw), (dh, dw), groups) for i in range(n_out)]
    return torch.stack(slices, dim=2)


def _leaves(*tensors):
    return [t.detach().clone().requires_grad_(True) if t is not None else None for t in tensors]


def _assert_same_forward_and_grads(fn_test, fn_ref, inputs):
    """Run both on fresh leaf copies of ``inputs``; compare outputs and the gradients of every input."""
    a, b = _leaves(*inputs), _leaves(*inputs)
    out_t, out_r = fn_test(*a), fn_ref(*b)
    assert out_t.shape == out_r.shape, (out_t.shape, out_r.shape)
    torch.testing.assert_close(out_t, out_r, **TOL)
    grad_out = torch.randn_like(out_r)
    used = [i for i, t in enumerate(a) if t is not None]
    g_t = torch.autograd.grad(out_t, [a[i] for i in used], grad_out)
    g_r = torch.autograd.grad(out_r, [b[i] for i in used], grad_out)
    for i, gt, gr in zip(used, g_t, g_r):
        torch.testing.assert_close(gt, gr, **TOL, msg=lambda m, i=i: f"gradient of input {i}: {m}")
    return out_t


# ---------------------------------------------------------------------------------------------------------------------
# sanity of the reference itself (a reference that is wrong in the same way as the code would hide bugs)
# ---------------------------------------------------------------------------------------------------------------------
def test_reference_axial_is_2d_conv_per_slice():
    x, w = torch.randn(1, 2, 4, 5, 6, dtype=DT), torch.randn(3, 2, 3, 3, dtype=DT)
    out = ref_acs(x, w, None, (3, 0, 0), padding=1)
    per_slice = torch.stack([F.conv2d(x[:, :, d], w, padding=1) for d in range(4)], 2)
    torch.testing.assert_close(out, per_slice, **TOL)


def test_reference_views_use_the_right_axes():
    # coronal view: rows run along D, columns along W; sagittal: rows along D, columns along H
    w = torch.randn(1, 1, 3, 3, dtype=DT)
    cor, sag = ref_embed(w[0], "coronal"), ref_embed(w[0], "sagittal")
    torch.testing.assert_close(cor[0, :, 1, :], w[0, 0])
    torch.testing.assert_close(sag[0, :, :, 1], w[0, 0])
    assert torch.count_nonzero(cor) == torch.count_nonzero(sag) == torch.count_nonzero(w) == 9
    # non-square 1x7: box (1, 7, 7), axial kernel in the H centre row
    w17 = torch.randn(1, 1, 1, 7, dtype=DT)
    ax = ref_embed(w17[0], "axial")
    assert ax.shape == (1, 1, 7, 7)
    torch.testing.assert_close(ax[0, 0, 3], w17[0, 0, 0])


# ---------------------------------------------------------------------------------------------------------------------
# ACS grid
# ---------------------------------------------------------------------------------------------------------------------
def _case(case_id, **kw):
    base = {
        "cin": 4,
        "cout": 6,
        "k": 3,
        "size": (5, 6, 7),
        "stride": 1,
        "padding": 1,
        "dilation": 1,
        "groups": 1,
        "bias": True,
        "padding_mode": "zeros",
        "split": None,
        "expected_split": None,
    }
    unknown = set(kw) - set(base)
    assert not unknown, unknown
    base.update(kw)
    return pytest.param(base, id=case_id)


ACS_CASES = [
    _case("base"),
    _case("uneven-7x9x11", size=(7, 9, 11)),
    _case("uneven-9x7x5", size=(9, 7, 5)),
    _case("stride2", stride=2),
    _case("stride2-pad0-even-size", stride=2, padding=0, size=(6, 8, 10)),
    _case("stride-122", stride=(1, 2, 2), padding=(0, 1, 1)),
    _case("stride-213-pad-102", stride=(2, 1, 3), padding=(1, 0, 2)),
    _case("pad0", padding=0),
    _case("pad-same", padding="same"),
    _case("pad-valid", padding="valid"),
    _case("pad-012", padding=(0, 1, 2)),
    _case("pad-2", padding=2),
    _case("dil2", dilation=2, padding=2),
    _case("dil3-pad0", dilation=3, padding=0, size=(7, 8, 9)),
    _case("dil3-same", dilation=3, padding="same"),
    _case("dil-123", dilation=(1, 2, 3), padding=(1, 2, 3)),
    _case("dil2-stride2", dilation=2, stride=2, padding=1),
    _case("groups4", cin=8, cout=16, groups=4, expected_split=(8, 4, 4)),
    _case("groups4-stride2", cin=8, cout=16, groups=4, stride=2),
    _case("groups2-split", cin=4, cout=6, groups=2, split=(3, 0, 3)),
    _case("groups3-9out", cin=6, cout=9, groups=3, expected_split=(3, 3, 3)),
    _case("depthwise", cin=6, cout=6, groups=6, expected_split=(2, 2, 2)),
    _case("depthwise-mult2", cin=5, cout=10, groups=5, expected_split=(4, 4, 2)),
    _case("depthwise-dil2-reflect", cin=4, cout=4, groups=4, dilation=2, padding=2, padding_mode="reflect"),
    _case("nobias", bias=False),
    _case("reflect", padding_mode="reflect"),
    _case("replicate", padding_mode="replicate"),
    _case("circular", padding_mode="circular"),
    _case("reflect-same", padding_mode="reflect", padding="same"),
    _case("replicate-pad012", padding_mode="replicate", padding=(0, 1, 2)),
    _case("circular-dil2-stride2", padding_mode="circular", dilation=2, padding=2, stride=2),
    _case("reflect-groups", padding_mode="reflect", cin=8, cout=16, groups=4),
    _case("circular-1x7", padding_mode="circular", k=(1, 7), padding=(0, 3, 3)),
    _case("out10", cout=10, expected_split=(4, 3, 3)),
    _case("out1", cout=1, expected_split=(1, 0, 0)),
    _case("out2", cout=2, expected_split=(1, 1, 0)),
    _case("out4", cout=4, expected_split=(2, 1, 1)),
    _case("split-253", cout=10, split=(2, 5, 3)),
    _case("split-046", cout=10, split=(0, 4, 6)),
    _case("split-604", cout=10, split=(6, 0, 4)),
    _case("split-550", cout=10, split=(5, 5, 0)),
    _case("split-only-coronal", cout=5, split=(0, 5, 0)),
    _case("split-only-sagittal", cout=5, split=(0, 0, 5)),
    _case("k1x7", k=(1, 7), padding=(0, 3, 3)),
    _case("k7x1", k=(7, 1), padding=(3, 3, 0)),
    _case("k1x7-stride", k=(1, 7), padding=(0, 3, 3), stride=(1, 2, 2)),
    _case("k3x5", k=(3, 5), padding=(1, 2, 2)),
    _case("k5x3-dil2", k=(5, 3), padding=(4, 4, 2), dilation=2),
    _case("k1x3-same", k=(1, 3), padding="same"),
    _case("k2x2-pad0", k=2, padding=0),
    _case("k2x2-same", k=2, padding="same"),
    _case("k2x2-stride2", k=2, padding=0, stride=2, size=(6, 8, 10)),
    _case("k4x4-pad1", k=4, padding=1),
    _case("k4x4-same-dil2", k=4, padding="same", dilation=2, size=(8, 9, 11)),
    _case("k4x4-reflect-same", k=4, padding="same", padding_mode="reflect"),
    _case("k1x1", k=1, padding=0),
    _case("k5-stride3", k=5, padding=2, stride=3),
]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize("case", ACS_CASES)
def test_acs_matches_block_sparse_conv3d(case):
    c = case
    k = c["k"] if isinstance(c["k"], tuple) else (c["k"], c["k"])
    x = torch.randn(2, c["cin"], *c["size"], dtype=DT)
    w = torch.randn(c["cout"], c["cin"] // c["groups"], *k, dtype=DT)
    b = torch.randn(c["cout"], dtype=DT) if c["bias"] else None
    opts = {"stride": c["stride"], "padding": c["padding"], "dilation": c["dilation"], "groups": c["groups"]}

    layer = ACSConv(
        c["cin"], c["cout"], k, bias=c["bias"], padding_mode=c["padding_mode"], split=c["split"], dtype=DT, **opts
    )
    split = layer.split
    if c["split"] is not None:
        assert split == tuple(c["split"])
    if c["expected_split"] is not None:
        assert split == c["expected_split"]
    assert sum(split) == c["cout"] and len(split) == 3

    def ref(x_, w_, b_):
        return ref_acs(x_, w_, b_, split, padding_mode=c["padding_mode"], **opts)

    def functional(x_, w_, b_):
        return acs_conv3d(x_, w_, b_, split=c["split"], padding_mode=c["padding_mode"], **opts)

    def module(x_, w_, b_):
        with torch.no_grad():
            layer.weight.copy_(w_)
            if b_ is not None:
                layer.bias.copy_(b_)
        layer.zero_grad()
        return layer(x_)

    out = _assert_same_forward_and_grads(functional, ref, [x, w, b])
    assert not torch.isnan(out).any()

    # the module: forward and its parameter gradients against the reference
    xm, xr, wr, br = *_leaves(x, x, w), (_leaves(b)[0] if b is not None else None)
    out_m, out_r = module(xm, w, b), ref(xr, wr, br)
    torch.testing.assert_close(out_m, out_r, **TOL)
    g = torch.randn_like(out_r)
    out_m.backward(g)
    out_r.backward(g)
    torch.testing.assert_close(xm.grad, xr.grad, **TOL)
    torch.testing.assert_close(layer.weight.grad, wr.grad, **TOL)
    if b is not None:
        torch.testing.assert_close(layer.bias.grad, br.grad, **TOL)


def test_acs_output_shape_equals_conv3d_shape_with_the_box():
    # a shape-only check against nn.Conv3d with the full box kernel, on several geometries
    for k, pad, stride, dil in [((3, 3), 1, 2, 1), ((1, 7), (0, 3, 3), 1, 1), ((4, 4), 0, 3, 2), ((7, 1), 0, 2, 1)]:
        x = torch.randn(1, 2, 9, 10, 11)
        conv3d = nn.Conv3d(2, 4, ref_box(*k), stride, pad, dil)
        assert ACSConv(2, 4, k, stride, pad, dil)(x).shape == conv3d(x).shape


# ---------------------------------------------------------------------------------------------------------------------
# module vs 2D conv
# ---------------------------------------------------------------------------------------------------------------------
def test_default_split():
    assert default_split(64) == (22, 21, 21)
    assert default_split(10) == (4, 3, 3)
    assert default_split(3) == (1, 1, 1)
    assert default_split(1) == (1, 0, 0)
    assert default_split(12, groups=4) == (6, 3, 3)  # whole groups of 3 channels


@pytest.mark.parametrize("cout, expected", [(64, (22, 21, 21)), (10, (4, 3, 3)), (2, (1, 1, 0))])
def test_from_conv2d_keeps_weight_and_default_split(cout, expected):
    conv2d = nn.Conv2d(3, cout, 3, padding=1, dtype=DT)
    layer = ACSConv.from_conv2d(conv2d)
    assert layer.split == expected
    assert layer.weight.shape == conv2d.weight.shape == (cout, 3, 3, 3)
    assert torch.equal(layer.weight, conv2d.weight) and torch.equal(layer.bias, conv2d.bias)
    assert layer.weight.data_ptr() != conv2d.weight.data_ptr()  # a copy, not shared storage
    # the 2D state dict loads without renaming
    fresh = ACSConv(3, cout, 3, padding=1, dtype=DT)
    fresh.load_state_dict(conv2d.state_dict(), strict=True)
    assert torch.equal(fresh.weight, conv2d.weight)
    # the axial output channels are exactly the 2D conv applied slice by slice
    x = torch.randn(2, 3, 4, 6, 5, dtype=DT)
    out = layer(x)
    per_slice = torch.stack([conv2d(x[:, :, d]) for d in range(x.shape[2])], 2)
    torch.testing.assert_close(out[:, : expected[0]], per_slice[:, : expected[0]], **TOL)


def test_from_conv2d_geometry():
    conv2d = nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=1, groups=2, bias=False, padding_mode="reflect")
    layer = ACSConv.from_conv2d(conv2d)
    assert layer.stride == (2, 2, 2) and layer.padding == (1, 1, 1) and layer.groups == 2 and layer.bias is None
    assert layer.padding_mode == "reflect"
    x = torch.randn(1, 4, 7, 9, 11, dtype=torch.float32)
    ref = ref_acs(x, conv2d.weight, None, layer.split, stride=2, padding=1, groups=2, padding_mode="reflect")
    torch.testing.assert_close(layer(x), ref, rtol=1e-5, atol=1e-5)
    # non-square: the box H axis takes the values of the longer side
    layer17 = ACSConv.from_conv2d(nn.Conv2d(2, 3, (1, 7), padding=(0, 3)))
    assert layer17.padding == (0, 3, 3)
    layer71 = ACSConv.from_conv2d(nn.Conv2d(2, 3, (7, 1), padding=(3, 0)))
    assert layer71.padding == (3, 3, 0)
    x = torch.randn(1, 2, 5, 6, 7)
    assert layer17(x).shape == layer71(x).shape == (1, 3, 5, 6, 7)


def test_from_conv2d_keep_depth():
    layer = ACSConv.from_conv2d(nn.Conv2d(2, 3, 3, stride=2, padding=1), keep_depth=True)
    assert layer.stride == (1, 2, 2) and layer.padding == (1, 1, 1)
    assert layer(torch.randn(1, 2, 3, 8, 10)).shape == (1, 3, 3, 4, 5)


# ---------------------------------------------------------------------------------------------------------------------
# Conv2p5d
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "k, stride, padding, dilation, groups, size",
    [
        (3, 1, 1, 1, 1, (5, 7, 9)),
        (3, 1, (0, 1, 1), 1, 1, (5, 7, 9)),
        (3, 2, 1, 1, 1, (7, 8, 9)),
        (3, (2, 1, 2), (1, 0, 2), 1, 1, (7, 6, 9)),
        (3, 1, 2, 2, 1, (5, 7, 9)),
        (3, 1, 1, 1, 2, (5, 7, 9)),
        (5, 3, 2, 1, 1, (8, 7, 9)),
        (4, 1, 1, 1, 1, (5, 7, 9)),
        (1, 1, 0, 1, 1, (3, 4, 5)),
    ],
)
def test_conv2p5d_is_2d_conv_per_slice(k, stride, padding, dilation, groups, size):
    x = torch.randn(2, 4, *size, dtype=DT)
    w, b = torch.randn(6, 4 // groups, k, k, dtype=DT), torch.randn(6, dtype=DT)
    layer = Conv2p5d(4, 6, k, stride, padding, dilation, groups, dtype=DT)
    with torch.no_grad():
        layer.weight.copy_(w), layer.bias.copy_(b)
    out = layer(x)
    torch.testing.assert_close(out, ref_slicewise_2p5d(x, w, b, stride, padding, dilation, groups), **TOL)
    torch.testing.assert_close(out, ref_acs(x, w, b, (6, 0, 0), stride, padding, dilation, groups), **TOL)


def test_conv2p5d_gradients():
    x, w, b = torch.randn(1, 3, 4, 5, 6, dtype=DT), torch.randn(2, 3, 3, 3, dtype=DT), torch.randn(2, dtype=DT)
    layer = Conv2p5d(3, 2, 3, padding=1, dtype=DT)

    def module(x_, w_, b_):
        return torch.func.functional_call(layer, {"weight": w_, "bias": b_}, (x_,))

    _assert_same_forward_and_grads(module, lambda *t: ref_slicewise_2p5d(*t, 1, 1, 1), [x, w, b])


# ---------------------------------------------------------------------------------------------------------------------
# Mean-ACS and Soft-ACS
# ---------------------------------------------------------------------------------------------------------------------
MEAN_CASES = [
    {"cin": 4, "cout": 5, "k": (3, 3), "stride": 1, "padding": 1, "dilation": 1, "groups": 1, "padding_mode": "zeros"},
    {"cin": 4, "cout": 5, "k": (3, 3), "stride": 2, "padding": 0, "dilation": 1, "groups": 1, "padding_mode": "zeros"},
    {"cin": 4, "cout": 6, "k": (3, 3), "stride": 1, "padding": 2, "dilation": 2, "groups": 2, "padding_mode": "zeros"},
    {
        "cin": 4,
        "cout": 4,
        "k": (3, 3),
        "stride": 1,
        "padding": 1,
        "dilation": 1,
        "groups": 4,
        "padding_mode": "reflect",
    },
    {
        "cin": 3,
        "cout": 2,
        "k": (1, 7),
        "stride": 1,
        "padding": (0, 3, 3),
        "dilation": 1,
        "groups": 1,
        "padding_mode": "zeros",
    },
    {
        "cin": 3,
        "cout": 2,
        "k": (7, 1),
        "stride": (2, 1, 1),
        "padding": (3, 3, 0),
        "dilation": 1,
        "groups": 1,
        "padding_mode": "circular",
    },
    {
        "cin": 3,
        "cout": 2,
        "k": (2, 2),
        "stride": 1,
        "padding": "same",
        "dilation": 1,
        "groups": 1,
        "padding_mode": "replicate",
    },
    {
        "cin": 3,
        "cout": 1,
        "k": (4, 4),
        "stride": 1,
        "padding": "valid",
        "dilation": 1,
        "groups": 1,
        "padding_mode": "zeros",
    },
]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize("case", MEAN_CASES, ids=lambda c: "-".join(f"{v}" for v in c.values()).replace(" ", ""))
@pytest.mark.parametrize("variant", ["mean", "soft"])
def test_mean_and_soft_acs_match_three_box_convs(case, variant):
    c = dict(case)
    cin, cout, k, mode = c.pop("cin"), c.pop("cout"), c.pop("k"), c.pop("padding_mode")
    x = torch.randn(2, cin, 5, 6, 7, dtype=DT)
    w, b = torch.randn(cout, cin // c["groups"], *k, dtype=DT), torch.randn(cout, dtype=DT)
    cls = MeanACSConv if variant == "mean" else SoftACSConv
    layer = cls(cin, cout, k, padding_mode=mode, dtype=DT, **c)
    params = {"weight": w, "bias": b}
    vw = None
    if variant == "soft":
        assert torch.equal(layer.view_logits, torch.zeros(3, dtype=DT))  # fresh Soft-ACS equals Mean-ACS
        fresh = torch.func.functional_call(layer, {"weight": w, "bias": b}, (x,))
        torch.testing.assert_close(fresh, ref_mean_acs(x, w, b, None, padding_mode=mode, **c), **TOL)
        params["view_logits"] = torch.tensor([0.7, -0.4, 0.2], dtype=DT)
        vw = torch.softmax(params["view_logits"], 0)
        assert not torch.allclose(vw, torch.full((3,), 1 / 3, dtype=DT))

    names = list(params)

    def module(x_, *p):
        return torch.func.functional_call(layer, dict(zip(names, p)), (x_,))

    def ref(x_, w_, b_, logits=None):
        weights = None if logits is None else torch.softmax(logits, 0)
        return ref_mean_acs(x_, w_, b_, weights, padding_mode=mode, **c)

    _assert_same_forward_and_grads(module, ref, [x, *params.values()])
    # the functional core gives the same result
    out_f = mean_acs_conv3d(x, w, b, view_weights=vw, padding_mode=mode, **c)
    torch.testing.assert_close(out_f, ref(x, *params.values()), **TOL)


# ---------------------------------------------------------------------------------------------------------------------
# transposed ACS
# ---------------------------------------------------------------------------------------------------------------------
def ref_dense_transposed(w: torch.Tensor, views_per_out: list[str], groups: int) -> torch.Tensor:
    """(Ci, Co/g, kh, kw) -> (Ci, Co/g, box): entry (i, j) feeds output channel g*Co/g + j, g the group of row i."""
    ci, opg = w.shape[:2]
    ipg = ci // groups
    rows = []
    for i in range(ci):
        g = i // ipg
        rows.append(torch.stack([ref_embed(w[i, j][None], views_per_out[g * opg + j])[0] for j in range(opg)]))
    return torch.stack(rows)


def ref_acs_transposed(x, w, b, mode, split, stride, padding, output_padding, groups, dilation):
    cout = w.shape[1] * groups
    if mode == "mean":
        outs = [
            F.conv_transpose3d(
                x, ref_dense_transposed(w, [v] * cout, groups), b, stride, padding, output_padding, groups, dilation
            )
            for v in VIEWS
        ]
        return sum(outs) / 3
    views = ["axial"] * cout if mode == "axial" else ref_views(split)
    dense = ref_dense_transposed(w, views, groups)
    return F.conv_transpose3d(x, dense, b, stride, padding, output_padding, groups, dilation)


TRANSPOSED_CASES = [
    pytest.param(
        {"cin": 4, "cout": 6, "k": 2, "stride": 2, "padding": 0, "output_padding": 0, "groups": 1, "dilation": 1},
        id="k2s2",
    ),
    pytest.param(
        {"cin": 4, "cout": 5, "k": 3, "stride": 2, "padding": 1, "output_padding": 1, "groups": 1, "dilation": 1},
        id="k3s2p1op1",
    ),
    pytest.param(
        {"cin": 4, "cout": 6, "k": 3, "stride": 1, "padding": 1, "output_padding": 0, "groups": 2, "dilation": 1},
        id="groups2",
    ),
    pytest.param(
        {"cin": 6, "cout": 6, "k": 3, "stride": 2, "padding": 1, "output_padding": 1, "groups": 3, "dilation": 1},
        id="groups3",
    ),
    pytest.param(
        {
            "cin": 3,
            "cout": 4,
            "k": 3,
            "stride": (1, 2, 2),
            "padding": 1,
            "output_padding": (0, 1, 1),
            "groups": 1,
            "dilation": 1,
        },
        id="uneven-stride",
    ),
    pytest.param(
        {"cin": 3, "cout": 4, "k": 3, "stride": 1, "padding": 2, "output_padding": 0, "groups": 1, "dilation": 2},
        id="dil2",
    ),
    pytest.param(
        {"cin": 3, "cout": 4, "k": 4, "stride": 2, "padding": 1, "output_padding": 0, "groups": 1, "dilation": 1},
        id="k4s2p1",
    ),
    pytest.param(
        {
            "cin": 3,
            "cout": 5,
            "k": (1, 3),
            "stride": (1, 2, 2),
            "padding": (0, 1, 1),
            "output_padding": (0, 1, 1),
            "groups": 1,
            "dilation": 1,
        },
        id="k1x3",
    ),
]


@pytest.mark.parametrize("case", TRANSPOSED_CASES)
@pytest.mark.parametrize("mode", ["acs", "mean", "axial"])
def test_acs_conv_transpose_matches_block_sparse_conv_transpose3d(case, mode):
    c = dict(case)
    cin, cout, k = c.pop("cin"), c.pop("cout"), c.pop("k")
    k2 = k if isinstance(k, tuple) else (k, k)
    x = torch.randn(2, cin, 3, 4, 5, dtype=DT)
    w, b = torch.randn(cin, cout // c["groups"], *k2, dtype=DT), torch.randn(cout, dtype=DT)
    layer = ACSConvTranspose(cin, cout, k, mode=mode, dtype=DT, **c)
    assert layer.weight.shape == w.shape
    split = layer.split if mode == "acs" else None
    if mode == "acs":
        assert split == default_split(cout, c["groups"])

    def module(x_, w_, b_):
        return torch.func.functional_call(layer, {"weight": w_, "bias": b_}, (x_,))

    def ref(x_, w_, b_):
        return ref_acs_transposed(x_, w_, b_, mode, split, **c)

    out = _assert_same_forward_and_grads(module, ref, [x, w, b])
    out_f = acs_conv_transpose3d(x, w, b, split=(cout, 0, 0) if mode == "axial" else split, mean=mode == "mean", **c)
    torch.testing.assert_close(out_f, out, **TOL)


def test_acs_conv_transpose_explicit_split_and_shapes():
    x = torch.randn(1, 4, 3, 4, 5, dtype=DT)
    w = torch.randn(4, 6, 3, 3, dtype=DT)
    for split in [(0, 6, 0), (2, 0, 4), (1, 2, 3)]:
        out = acs_conv_transpose3d(x, w, None, stride=2, padding=1, output_padding=1, split=split)
        torch.testing.assert_close(out, ref_acs_transposed(x, w, None, "acs", split, 2, 1, 1, 1, 1), **TOL)
        assert out.shape == (1, 6, 6, 8, 10)
    # the grouped split is over whole output groups
    with pytest.raises(ValueError, match="multiple"):
        ACSConvTranspose(4, 6, 3, groups=2, split=(2, 2, 2))


def test_acs_conv_transpose_from_conv_transpose2d():
    conv = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, dtype=DT)
    layer = ACSConvTranspose.from_conv_transpose2d(conv)
    assert torch.equal(layer.weight, conv.weight) and torch.equal(layer.bias, conv.bias)
    assert layer.split == (2, 2, 2)
    x = torch.randn(1, 4, 3, 4, 5, dtype=DT)
    out = layer(x)
    assert out.shape == (1, 6, 6, 8, 10)
    # axial mode with keep_depth: depth untouched, the 2D transposed conv on every slice
    axial = ACSConvTranspose.from_conv_transpose2d(conv, mode="axial", keep_depth=True)
    out_axial = axial(x)
    per_slice = torch.stack([conv(x[:, :, d]) for d in range(3)], 2)
    torch.testing.assert_close(out_axial, per_slice, **TOL)
