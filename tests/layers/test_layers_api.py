"""Layer API contracts: registry, parameter counts (A3D paper Table 1), errors, TorchScript, docstring examples."""

from __future__ import annotations

import doctest
import importlib
import io
import re
from fractions import Fraction

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
    register_operator,
    registry,
    tsm_shift,
)

PAPER_OPERATORS = ["acs", "mean_acs", "soft_acs", "conv2p5d", "i3d", "p3d", "tsm", "a3d"]
IGNORE_JIT_DEPRECATION = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:FutureWarning")

# every 3D layer, built for a (N, 4, 5, 6, 7) input
LAYERS = {
    "acs": lambda: ACSConv(4, 6, 3, padding=1),
    "acs-same-reflect-grouped": lambda: ACSConv(4, 6, 3, padding="same", groups=2, padding_mode="reflect"),
    "acs-1x7-stride": lambda: ACSConv(4, 5, (1, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
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
INPUT_SHAPE = (2, 4, 5, 6, 7)


def _perturb(layer: nn.Module) -> nn.Module:
    """Move learnable extras away from their initial values so a test cannot pass on an identity/zero init."""
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name in ("view_logits", "temporal_weight", "fusion"):
                p.add_(0.3 * torch.randn_like(p))
    return layer


# ---------------------------------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------------------------------
def test_list_operators_has_every_paper_operator():
    ops = list_operators()
    assert set(PAPER_OPERATORS) <= set(ops)
    assert len(ops) == len(set(ops))
    assert all(op == op.lower() for op in ops)


def test_unknown_operator_names_closest_key():
    with pytest.raises(ValueError, match="'acs'") as info:
        get_operator("acss")
    assert "acss" in str(info.value)
    with pytest.raises(ValueError, match="'a3d'"):
        get_operator("a3dd")
    assert get_operator("ACS").name == "acs"


def test_registration_rejects_duplicates_and_bad_keys(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # leave the real registry untouched

    class Dummy(nn.Module):
        @classmethod
        def from_conv2d(cls, conv2d, **opts):
            return cls()

    meta = {"summary": "test", "params_overhead": "1", "flops_overhead": "1"}
    with pytest.raises(ValueError, match="acs"):
        register_operator("acs", **meta)(Dummy)
    assert get_operator("acs").layer is ACSConv
    register_operator("dummy_op", **meta)(Dummy)
    assert "dummy_op" in list_operators()
    with pytest.raises(ValueError, match="dummy_op"):
        register_operator("dummy_op", **meta)(Dummy)
    with pytest.raises(ValueError):
        register_operator("Upper", **meta)
    with pytest.raises(TypeError):
        register_operator("no_from_conv2d", **meta)(nn.Identity)


@pytest.mark.parametrize("name", PAPER_OPERATORS)
def test_registry_entry_builds_from_conv2d(name):
    spec = get_operator(name)
    assert spec.name == name and spec.summary and spec.params_overhead and spec.flops_overhead
    conv2d = nn.Conv2d(4, 6, 3, padding=1)
    opts = {"depth": 5} if name == "a3d" else {}
    layer = spec.layer.from_conv2d(conv2d, **opts)
    assert isinstance(layer, nn.Module) and type(layer) is spec.layer
    out = layer(torch.randn(*INPUT_SHAPE))
    assert out.shape == (2, 6, 5, 6, 7)


# ---------------------------------------------------------------------------------------------------------------------
# parameter counts (ACS paper Table III, A3D paper Table 1)
# ---------------------------------------------------------------------------------------------------------------------
CI, CO, K, DEPTH = 6, 8, 3, 7


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _weights_only(module: nn.Module) -> int:
    return sum(p.numel() for n, p in module.named_parameters() if not n.endswith("bias"))


EXPECTED_EXTRA = {  # parameters over the 2D conv (weight + bias)
    "acs": 0,
    "mean_acs": 0,
    "conv2p5d": 0,
    "tsm": 0,
    "soft_acs": 3,
    "i3d": (K - 1) * CO * CI * K * K,
    "p3d": CO * CO * K,
    "a3d": DEPTH * DEPTH * CI,
}
# overhead relative to the no-fusion weight Co Ci K^2, A3D paper Table 1
TABLE1_OVERHEAD = {
    "conv2p5d": Fraction(1),
    "i3d": Fraction(K),
    "p3d": 1 + Fraction(CO, CI * K),
    "acs": Fraction(1),
    "tsm": Fraction(1),
    "a3d": 1 + Fraction(DEPTH**2, CO * K**2),
}


@pytest.mark.parametrize("name", list(EXPECTED_EXTRA))
def test_parameter_counts(name):
    conv2d = nn.Conv2d(CI, CO, K, padding=1)
    opts = {"depth": DEPTH} if name == "a3d" else {}
    layer = get_operator(name).layer.from_conv2d(conv2d, **opts)
    assert _count(layer) == _count(conv2d) + EXPECTED_EXTRA[name]
    if name in TABLE1_OVERHEAD:
        assert Fraction(_weights_only(layer), CO * CI * K * K) == TABLE1_OVERHEAD[name]


def test_i3d_weight_is_k_times_2d_weight():
    conv2d = nn.Conv2d(CI, CO, K, padding=1)
    layer = I3DConv.from_conv2d(conv2d)
    assert layer.weight.numel() == K * conv2d.weight.numel()
    assert layer.bias.numel() == conv2d.bias.numel()
    no_bias = I3DConv.from_conv2d(nn.Conv2d(CI, CO, K, bias=False))
    assert _count(no_bias) == K * CO * CI * K * K


# ---------------------------------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(LAYERS))
def test_4d_input_raises_with_shape(name):
    layer = LAYERS[name]()
    with pytest.raises(ValueError, match=re.escape("(2, 4, 6, 7)")):
        layer(torch.randn(2, 4, 6, 7))


@pytest.mark.parametrize("name", list(LAYERS))
def test_channel_mismatch_raises_with_shape(name):
    layer = LAYERS[name]()
    with pytest.raises(ValueError, match=re.escape("(2, 3, 5, 6, 7)")):
        layer(torch.randn(2, 3, 5, 6, 7))


@pytest.mark.parametrize("name", list(LAYERS))
def test_error_names_the_module_path(name):
    layer = LAYERS[name]()
    layer.source_name = "encoder.block1.conv"
    with pytest.raises(ValueError, match=re.escape("encoder.block1.conv")):
        layer(torch.randn(2, 3, 5, 6, 7))


def test_functional_bad_input_raises_with_shape():
    x4, w = torch.randn(1, 4, 6, 7), torch.randn(6, 4, 3, 3)
    for fn in (acs_conv3d, mean_acs_conv3d):
        with pytest.raises(ValueError, match=re.escape("(1, 4, 6, 7)")):
            fn(x4, w)
        with pytest.raises(ValueError, match=re.escape("(1, 3, 5, 6, 7)")):
            fn(torch.randn(1, 3, 5, 6, 7), w)
    with pytest.raises(ValueError, match=re.escape("(1, 4, 6, 7)")):
        acs_conv_transpose3d(x4, torch.randn(4, 2, 2, 2))
    with pytest.raises(ValueError, match=re.escape("(1, 3, 5, 6, 7)")):
        acs_conv_transpose3d(torch.randn(1, 3, 5, 6, 7), torch.randn(4, 2, 2, 2))
    with pytest.raises(ValueError, match=re.escape("(1, 4, 6, 7)")):
        tsm_shift(x4)
    with pytest.raises(ValueError, match=re.escape("(1, 4, 6, 7)")):
        a3d_fuse(x4, torch.randn(6, 6, 4))
    with pytest.raises(ValueError, match=re.escape("(1, 3, 5, 6, 7)")):
        a3d_fuse(torch.randn(1, 3, 5, 6, 7), torch.randn(5, 5, 4))


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: ACSConv(4, 6, 3, split=(2, 2, 1)), id="sum"),
        pytest.param(lambda: ACSConv(4, 6, 3, split=(3, 3)), id="length"),
        pytest.param(lambda: ACSConv(4, 6, 3, split=(7, -1, 0)), id="negative"),
        pytest.param(lambda: ACSConv(8, 16, 3, groups=4, split=(6, 6, 4)), id="not-whole-groups"),
        pytest.param(
            lambda: acs_conv3d(torch.randn(1, 4, 3, 3, 3), torch.randn(6, 4, 3, 3), split=(1, 1, 1)), id="functional"
        ),
        pytest.param(lambda: TSMConv(4, 6, 3, shift_split=(1, 1, 1)), id="tsm-sum"),
        pytest.param(lambda: tsm_shift(torch.randn(1, 4, 3, 3, 3), (1, 1, 1)), id="tsm-functional"),
        pytest.param(lambda: ACSConvTranspose(4, 6, 2, split=(1, 2, 2)), id="transposed"),
    ],
)
def test_invalid_split_raises(build):
    with pytest.raises(ValueError, match="split"):
        build()


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: A3DConv(4, 6, 3, padding=1), id="a3d-without-depth"),
        pytest.param(lambda: A3DConv(4, 6, 3, padding=1, depth=0), id="a3d-depth-0"),
        pytest.param(lambda: A3DConv.from_conv2d(nn.Conv2d(4, 6, 3)), id="a3d-from-conv2d-without-depth"),
        pytest.param(lambda: ACSConv(4, 6, 3, stride=2, padding="same"), id="same-strided"),
        pytest.param(lambda: ACSConv(4, 6, 3, padding="full"), id="padding-string"),
        pytest.param(lambda: ACSConv(4, 6, 3, padding_mode="mirror"), id="padding-mode"),
        pytest.param(lambda: ACSConv(4, 6, 3, groups=4), id="groups"),
        pytest.param(lambda: ACSConvTranspose(4, 6, 2, mode="coronal"), id="transposed-mode"),
    ],
)
def test_invalid_construction_raises(build):
    with pytest.raises(ValueError):
        build()


