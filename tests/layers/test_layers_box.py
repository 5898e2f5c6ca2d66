"""Which path a split (ACS) layer takes: one box-kernel convolution for small layers on CPU float32, the fused views
node for the rest. The box path's values and gradients are checked against the float64 reference in
``test_layers_fastpath.py`` (every case, both input layouts); here: the rule's bounds, and what stays out of it."""

from __future__ import annotations

import pytest
import torch

from monai_acs.layers import ACSConv, MeanACSConv
from monai_acs.layers import functional as LF

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
