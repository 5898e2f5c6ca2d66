"""The eager fast paths of the layers against an independent float64 reference, and against the TorchScript path.

``run_conv_views`` runs split (ACS) views through one autograd node in eager mode (a registered custom op;
preallocated output, input gradient accumulated in one buffer, and on CPU float32 channels_last_3d with stride 1
oneDNN convolutions with the flipped kernel for the input and kernel gradients). A scripted layer runs the plain
per-view ``F.conv3d`` path instead. Both must equal the reference: ``F.conv3d``
with the block-sparse box kernel, built here by hand in float64. A3D's slice fusion (a batched matmul) is checked
against a per-slice loop.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from monai_acs.layers import A3DConv, ACSConv, Conv2p5d, MeanACSConv, acs_conv3d
from monai_acs.layers import functional as LF

CL = torch.channels_last_3d
F32 = {"rtol": 2e-4, "atol": 2e-4}
FUSED_ACS = "monai_acs_split_views_conv"  # in the grad_fn name of the fused ACS node (a registered custom op)
IGNORE_JIT_DEPRECATION = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")


def _dense_kernel(w: torch.Tensor, split: tuple[int, int, int]) -> torch.Tensor:
    """(O, I, kh, kw) -> (O, I, kh, max(kh, kw), kw): output channel o's kernel on its view's centre plane."""
    o, i, kh, kw = w.shape
    bd, bh, bw = kh, max(kh, kw), kw
    dense = w.new_zeros(o, i, bd, bh, bw)
    views = [v for v, n in zip(("axial", "coronal", "sagittal"), split) for _ in range(n)]
    for c, view in enumerate(views):
        if view == "axial":  # (1, kh, kw) on D centre, rows -> H, cols -> W
            h0 = (bh - kh) // 2
            dense[c, :, (bd - 1) // 2, h0 : h0 + kh, :] = w[c]
        elif view == "coronal":  # (kh, 1, kw): rows -> D, cols -> W
            dense[c, :, :, (bh - 1) // 2, :] = w[c]
        else:  # (kh, kw, 1): rows -> D, cols -> H
            h0 = (bh - kw) // 2
            dense[c, :, :, h0 : h0 + kw, (bw - 1) // 2] = w[c]
    return dense


@pytest.fixture(autouse=True)
def views_path(monkeypatch):
    """The tests here exercise the fused views node: small split layers would otherwise run as one box-kernel
    convolution (``_box_is_faster``); the box path is checked against the same reference below. Layers with dead-tap
    axes (``_dead_tap_axes``; none among these cases) are checked in ``test_layers_box.py``."""
    monkeypatch.setattr(LF, "_BOX_MAX_MACS", 0)
    monkeypatch.setattr(LF, "_CUT_DEAD_TAPS", False)


def _use_box_path(monkeypatch):
    monkeypatch.setattr(LF, "_BOX_MAX_MACS", 10**12)


def _reference(x, w, b, split, stride, padding, dilation):
    return F.conv3d(x.double(), _dense_kernel(w.double(), split), None if b is None else b.double(), stride, padding,
                    dilation)


CASES = [
    pytest.param({}, id="k3-pad1"),
    pytest.param({"stride": 2}, id="stride2"),
    pytest.param({"stride": (1, 2, 2)}, id="stride122"),
    # strided views that read every stride-th plane (kernel 1 wide there): input gradient on those planes only
    pytest.param({"stride": (3, 2, 3)}, id="stride323"),
    pytest.param({"stride": 2, "out_channels": 10, "split": (0, 4, 6)}, id="stride2-no-axial"),
    pytest.param({"dilation": 2, "padding": 2}, id="dil2"),
    pytest.param({"padding": "same", "dilation": (1, 2, 3)}, id="same-dil123"),
    pytest.param({"bias": False}, id="nobias"),
    pytest.param({"out_channels": 10, "split": (2, 5, 3)}, id="split253"),
    pytest.param({"out_channels": 10, "split": (0, 4, 6)}, id="split046"),
    pytest.param({"kernel_size": (3, 5), "padding": (1, 2, 2)}, id="k3x5"),
    pytest.param({"kernel_size": (1, 7), "padding": (0, 3, 3)}, id="k1x7-merged"),
    pytest.param({"kernel_size": (7, 1), "padding": (3, 3, 0)}, id="k7x1-merged"),
    pytest.param({"kernel_size": 1, "padding": 0}, id="k1-one-conv"),
    pytest.param({"kernel_size": 2, "padding": "same"}, id="k2-same"),
    pytest.param({"padding": 0}, id="pad0-cropped-views"),
]


def _layer_and_ref_args(opts: dict, in_channels: int = 6):
    kw = {"in_channels": in_channels, "out_channels": 9, "kernel_size": 3, "padding": 1, **opts}
    layer = ACSConv(**kw)
    with torch.no_grad():
        layer.weight.normal_()
        if layer.bias is not None:
            layer.bias.normal_()
    ref_args = (layer.split, layer.stride, layer.padding, layer.dilation)
    return layer, ref_args


@IGNORE_JIT_DEPRECATION
@pytest.mark.parametrize("path", ["views", "box"])
@pytest.mark.parametrize("fmt", ["contiguous", "channels_last_3d"])
@pytest.mark.parametrize("opts", CASES)
def test_eager_and_scripted_acs_match_reference_in_float32(opts, fmt, path, monkeypatch):
    if path == "box":
        _use_box_path(monkeypatch)
    layer, (split, stride, padding, dilation) = _layer_and_ref_args(opts)
    x = torch.randn(2, 6, 7, 9, 11)
    if fmt == "channels_last_3d":
        x = x.contiguous(memory_format=CL)
    scripted = torch.jit.script(layer)
    params = [layer.weight] + ([layer.bias] if layer.bias is not None else [])

    xr = x.double().requires_grad_(True)
    wr = layer.weight.detach().double().requires_grad_(True)
    br = layer.bias.detach().double().requires_grad_(True) if layer.bias is not None else None
    out_r = _reference(xr, wr, br, split, stride, padding, dilation)
    grad = torch.randn_like(out_r)
    grads_r = torch.autograd.grad(out_r, [xr, wr] + ([br] if br is not None else []), grad)

    for run in (layer, scripted):
        xe = x.clone().requires_grad_(True)
        out = run(xe)
        torch.testing.assert_close(out.double(), out_r, **F32)
        grads = torch.autograd.grad(out, [xe] + params, grad.float())
        for g, g_r, name in zip(grads, grads_r, ("input", "weight", "bias")):
            torch.testing.assert_close(g.double(), g_r, **F32, msg=lambda m, name=name: f"{name} gradient: {m}")
        # the layout rule: eager layers on CPU float32 compute and answer in channels_last_3d whatever the input's
        # layout (cropped views, the cat and a lone 1x1x1 conv, which can come back contiguous, are put back into
        # it); the scripted layer keeps the caller's layout
        layout = CL if fmt == "channels_last_3d" or run is layer else torch.contiguous_format
        assert out.is_contiguous(memory_format=layout), "output layout"
        if run is layer and LF._fast_views_eligible(x, layer._plans):  # the fused node's input gradient too
            assert grads[0].is_contiguous(memory_format=CL), "input gradient layout"
        if run is layer:  # the path asked for ran: one box-kernel convolution, or the fused node where it applies
            box = path == "box" and LF._box_is_faster(x, layer.weight, layer._stride_list, layer._plans)
            node = type(out.grad_fn).__name__
            if box:
                assert node.startswith("Convolution"), node
            else:
                assert (FUSED_ACS in node) == LF._fast_views_eligible(x, layer._plans), node
    if fmt == "contiguous" or path == "box":  # eager runs channels-last (or the box), scripted contiguous views
        torch.testing.assert_close(layer(x), scripted(x), rtol=1e-5, atol=1e-5)
    else:  # the forward values of both paths are bit-identical (same per-view F.conv3d calls, exact copies)
        assert torch.equal(layer(x), scripted(x))


@IGNORE_JIT_DEPRECATION
@pytest.mark.parametrize("in_channels, out_channels, kernel, size", [(3, 16, 7, 12), (16, 12, 3, 10), (40, 24, 3, 6)])
def test_batch_of_one_runs_onednn_not_the_native_slow_conv3d(in_channels, out_channels, kernel, size):
    """At batch 1 with N * C * D * H <= 20480, PyTorch's dispatcher sends a view's conv (kernels not both > 3 in their
    last two sizes) to its native ``slow_conv3d``; the fused node calls oneDNN itself and folds the view's flat axis
    into the batch for its kernel gradient. Same values as the reference, and no ``slow_conv3d`` anywhere."""
    layer = ACSConv(in_channels, out_channels, kernel, padding=kernel // 2)
    x = torch.randn(1, in_channels, size, size + 1, size + 2)
    assert LF._dispatcher_skips_onednn(x, layer.weight[:2].unsqueeze(3), 1)
    xr = x.double().requires_grad_(True)
    wr = layer.weight.detach().double().requires_grad_(True)
    br = layer.bias.detach().double().requires_grad_(True)
    out_r = _reference(xr, wr, br, layer.split, layer.stride, layer.padding, layer.dilation)
    grad = torch.randn_like(out_r)
    grads_r = torch.autograd.grad(out_r, [xr, wr, br], grad)
    xe = x.clone().requires_grad_(True)
    with torch.profiler.profile() as prof:
        out = layer(xe)
        grads = torch.autograd.grad(out, [xe, layer.weight, layer.bias], grad.float())
    assert FUSED_ACS in type(out.grad_fn).__name__
    ops = {e.key for e in prof.key_averages()}
    assert not any("slow_conv3d" in op for op in ops), sorted(op for op in ops if "conv" in op)
    torch.testing.assert_close(out.double(), out_r, **F32)
    for g, g_r in zip(grads, grads_r):
        torch.testing.assert_close(g.double(), g_r, **F32)
    # the same shapes at batch 2 go through PyTorch's own dispatch (oneDNN), and so do 1 x 1 x 1 kernels at batch 1
    # (its native gemm path was as fast or faster for them)
    assert not LF._dispatcher_skips_onednn(torch.cat([x, x]), layer.weight[:2].unsqueeze(3), 1)
    assert not LF._dispatcher_skips_onednn(x, torch.randn(5, in_channels, 1, 1, 1), 1)


@pytest.mark.parametrize("kind", ["acs-box", "conv2p5d", "mean-acs", "a3d"])
def test_batch_of_one_keeps_onednn_in_the_box_and_single_view_paths(kind):
    """The box path (small layers) and the per-view path (2.5D, Mean-ACS, merged 1 x 1 views) at batch 1: a oneDNN
    forward too (``aten.mkldnn_convolution``; its autograd formula gives the gradients through
    ``aten.convolution_backward``, the dispatcher's choice), same values and gradients as float64."""
    torch.manual_seed(0)
    layer = {"acs-box": lambda: ACSConv(8, 12, 3, padding=1), "conv2p5d": lambda: Conv2p5d(8, 12, 3, padding=1),
             "mean-acs": lambda: MeanACSConv(8, 12, 3, padding=1), "a3d": lambda: A3DConv(8, 12, 3, padding=1, depth=6)
             }[kind]()
    x = torch.randn(1, 8, 6, 7, 8)
    xe = x.clone().requires_grad_(True)
    with torch.profiler.profile() as prof:
        out = layer(xe)
        grads = torch.autograd.grad(out.square().sum(), [xe, layer.weight])
    ops = {e.key for e in prof.key_averages()}
    assert "aten::mkldnn_convolution" in ops and not any("slow_conv3d" in op for op in ops), sorted(ops)
    double = layer.double()
    xr = x.double().requires_grad_(True)
    out_r = double(xr)
    grads_r = torch.autograd.grad(out_r.square().sum(), [xr, double.weight])
    torch.testing.assert_close(out.double(), out_r, **F32)
    for g, g_r in zip(grads, grads_r):
        torch.testing.assert_close(g.double(), g_r, rtol=1e-3, atol=1e-3)


def test_fast_path_is_taken_in_eager_mode_only():
    layer = ACSConv(4, 6, 3, padding=1)
    x = torch.randn(1, 4, 5, 6, 7, requires_grad=True)
    assert FUSED_ACS in type(layer(x).grad_fn).__name__
    scripted = torch.jit.script(layer)
    assert FUSED_ACS not in type(scripted(x).grad_fn).__name__
    # single-view layers (2.5D) and groups > 1 keep the plain path
    assert FUSED_ACS not in type(Conv2p5d(4, 6, 3, padding=1)(x).grad_fn).__name__
    assert FUSED_ACS not in type(ACSConv(4, 6, 3, padding=1, groups=2)(x).grad_fn).__name__


def test_strided_views_know_which_planes_they_read():
    """Stride 2 with the 3 x 3 box: axial reads even D planes, coronal even H rows, sagittal even W columns."""
    layer = ACSConv(4, 6, 3, stride=2, padding=1)
    w = layer.weight
    got = [LF._sampled_axes(w[p[0]:p[1]].unsqueeze(p[2]), [2, 2, 2], p[7]) for p in layer._plans]
    assert got == [[0], [1], [2]]
    assert LF._sampled_axes(w.unsqueeze(2), [1, 2, 2], [0, 1, 1]) == []  # stride 1 on D: every plane is read


def test_sampled_plane_gradients_split_into_chunks_by_size():
    mib = 2**20
    assert LF._plane_chunks(24, 4 * mib) == [(0, 24)]  # small: one oneDNN call per view
    assert LF._plane_chunks(24, 4 * mib + 1) == [(0, 12), (12, 24)]
    # benchmark shape (c), 2 x 64 x 24 x 48 x 48 sampled planes: 14.2 MiB in 4 chunks, as before the size rule
    assert LF._plane_chunks(24, 2 * 64 * 24 * 48 * 48 * 4) == [(0, 6), (6, 12), (12, 18), (18, 24)]
    assert LF._plane_chunks(3, 100 * mib) == [(0, 1), (1, 2), (2, 3)]  # never more chunks than planes


@pytest.mark.parametrize("opts", [{"stride": 2}, {"stride": (3, 2, 3)}, {"stride": 2, "out_channels": 10,
                                                                          "split": (0, 4, 6)}])
def test_chunked_sampled_plane_gradients_match_reference(opts, monkeypatch):
    monkeypatch.setattr(LF, "_SAMPLED_CHUNK_BYTES", 1)  # as many chunks as allowed, as for large inputs
    layer, (split, stride, padding, dilation) = _layer_and_ref_args(opts)
    x = torch.randn(2, 6, 9, 10, 11).contiguous(memory_format=CL)
    xe = x.clone().requires_grad_(True)
    out = layer(xe)
    assert FUSED_ACS in type(out.grad_fn).__name__
    xr = x.double().requires_grad_(True)
    out_r = _reference(xr, layer.weight.detach().double(), layer.bias.detach().double(), split, stride, padding,
                       dilation)
    grad = torch.randn_like(out_r)
    torch.testing.assert_close(torch.autograd.grad(out, xe, grad.float())[0].double(),
                               torch.autograd.grad(out_r, xr, grad)[0], **F32)


def test_one_by_one_kernels_run_as_a_single_convolution():
    _, plans = LF.plan_conv_views((1, 1), 8, 10, 1, 1, 0, 1)
    assert len(plans) == 1 and plans[0][:2] == (0, 10)
    _, plans = LF.plan_conv_views((1, 1), 8, 12, 4, 1, 0, 1, split=(6, 3, 3))
    assert len(plans) == 1 and plans[0][3:6] == (0, 8, 4)  # all four groups in one grouped conv
    _, plans = LF.plan_conv_views((1, 3), 8, 10, 1, 1, (0, 1, 1), 1)
    assert [p[:2] for p in plans] == [(0, 7), (7, 10)]  # axial + coronal share the 1 x 1 x 3 kernel
    _, plans = LF.plan_conv_views((1, 1), 8, 10, 1, 1, 0, 1, mean=True)
    assert len(plans) == 3  # Mean-ACS sums its views: never merged


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="oneDNN not built in")
def test_onednn_backward_self_check_passes_and_is_used():
    assert LF._mkldnn_accumulate_ok()
    x = torch.randn(1, 4, 5, 6, 7).contiguous(memory_format=CL)
    assert LF._can_use_onednn(x, torch.randn(3, 4, 3, 3), [1, 1, 1])
    assert not LF._can_use_onednn(x, torch.randn(3, 4, 3, 3), [2, 1, 1])
    assert not LF._can_use_onednn(x.double(), torch.randn(3, 4, 3, 3).double(), [1, 1, 1])
    assert not LF._can_use_onednn(x.contiguous(), torch.randn(3, 4, 3, 3), [1, 1, 1])


