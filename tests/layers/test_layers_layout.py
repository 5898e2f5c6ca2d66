"""The layout rule across whole networks: norms and pools keep channels-last, networks do not flip layouts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from monai_acs.layers import ACSConv, A3DConv, Conv2p5d, keep_channels_last
from monai_acs.layers.layout import ChannelsLastAvgPool3d, ChannelsLastInstanceNorm3d

CL = torch.channels_last_3d


def _is_cl(t: torch.Tensor) -> bool:
    return t.is_contiguous(memory_format=CL) and not t.is_contiguous()


@pytest.mark.parametrize("channels", [6, 16])
@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("affine", [False, True])
def test_instance_norm_keeps_channels_last_and_its_results(affine, n, channels):
    # 16 channels: a batch norm per sample on channels-last rows; 6: instance norm on a contiguous copy
    plain = nn.InstanceNorm3d(channels, affine=affine)
    if affine:
        with torch.no_grad():
            plain.weight.normal_(), plain.bias.normal_()
    swapped = keep_channels_last(nn.Sequential(nn.InstanceNorm3d(channels, affine=affine)))
    swapped.load_state_dict({f"0.{k}": v for k, v in plain.state_dict().items()})  # the same state-dict keys
    assert type(swapped[0]) is ChannelsLastInstanceNorm3d
    x = torch.randn(n, channels, 4, 5, 7) * torch.arange(1.0, n + 1).view(n, 1, 1, 1, 1)  # samples of their own scale
    xa, xb = x.clone().requires_grad_(True), x.contiguous(memory_format=CL).requires_grad_(True)
    ya, yb = plain(xa), swapped(xb)
    assert _is_cl(yb)
    torch.testing.assert_close(yb, ya, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(ya)
    ga = torch.autograd.grad(ya, [xa, *plain.parameters()], grad)
    gb = torch.autograd.grad(yb, [xb, *swapped.parameters()], grad)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    assert torch.equal(swapped(x), plain(x))  # a contiguous input runs nn.InstanceNorm3d itself



@pytest.mark.parametrize("kwargs", [{"kernel_size": (1, 2, 2), "stride": (1, 2, 2)},
                                    {"kernel_size": (1, 3, 3), "stride": (1, 2, 2), "padding": (0, 1, 1)},
                                    {"kernel_size": 2}])
def test_avg_pool_keeps_channels_last_where_it_folds(kwargs):
    plain = nn.AvgPool3d(**kwargs)
    swapped = keep_channels_last(nn.Sequential(nn.AvgPool3d(**kwargs)))[0]
    assert type(swapped) is ChannelsLastAvgPool3d
    x = torch.randn(2, 5, 4, 8, 9).contiguous(memory_format=CL)
    torch.testing.assert_close(swapped(x), plain(x), rtol=1e-6, atol=1e-6)
    assert _is_cl(swapped(x)) == (kwargs["kernel_size"] != 2)  # a 2-deep window runs nn.AvgPool3d itself


def test_subclasses_are_left_alone():
    class Mine(nn.InstanceNorm3d):
        pass

    net = keep_channels_last(nn.Sequential(Mine(3)))
    assert type(net[0]) is Mine


def test_one_channel_input_answers_channels_last():
    # a (N, 1, D, H, W) input is contiguous and channels-last at once: ACS still answers channels-last, so the rest
    # of the network does not run contiguous (and copy at every layer)
    out = ACSConv(1, 6, 3, padding=1)(torch.randn(2, 1, 5, 6, 7))
    assert _is_cl(out)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, CL])
def test_conv2p5d_keeps_the_callers_layout(fmt, stride):
    # one 1 x K x K conv gains nothing from re-laying its input out (docs/operators.md): it answers in the caller's
    x = torch.randn(2, 4, 5, 6, 7).contiguous(memory_format=fmt)
    out = Conv2p5d(4, 6, 3, padding=1, stride=stride)(x)
    assert _is_cl(out) == (fmt == CL) and (fmt == CL or out.is_contiguous())


@pytest.mark.parametrize("fmt", [torch.contiguous_format, CL])
@pytest.mark.parametrize("recompute_mix", [True, False])
def test_a3d_computes_in_its_mix_layout(fmt, recompute_mix):
    # A3D's slice mix is a matmul over the contiguous (N, C, D, H*W) view: the conv after it runs and answers
    # contiguous (a channels-last round trip per layer cost more than the conv gained, docs/operators.md)
    layer = A3DConv(4, 6, 3, padding=1, depth=5, recompute_mix=recompute_mix)
    out = layer(torch.randn(2, 4, 5, 6, 7).contiguous(memory_format=fmt))
    assert out.is_contiguous() and not _is_cl(out)


def test_deeplesion_backbone_runs_contiguous_throughout():
    from monai_acs.networks.deeplesion import deeplesion_backbone

    net = deeplesion_backbone("a3d", num_slices=3, block_config=(1, 1, 1), num_init_features=8, growth_rate=4)
    inputs = []
    hooks = [m.register_forward_hook(lambda m, i, o: inputs.append(i[0])) for m in net.modules()
             if isinstance(m, A3DConv)]
    net(torch.randn(1, 1, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert len(inputs) >= 4 and all(x.is_contiguous() for x in inputs)


def test_poc_unet_switches_layout_once():
    from monai_acs.networks import poc_unet

    net = poc_unet("acs", channels=(8, 16), strides=(2,))
    convs = (ACSConv, Conv2p5d)
    inputs = []
    hooks = [m.register_forward_hook(lambda m, i, o: inputs.append(i[0])) for m in net.modules()
             if isinstance(m, convs)]
    out = net(torch.randn(2, 1, 8, 8, 8))  # contiguous, as MONAI transforms deliver it
    for h in hooks:
        h.remove()
    assert _is_cl(out)
    # after the first layers (which read the one-channel batch), every convolution is fed channels-last
    late = [x for x in inputs if x.shape[1] > 1]
    assert late and all(_is_cl(x) for x in late)


def test_conv2p5d_poc_unet_runs_contiguous_throughout():
    from monai_acs.networks import poc_unet

    net = poc_unet("conv2p5d", channels=(8, 16), strides=(2,))
    inputs = []
    hooks = [m.register_forward_hook(lambda m, i, o: inputs.append(i[0])) for m in net.modules()
             if isinstance(m, Conv2p5d)]
    out = net(torch.randn(2, 1, 8, 8, 8))
    for h in hooks:
        h.remove()
    assert len(inputs) >= 4 and all(x.is_contiguous() for x in inputs) and out.is_contiguous()


def test_swapped_modules_script_and_agree():
    # `monai.bundle ckpt_export` scripts the networks: the swapped classes script (running the parent's computation)
    net = keep_channels_last(nn.Sequential(nn.InstanceNorm3d(4, affine=True), nn.AvgPool3d((1, 2, 2))))
    x = torch.randn(1, 4, 3, 4, 4)
    scripted = torch.jit.script(net)
    torch.testing.assert_close(scripted(x), net(x))
    torch.testing.assert_close(scripted(x), net(x.contiguous(memory_format=CL)), rtol=1e-5, atol=1e-5)
