"""Which path a split (ACS) layer takes: one box-kernel convolution for small layers on CPU float32, the fused views
node for the rest. The box path's values and gradients are checked against the float64 reference in
``test_layers_fastpath.py`` (every case, both input layouts); here: the rule's bounds, and what stays out of it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from monai_acs.layers import ACSConv, MeanACSConv
from monai_acs.layers import functional as LF
from test_layers_acs import ref_acs  # the float64 box-kernel reference, dead taps included

CL = torch.channels_last_3d
FUSED_ACS = "monai_acs_split_views_conv"


def _node(layer, x) -> str:
    return type(layer(x.requires_grad_(True)).grad_fn).__name__


def test_small_layers_run_as_one_box_convolution_and_large_ones_as_fused_views():
    # the PoC UNet's second down-sampling layer: 2 x 16 x 8^3 outputs of a 16 -> 32 kernel, 2.4 million multiply-adds
    assert _node(ACSConv(16, 32, 3, stride=2, padding=1), torch.randn(2, 16, 16, 16, 16)).startswith("Convolution")
    # benchmark shape (a), 64 -> 64 at 48^3 (a batch of 1 here): 6.4 billion multiply-adds
    assert FUSED_ACS in _node(ACSConv(64, 64, 3, padding=1), torch.randn(1, 64, 48, 48, 48))


def test_the_bounds_are_inclusive_and_count_the_equivalent_2p5d_convolution(monkeypatch):
    layer = ACSConv(8, 12, 3, stride=2, padding=1)
    x = torch.randn(2, 8, 9, 10, 11)  # outputs 5 x 5 x 6: 2 * 150 * 12 * 8 * 9 = 259,200 multiply-adds
    args = (x, layer.weight, layer._stride_list, layer._plans)
    monkeypatch.setattr(LF, "_BOX_MAX_MACS", 259_200)
    assert LF._box_is_faster(*args)
    monkeypatch.setattr(LF, "_BOX_MAX_MACS", 259_199)
    assert not LF._box_is_faster(*args)
    monkeypatch.setattr(LF, "_BOX_MAX_MACS", 10**12)
    monkeypatch.setattr(LF, "_BOX_MAX_CHANNELS", 8 * 12 - 1)  # Cin * Cout = 96
    assert not LF._box_is_faster(*args)


@pytest.mark.parametrize("case", ["bfloat16", "autocast", "groups", "cropped", "even-kernel", "mean-acs"])
def test_what_stays_out_of_the_box_path(case):
    x = torch.randn(2, 8, 6, 7, 8)
    layer = ACSConv(8, 12, 3, padding=1)
    if case == "bfloat16":  # not measured: left to the views, in the caller's layout
        layer, x = layer.to(torch.bfloat16), x.to(torch.bfloat16)
    elif case == "groups":
        layer = ACSConv(8, 12, 3, padding=1, groups=4)
    elif case == "cropped":  # padding 0: the views crop the input differently
        layer = ACSConv(8, 12, 3, padding=0)
    elif case == "even-kernel":  # a 2 x 2 kernel's views sit off-centre in its box
        layer = ACSConv(8, 12, 2, padding="same")
    elif case == "mean-acs":  # every view uses the whole kernel: averaged, not split
        layer = MeanACSConv(8, 12, 3, padding=1)
    if case == "autocast":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not LF._box_is_faster(x, layer.weight, layer._stride_list, layer._plans)
    else:
        assert not LF._box_is_faster(x, layer.weight, layer._stride_list, layer._plans)

def test_box_path_answers_in_the_layout_rule_and_its_double_backward_equals_the_views(monkeypatch):
    layer = ACSConv(8, 12, 3, stride=2, padding=1)
    x = torch.randn(2, 8, 6, 7, 8)  # contiguous: copied to channels-last for the conv

    def penalty_grads():
        xe = x.clone().requires_grad_(True)
        out = layer(xe)
        (gx,) = torch.autograd.grad(out.square().sum(), xe, create_graph=True)  # a gradient penalty
        return out, torch.autograd.grad(gx.square().sum(), [xe, layer.weight, layer.bias])

    out, box = penalty_grads()
    assert type(out.grad_fn).__name__.startswith("Convolution")
    assert out.is_contiguous(memory_format=CL) and not out.is_contiguous()
    monkeypatch.setattr(LF, "_BOX_MAX_MACS", 0)
    out_views, views = penalty_grads()
    assert FUSED_ACS in type(out_views.grad_fn).__name__
    torch.testing.assert_close(out, out_views, rtol=1e-5, atol=1e-5)
    for a, b in zip(box, views):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------------------
# dead taps: on an axis no longer than the dilation (centred zero padding), every view reads only its centre tap
# ---------------------------------------------------------------------------------------------------------------------
DEAD_CASES = [  # (input shape, layer options, dead axes, path)
    pytest.param((2, 6, 1, 9, 11), {"padding": 1}, [0], "box", id="depth1-small: one dead axis, small: cut box"),
    pytest.param((2, 6, 2, 5, 11), {"padding": 6, "dilation": 6}, [0, 1], "box", id="D-and-H-dead"),
    pytest.param((2, 6, 2, 4, 3), {"padding": 4, "dilation": 4}, [0, 1, 2], "box", id="all-dead-1x1x1"),
    pytest.param((2, 6, 3, 3, 9), {"padding": 3, "dilation": 3, "stride": 2}, [0, 1], "box", id="strided"),
    pytest.param((2, 6, 1, 1, 7), {"padding": (1, 1, 2), "dilation": (1, 1, 2)}, [0, 1], "box", id="dil-per-axis"),
    # Cin * Cout above _BOX_MAX_CHANNELS: two dead axes take the cut box anyway, one dead axis the views
    pytest.param((1, 96, 1, 1, 8), {"padding": 1, "out_channels": 96}, [0, 1], "box", id="large-two-dead"),
    # one dead axis in a large layer: the fused views node, each view cut to its live taps there
    pytest.param((1, 96, 1, 6, 8), {"padding": 1, "out_channels": 96}, [0], "views", id="large-one-dead"),
    pytest.param((2, 96, 1, 6, 8), {"padding": 1, "out_channels": 96, "stride": 2}, [0], "views", id="large-strided"),
    pytest.param((1, 96, 5, 1, 8), {"padding": 1, "out_channels": 96}, [1], "views", id="large-H-dead"),
    pytest.param((1, 96, 2, 6, 7), {"padding": 2, "dilation": 2, "out_channels": 96, "split": (0, 40, 56)}, [0],
                 "views", id="large-dil2-no-axial"),
    pytest.param((2, 6, 2, 9, 11), {"padding": 1}, [], "box", id="depth2-dil1-alive"),
    pytest.param((2, 6, 1, 9, 11), {"padding": 2, "dilation": 2, "split": (3, 3, 3)}, [0], "box", id="split333"),
]


@pytest.mark.parametrize("shape, opts, dead, path", DEAD_CASES)
@pytest.mark.parametrize("fmt", ["contiguous", "channels_last_3d"])
def test_dead_tap_axes_are_cut_and_the_layer_still_equals_the_full_box(shape, opts, dead, path, fmt):
    torch.manual_seed(0)
    opts = {"kernel_size": 3, "out_channels": 9, **opts}
    layer = ACSConv(shape[1], **opts)
    x = torch.randn(shape)
    if fmt == "channels_last_3d":
        x = x.contiguous(memory_format=CL)
    assert LF._dead_tap_axes(x, layer.weight, layer._plans) == dead
    xe = x.clone().requires_grad_(True)
    out = layer(xe)
    node = type(out.grad_fn).__name__
    # the box answers through the convolution's node (or the copy into channels-last a 1 x 1 x 1 conv may need)
    assert (FUSED_ACS not in node) == (path == "box") == LF._box_is_faster(x, layer.weight, layer._stride_list,
                                                                            layer._plans), node
    xr = x.double().requires_grad_(True)
    wr, br = layer.weight.detach().double().requires_grad_(True), layer.bias.detach().double().requires_grad_(True)
    out_r = ref_acs(xr, wr, br, layer.split, layer.stride, layer.padding, layer.dilation)
    torch.testing.assert_close(out.double(), out_r, rtol=1e-4, atol=1e-4)
    grad = torch.randn_like(out_r)
    grads = torch.autograd.grad(out, [xe, layer.weight, layer.bias], grad.float())
    grads_r = torch.autograd.grad(out_r, [xr, wr, br], grad)
    for g, g_r in zip(grads, grads_r):
        torch.testing.assert_close(g.double(), g_r, rtol=1e-4, atol=1e-4)
    if dead:  # the dead taps' kernel gradient is exactly zero (they only ever read padding)
        assert grads[1].abs().sum() > 0 and grads_r[1].abs().sum() > 0


def test_dead_taps_need_centred_zero_padding():
    w = ACSConv(6, 9, 3, padding=1).weight
    x = torch.randn(2, 6, 1, 9, 11)
    assert LF._dead_tap_axes(x, w, ACSConv(6, 9, 3, padding=1)._plans) == [0]
    # replicate padding is applied first (F.pad), the views then run unpadded on a depth of 3: nothing is dead
    layer = ACSConv(6, 9, 3, padding=1, padding_mode="replicate")
    assert LF._dead_tap_axes(F.pad(x, [1, 1, 1, 1, 1, 1], mode="replicate"), w, layer._plans) == []
    # "same" padding of an even kernel is not centred: its views stay as they are
    even = ACSConv(6, 9, 2, padding="same")
    assert LF._dead_tap_axes(x, even.weight, even._plans) == []
    # a depth of 2 with dilation 1: the first and last planes read each other
    assert LF._dead_tap_axes(torch.randn(2, 6, 2, 9, 11), w, ACSConv(6, 9, 3, padding=1)._plans) == []


def test_views_of_a_depth_one_input_convolve_only_their_live_taps(monkeypatch):
    kernels = []
    conv3d = F.conv3d

    def spy(x, w, *args):
        kernels.append(tuple(w.shape[2:]))
        return conv3d(x, w, *args)

    monkeypatch.setattr(LF.F, "conv3d", spy)
    layer, x = ACSConv(96, 96, 3, padding=1), torch.randn(2, 96, 1, 6, 8)  # batch 2: F.conv3d (see test_fastpath)
    assert FUSED_ACS in type(layer(x.requires_grad_(True)).grad_fn).__name__
    assert kernels == [(1, 3, 3), (1, 1, 3), (1, 3, 1)]  # axial whole; coronal and sagittal cut to their centre row
    kernels.clear()
    monkeypatch.setattr(LF, "_CUT_DEAD_TAPS", False)
    layer(x)
    assert kernels == [(1, 3, 3), (3, 1, 3), (3, 3, 1)]