@pytest.mark.parametrize("fmt", ["contiguous", "channels_last_3d"])
@pytest.mark.parametrize("needs", [(True, True, True), (False, True, True), (True, False, False), (False, False, True)])
def test_partial_gradients(needs, fmt):
    x = torch.randn(2, 4, 5, 6, 7)
    if fmt == "channels_last_3d":
        x = x.contiguous(memory_format=CL)
    w, b = torch.randn(6, 4, 3, 3), torch.randn(6)
    xe, we, be = (t.clone().requires_grad_(n) for t, n in zip((x, w, b), needs))
    out = acs_conv3d(xe, we, be, padding=1)
    out_r = _reference(x, w, b, (2, 2, 2), 1, 1, 1)
    torch.testing.assert_close(out.double(), out_r, **F32)
    leaves = [t for t, n in zip((xe, we, be), needs) if n]
    refs = [t.double().requires_grad_(True) for t, n in zip((x, w, b), needs)]
    out_r = _reference(refs[0], refs[1], refs[2], (2, 2, 2), 1, 1, 1)
    grad = torch.randn_like(out_r)
    got = torch.autograd.grad(out, leaves, grad.float())
    expected = torch.autograd.grad(out_r, [r for r, n in zip(refs, needs) if n], grad)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g.double(), e, **F32)