def test_a3d_without_depth_message_says_depth():
    with pytest.raises(ValueError, match="depth"):
        A3DConv(4, 6, 3)


def test_from_conv2d_rejects_other_modules():
    with pytest.raises(TypeError, match="Conv2d"):
        ACSConv.from_conv2d(nn.Conv3d(2, 3, 3))


# ---------------------------------------------------------------------------------------------------------------------
# TorchScript
# ---------------------------------------------------------------------------------------------------------------------
@IGNORE_JIT_DEPRECATION
@pytest.mark.parametrize("compile_with", ["script", "trace"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_torchscript_output_survives_save_and_load(name, compile_with):
    # scripting runs the same per-view convolutions as eager mode in the caller's layout (the layout rule is
    # eager-only), so the output is identical for a channels-last input and agrees to float32 rounding for a
    # contiguous one (eager computes channels-last on CPU). Tracing (what
    # `monai.bundle ckpt_export --use_trace true` runs) must not record the eager fast path, a Python
    # autograd.Function that a saved trace cannot hold; its plain convolutions agree to float32 rounding
    layer = _perturb(LAYERS[name]()).eval()
    x = torch.randn(*INPUT_SHAPE)
    expected = layer(x)
    compiled = torch.jit.script(layer) if compile_with == "script" else torch.jit.trace(layer, x)
    tolerance = {"rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(compiled(x), expected, **tolerance)
    if compile_with == "script" and name != "a3d":  # scripted A3D mixes into a contiguous tensor, eager lays it out
        x_cl = x.contiguous(memory_format=torch.channels_last_3d)
        torch.testing.assert_close(compiled(x_cl), layer(x_cl), rtol=0.0, atol=0.0)
    buffer = io.BytesIO()
    torch.jit.save(compiled, buffer)
    buffer.seek(0)
    torch.testing.assert_close(torch.jit.load(buffer)(x), expected, **tolerance)


# ---------------------------------------------------------------------------------------------------------------------
# docstring examples really run
# ---------------------------------------------------------------------------------------------------------------------
DOC_MODULES = [
    "monai_acs.layers.functional",
    "monai_acs.layers.acs",
    "monai_acs.layers.fusion",
    "monai_acs.layers.a3d",
    "monai_acs.layers.transposed",
    "monai_acs.layers.registry",
]


@pytest.mark.parametrize("module_name", DOC_MODULES)
def test_docstring_examples(module_name):
    module = importlib.import_module(module_name)
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    output = io.StringIO()
    attempted = 0
    for test in finder.find(module, module_name):
        runner.run(test, out=output.write)
        attempted += len(test.examples)
    assert attempted > 0, f"{module_name} has no docstring examples"
    assert runner.failures == 0, output.getvalue()
