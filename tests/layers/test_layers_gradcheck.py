"""``torch.autograd.gradcheck`` in float64 on tiny inputs, for every operator with a custom forward path."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck

from monai_acs.layers import (
    A3DConv,
    ACSConvTranspose,
    P3DConv,
    SoftACSConv,
    TSMConv,
    acs_conv3d,
    mean_acs_conv3d,
)

DT = torch.float64


def _x(c=2, d=3, h=4, w=4):
    return torch.randn(1, c, d, h, w, dtype=DT, requires_grad=True)


def _p(*shape):
    return torch.randn(*shape, dtype=DT, requires_grad=True)


def _check_module(layer: nn.Module, x: torch.Tensor) -> None:
    """gradcheck over the input and every parameter, via functional_call."""
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_(True) for _, p in layer.named_parameters()]
    with torch.no_grad():  # move extras off their initial values (identity / zero init)
        for n, p in zip(names, params):
            if n in ("view_logits", "temporal_weight", "fusion"):
                p.add_(0.3 * torch.randn_like(p))

    def fn(x_, *p):
        return torch.func.functional_call(layer, dict(zip(names, p)), (x_,))

    assert gradcheck(fn, (x, *params), eps=1e-6, atol=1e-6, fast_mode=True)


@pytest.mark.parametrize(
    "kwargs, wshape",
    [
        ({"padding": 1}, (4, 2, 3, 3)),
        ({"stride": (1, 2, 1), "padding": (1, 0, 1), "split": (2, 0, 2), "padding_mode": "reflect"}, (4, 2, 3, 3)),
        ({"padding": "same", "groups": 2, "dilation": (1, 2, 1)}, (4, 1, 2, 2)),
        ({"padding": (0, 1, 1)}, (3, 2, 1, 3)),
    ],
)
def test_gradcheck_acs_conv3d(kwargs, wshape):
    x, w, b = _x(), _p(*wshape), _p(wshape[0])
    assert gradcheck(lambda *t: acs_conv3d(*t, **kwargs), (x, w, b), eps=1e-6, atol=1e-6, fast_mode=True)


def test_gradcheck_mean_acs_conv3d():
    x, w, b = _x(), _p(3, 2, 3, 3), _p(3)
    assert gradcheck(lambda *t: mean_acs_conv3d(*t, padding=1), (x, w, b), eps=1e-6, atol=1e-6, fast_mode=True)


def test_gradcheck_soft_acs():
    _check_module(SoftACSConv(2, 3, 3, padding=1, padding_mode="replicate", dtype=DT), _x())


def test_gradcheck_a3d():
    _check_module(A3DConv(2, 3, 3, padding=1, depth=3, dtype=DT), _x())


def test_gradcheck_tsm():
    _check_module(TSMConv(3, 2, 3, padding=1, dtype=DT), _x(c=3))


def test_gradcheck_p3d():
    _check_module(P3DConv(2, 2, 3, stride=(1, 2, 1), padding=1, dtype=DT), _x())


@pytest.mark.parametrize("mode", ["acs", "mean", "axial"])
def test_gradcheck_acs_conv_transpose(mode):
    layer = ACSConvTranspose(2, 3, 3, stride=2, padding=1, output_padding=1, mode=mode, dtype=DT)
    _check_module(layer, _x(d=2, h=2, w=3))