@pytest.mark.parametrize("stride", [1, 2])
def test_contiguous_input_is_kept_as_given_and_gets_the_channels_last_results(stride):
    # the layout rule computes in channels_last_3d on CPU float32; a contiguous input is copied for the forward
    # pass only: the node saves the caller's tensor (no input-sized copy lives until backward) and its backward lays
    # it out again, with the same operators as for a channels-last input, so every result is bit-identical
    layer = ACSConv(8, 12, 3, stride=stride, padding=1)
    x = torch.randn(2, 8, 6, 7, 8)
    xc, xl = x.clone().requires_grad_(True), x.contiguous(memory_format=CL).requires_grad_(True)
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = layer(xc)
    inputs = [t for t in saved if t.dim() == 5 and t.shape == x.shape]
    assert len(inputs) == 1 and inputs[0].data_ptr() == xc.data_ptr()
    assert out.is_contiguous(memory_format=CL) and not out.is_contiguous()
    out_l = layer(xl)
    assert torch.equal(out, out_l)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, [xc, layer.weight, layer.bias], grad)
    expected = torch.autograd.grad(out_l, [xl, layer.weight, layer.bias], grad)
    for g, e in zip(got, expected):
        assert torch.equal(g, e)
    out_r = _reference(x.double(), layer.weight.detach().double(), layer.bias.detach().double(), (4, 4, 4), stride,
                       1, 1)
    torch.testing.assert_close(out.double(), out_r, **F32)


