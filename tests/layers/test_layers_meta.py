"""Every layer and functional operator runs on the ``meta`` device (shape-only runs: FLOP counting, conversion checks).

The meta result must have the shape of the same call on CPU, so a shape rule that differs between devices fails here.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from monai_acs.layers import (
    A3DConv,
    ACSConv,
    ACSConvTranspose,
    Conv2p5d,
    I3DConv,
    MeanACSConv,
    P3DConv,
    SoftACSConv,
    TSMConv,
    a3d_fuse,
    acs_conv3d,
    acs_conv_transpose3d,
    get_operator,
    list_operators,
    mean_acs_conv3d,
    tsm_shift,
)

INPUT_SHAPE = (2, 4, 5, 6, 7)  # uneven D / H / W
LAYERS = {
    "acs": lambda: ACSConv(4, 6, 3, padding=1),
    "acs-stride-grouped-reflect": lambda: ACSConv(4, 6, 3, stride=2, padding=1, groups=2, padding_mode="reflect"),
    "acs-1x7": lambda: ACSConv(4, 5, (1, 7), padding=(0, 3, 3), bias=False),
    "mean_acs": lambda: MeanACSConv(4, 6, 3, padding=1),
    "soft_acs": lambda: SoftACSConv(4, 6, 3, padding=1),
    "conv2p5d": lambda: Conv2p5d(4, 6, 3, stride=2, padding=1),
    "i3d": lambda: I3DConv(4, 6, 3, padding=1),
    "p3d": lambda: P3DConv(4, 6, 3, padding=1),
    "tsm": lambda: TSMConv(4, 6, 3, padding=1),
    "a3d": lambda: A3DConv(4, 6, 3, padding=1, depth=5),
    "transposed-acs": lambda: ACSConvTranspose(4, 6, 2, stride=2),
    "transposed-mean": lambda: ACSConvTranspose(4, 6, 3, stride=2, padding=1, output_padding=1, mode="mean"),
    "transposed-axial": lambda: ACSConvTranspose(4, 6, 3, padding=1, groups=2, mode="axial"),
}


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_runs_on_meta(name, training):
    layer = LAYERS[name]().train(training)
    expected = layer(torch.randn(INPUT_SHAPE)).shape
    meta_layer = LAYERS[name]().to("meta").train(training)
    x = torch.empty(INPUT_SHAPE, device="meta", requires_grad=True)
    out = meta_layer(x)
    assert out.device.type == "meta" and out.shape == expected
    out.sum().backward()  # the backward (fused autograd nodes included) runs on meta too
    assert x.grad is not None and x.grad.shape == x.shape
    assert all(p.grad is not None and p.grad.shape == p.shape for p in meta_layer.parameters())


@pytest.mark.parametrize("operator", list_operators())
def test_every_registered_operator_converts_on_meta(operator):
    conv = nn.Conv2d(4, 6, 3, padding=1).to("meta")
    options = {"depth": 5} if operator == "a3d" else {}
    layer = get_operator(operator).layer.from_conv2d(conv, keep_depth=operator == "a3d", **options)
    out = layer(torch.empty(INPUT_SHAPE, device="meta"))
    assert out.device.type == "meta" and out.shape == (2, 6, 5, 6, 7)


FUNCTIONS = {
    "acs_conv3d": lambda d: acs_conv3d(
        torch.randn(INPUT_SHAPE, device=d), torch.randn(6, 4, 3, 3, device=d), padding=1
    ),
    "mean_acs_conv3d": lambda d: mean_acs_conv3d(
        torch.randn(INPUT_SHAPE, device=d), torch.randn(6, 4, 3, 3, device=d), stride=2, padding=1
    ),
    "acs_conv_transpose3d": lambda d: acs_conv_transpose3d(
        torch.randn(INPUT_SHAPE, device=d), torch.randn(4, 6, 2, 2, device=d), stride=2
    ),
    "a3d_fuse": lambda d: a3d_fuse(torch.randn(INPUT_SHAPE, device=d), torch.randn(5, 5, 4, device=d)),
    "tsm_shift": lambda d: tsm_shift(torch.randn(INPUT_SHAPE, device=d)),
}


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_functional_runs_on_meta(name):
    expected = FUNCTIONS[name]("cpu").shape
    out = FUNCTIONS[name]("meta")
    assert out.device.type == "meta" and out.shape == expected
