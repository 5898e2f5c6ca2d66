"""``torch.compile`` (inductor, CPU) of the layers equals eager mode, gradients included.

Dynamo traces the fused autograd nodes (ACS's split views, A3D's mix-then-conv) without graph breaks; this checks
that what it compiles computes what eager mode computes, in both memory formats.
"""

from __future__ import annotations

import pytest
import torch

from monai_acs.layers import A3DConv, ACSConv

CL = torch.channels_last_3d


@pytest.mark.parametrize(
    "make, fmt, answer, shape",
    [
        pytest.param(lambda: ACSConv(8, 9, 3, padding=1), CL, CL, (2, 8, 6, 10, 12), id="acs-channels-last"),
        pytest.param(lambda: ACSConv(8, 9, 3, stride=2, padding=1), torch.contiguous_format, CL, (2, 8, 6, 10, 12),
                     id="acs-strided"),
        # A3D computes in its slice mix's layout: contiguous
        pytest.param(lambda: A3DConv(8, 9, 3, padding=1, depth=6), CL, torch.contiguous_format, (2, 8, 6, 10, 12),
                     id="a3d"),
        # batch 1 (eager calls oneDNN itself; compiled, inductor chooses) and a depth-1 input (dead taps cut)
        pytest.param(lambda: ACSConv(8, 9, 3, padding=1), torch.contiguous_format, CL, (1, 8, 6, 10, 12),
                     id="acs-batch1-box"),
        pytest.param(lambda: ACSConv(96, 96, 3, padding=1), CL, CL, (1, 96, 6, 10, 12), id="acs-batch1-views"),
        pytest.param(lambda: ACSConv(8, 9, 3, padding=1), CL, CL, (2, 8, 1, 10, 12), id="acs-dead-taps-box"),
        pytest.param(lambda: ACSConv(96, 96, 3, padding=1), CL, CL, (2, 96, 1, 10, 12), id="acs-dead-taps-views"),
    ],
)
def test_compiled_layer_equals_eager(make, fmt, answer, shape):
    torch.manual_seed(0)
    layer = make()
    x = torch.randn(shape).contiguous(memory_format=fmt).requires_grad_(True)
    inputs = [x, *layer.parameters()]
    expected = layer(x)
    grad = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, inputs, grad)

    torch._dynamo.reset()
    explained = torch._dynamo.explain(layer)(x)
    assert explained.graph_break_count == 0, explained.break_reasons
    compiled = torch.compile(layer, fullgraph=True)
    out = compiled(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert out.is_contiguous(memory_format=answer), f"compiled or not, the layer answers in {answer} on CPU"
    assert expected.is_contiguous(memory_format=answer)
    for got, want, name in zip(torch.autograd.grad(out, inputs, grad), expected_grads, ("input", "p0", "p1", "p2")):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, msg=lambda m, name=name: f"{name} gradient: {m}")


@pytest.mark.parametrize("fmt, stride, shape", [(CL, 1, (2, 8, 6, 10, 12)), (torch.contiguous_format, 1, (2, 8, 6, 10, 12)),
                                               (torch.contiguous_format, 2, (2, 8, 6, 10, 12)),
                                               (CL, 1, (1, 8, 6, 10, 12)), (CL, 1, (2, 8, 1, 10, 12))],
                         ids=["channels-last", "contiguous", "strided", "batch1", "dead-taps"])
def test_fused_acs_custom_ops_pass_opcheck(fmt, stride, shape):
    """The fused ACS node's forward and backward ops: schema, fake (meta) kernels with the real strides, autograd
    registration and AOT dispatch, as PyTorch's ``torch.library.opcheck`` tests them."""
    from monai_acs.layers import functional as LF

    layer = ACSConv(8, 9, 3, stride=stride, padding=1)
    x = torch.randn(shape).contiguous(memory_format=fmt).requires_grad_(True)
    plans = LF._flat_plans(layer._plans)
    strides = [stride] * 3
    torch.library.opcheck(torch.ops.monai_acs.split_views_conv.default,
                          (x, layer.weight, layer.bias, strides, plans))
    grad_out = torch.randn_like(layer(x))
    for needs in ((True, True, True), (False, True, False), (True, False, False)):
        torch.library.opcheck(torch.ops.monai_acs.split_views_conv_backward.default,
                              (grad_out, x.detach(), layer.weight.detach(), strides, plans, *needs))


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")
def test_saved_torchscript_loads_without_monai_acs(tmp_path):
    """Scripted and traced layers run the composed aten ops, not the custom op: a fresh process that never imports
    monai_acs loads them and computes the same outputs."""
    import subprocess
    import sys

    torch.manual_seed(0)
    x = torch.randn(1, 4, 5, 6, 7)
    expected = {}
    for name, layer in (("acs", ACSConv(4, 6, 3, padding=1)), ("a3d", A3DConv(4, 6, 3, padding=1, depth=5))):
        torch.jit.script(layer).save(str(tmp_path / f"{name}_script.pt"))
        torch.jit.trace(layer, x).save(str(tmp_path / f"{name}_trace.pt"))
        expected[name] = layer(x).detach()
    torch.save({"x": x, **expected}, tmp_path / "expected.pt")
    code = (
        "import sys, torch\n"
        f"d = {str(tmp_path)!r}\n"
        "ref = torch.load(d + '/expected.pt')\n"
        "for name in ('acs', 'a3d'):\n"
        "    for how in ('script', 'trace'):\n"
        "        out = torch.jit.load(f'{d}/{name}_{how}.pt')(ref['x'])\n"
        "        torch.testing.assert_close(out, ref[name], rtol=1e-5, atol=1e-5)\n"
        "assert 'monai_acs' not in sys.modules\n"
        "print('loaded')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=False)
    assert done.returncode == 0 and "loaded" in done.stdout, done.stderr[-2000:]