@IGNORE_JIT_DEPRECATION
def test_no_grad_forward_equals_grad_forward():
    layer = ACSConv(4, 6, 3, padding=1)
    x = torch.randn(1, 4, 5, 6, 7).contiguous(memory_format=CL)
    with torch.no_grad():
        a = layer(x)
    assert torch.equal(a, layer(x))
    # scripted: per-view F.conv3d, which PyTorch sends to its native slow_conv3d at this batch of one (the fused node
    # calls oneDNN): equal up to summation order
    torch.testing.assert_close(a, torch.jit.script(layer)(x), rtol=1e-5, atol=1e-5)


def _a3d_loop(x, fusion):
    """out[:, c, k] = sum_d fusion[d, k, c] * x[:, c, d], slice by slice."""
    out = torch.zeros_like(x)
    for k in range(x.shape[2]):
        for d in range(x.shape[2]):
            out[:, :, k] += fusion[d, k].view(1, -1, 1, 1) * x[:, :, d]
    return out


@IGNORE_JIT_DEPRECATION
@pytest.mark.parametrize("fmt", ["contiguous", "channels_last_3d"])
def test_a3d_fusion_matmul_matches_slice_loop(fmt):
    layer = A3DConv(4, 6, 3, padding=1, depth=5)
    with torch.no_grad():
        layer.fusion.normal_()
    x = torch.randn(2, 4, 5, 6, 7)
    if fmt == "channels_last_3d":
        x = x.contiguous(memory_format=CL)
    xe, xr = x.clone().requires_grad_(True), x.double().requires_grad_(True)
    fr = layer.fusion.detach().double().requires_grad_(True)
    mixed_r = _a3d_loop(xr, fr)
    torch.testing.assert_close(LF._a3d_mix(x, layer.fusion).double(), mixed_r, **F32)
    out_r = F.conv3d(mixed_r, layer.weight.detach().double().unsqueeze(2), layer.bias.detach().double(), 1, (0, 1, 1))
    out = layer(xe)
    torch.testing.assert_close(out.double(), out_r, **F32)
    grad = torch.randn_like(out_r)
    g = torch.autograd.grad(out, [xe, layer.fusion], grad.float())
    g_r = torch.autograd.grad(out_r, [xr, fr], grad)
    for a, b in zip(g, g_r):
        torch.testing.assert_close(a.double(), b, **F32)
    # TorchScript keeps the caller's layout (the layout rule is eager-only) and mixes into a contiguous tensor;
    # eager runs the conv channels-last on CPU: float32 rounding apart
    torch.testing.assert_close(torch.jit.script(layer)(x), layer(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("groups, split", [(1, None), (4, (6, 3, 3)), (4, (0, 6, 6))])
def test_merged_one_by_one_equals_a_plain_conv(groups, split):
    layer = ACSConv(8, 12, 1, groups=groups, split=split)
    x = torch.randn(2, 8, 3, 4, 5, requires_grad=True)
    expected = F.conv3d(x, layer.weight.unsqueeze(2), layer.bias, groups=groups)  # a 1 x 1 x 1 kernel in every view
    out = layer(x)
    torch.testing.assert_close(out, expected)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, [x, layer.weight], grad)
    for a, b in zip(got, torch.autograd.grad(expected, [x, layer.weight], grad)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("in_channels, out_channels", [(128, 40), (128, 96), (8, 40)])
def test_kernel_gradient_branches_match_reference(in_channels, out_channels):
    """Both oneDNN kernel-gradient forms (swapped roles for few input channels or wide views, standard otherwise)."""
    layer = ACSConv(in_channels, out_channels, 3, padding=1)
    x = torch.randn(1, in_channels, 4, 5, 6).contiguous(memory_format=CL).requires_grad_(True)
    out = layer(x)
    xr = x.detach().double().requires_grad_(True)
    wr = layer.weight.detach().double().requires_grad_(True)
    br = layer.bias.detach().double().requires_grad_(True)
    out_r = _reference(xr, wr, br, layer.split, 1, 1, 1)
    torch.testing.assert_close(out.double(), out_r, **F32)
    grad = torch.randn_like(out_r)
    got = torch.autograd.grad(out, [x, layer.weight, layer.bias], grad.float())
    for a, b in zip(got, torch.autograd.grad(out_r, [xr, wr, br], grad)):
        torch.testing.assert_close(a.double(), b, **F32)


def _saved_bytes(fn) -> int:
    """Bytes of the distinct tensors autograd keeps for backward while ``fn()`` runs (parameters included)."""
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


@IGNORE_JIT_DEPRECATION
@pytest.mark.parametrize("fmt", ["contiguous", "channels_last_3d"])
def test_a3d_keeps_only_its_input_for_backward(fmt):
    """A3D's fused node (slice mix + 2.5D conv, the mix recomputed in backward) keeps what a 2.5D conv keeps: the
    input and the small weights, not also the mixed tensor; the scripted layer (two autograd ops) keeps both."""
    a3d = A3DConv(8, 8, 3, padding=1, depth=6)
    c2p5d = Conv2p5d(8, 8, 3, padding=1)
    x = torch.randn(2, 8, 6, 10, 12).contiguous(memory_format=CL if fmt == "channels_last_3d" else torch.contiguous_format)
    x.requires_grad_(True)
    assert type(a3d(x).grad_fn).__name__ == "_MixThenConvBackward"
    params = sum(p.numel() * 4 for p in a3d.parameters())
    assert _saved_bytes(lambda: a3d(x)) <= x.numel() * 4 + params
    assert _saved_bytes(lambda: c2p5d(x)) >= x.numel() * 4
    assert _saved_bytes(lambda: torch.jit.script(a3d)(x)) >= 2 * x.numel() * 4
    keep = A3DConv(8, 8, 3, padding=1, depth=6, recompute_mix=False)  # the trade: more memory, no recomputation
    keep.load_state_dict(a3d.state_dict())
    assert _saved_bytes(lambda: keep(x)) >= 2 * x.numel() * 4 and "recompute_mix=False" in repr(keep)
    torch.testing.assert_close(keep(x), a3d(x))
    gx, gk = torch.autograd.grad(a3d(x).square().sum(), [x, a3d.fusion]), torch.autograd.grad(
        keep(x).square().sum(), [x, keep.fusion])
    for a, b in zip(gx, gk):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    # a padding mode or a layer without a plain single view keeps the composed ops
    assert type(A3DConv(8, 8, 3, padding=1, depth=6, padding_mode="replicate")(x).grad_fn).__name__ != \
        "_MixThenConvBackward"


@pytest.mark.parametrize("kind", ["acs", "a3d"])
def test_autocast_runs_the_composed_ops(kind):
    """Under autocast (AMP; bfloat16 on CPU here) the fused nodes step aside: forward and backward run, in the
    autocast dtype, and match the same layer in float32 to bfloat16 precision."""
    layer = ACSConv(4, 6, 3, padding=1) if kind == "acs" else A3DConv(4, 6, 3, padding=1, depth=5)
    x = torch.randn(2, 4, 5, 6, 7, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16 and FUSED_ACS not in type(y.grad_fn).__name__
    assert "MixThenConv" not in type(y.grad_fn).__name__
    grad = torch.randn(y.shape)
    gx, gw = torch.autograd.grad(y.float(), [x, layer.weight], grad)
    gx32, gw32 = torch.autograd.grad(layer(x), [x, layer.weight], grad)
    assert gx.dtype == gw.dtype == torch.float32
    torch.testing.assert_close(y.float(), layer(x), rtol=0.05, atol=0.1)
    torch.testing.assert_close(gw, gw32, rtol=0.05, atol=0.5)
    torch.testing.assert_close(gx, gx32, rtol=0.05, atol=0.1)


@pytest.mark.parametrize("kind", ["acs", "acs-stride2", "a3d"])
def test_double_backward_through_the_fused_nodes(kind):
    """create_graph=True (gradient penalties, double backward) differentiates the fused nodes' gradients: their
    backward switches to plain autograd ops. The first-order gradients must not change, and the second-order ones
    are checked against finite differences."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 3, 4, 4, dtype=torch.double, generator=gen).requires_grad_(True)
    if kind == "a3d":
        layer = A3DConv(2, 3, 3, padding=1, depth=3).double()
        params = (layer.fusion, layer.weight, layer.bias)
        fused = "_MixThenConvBackward"

        def fn(x, p, w, b):
            return torch.func.functional_call(layer, {"fusion": p, "weight": w, "bias": b}, (x,))
    else:
        params = tuple(torch.randn(s, dtype=torch.double, generator=gen).requires_grad_(True)
                       for s in ((3, 2, 3, 3), (3,)))
        fused = FUSED_ACS

        def fn(x, w, b):
            return acs_conv3d(x, w, b, stride=2 if kind == "acs-stride2" else 1, padding=1)

    inputs = (x, *params)
    out = fn(*inputs)
    assert fused in type(out.grad_fn).__name__
    grad = torch.randn(out.shape, dtype=torch.double, generator=gen)
    with_graph = torch.autograd.grad(out, inputs, grad, create_graph=True, retain_graph=True)
    without = torch.autograd.grad(out, inputs, grad)
    for a, e in zip(with_graph, without):  # the first-order gradients agree, whichever path computes them
        torch.testing.assert_close(a, e)
    assert torch.autograd.gradgradcheck(fn, inputs, fast_mode=True)
