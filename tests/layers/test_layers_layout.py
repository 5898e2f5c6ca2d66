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


@pytest.mark.parametrize("affine", [False, True])
def test_instance_norm_keeps_channels_last_and_its_results(affine):
    plain = nn.InstanceNorm3d(6, affine=affine)
    if affine:
        with torch.no_grad():
            plain.weight.normal_(), plain.bias.normal_()
    swapped = keep_channels_last(nn.Sequential(nn.InstanceNorm3d(6, affine=affine)))
    swapped.load_state_dict({f"0.{k}": v for k, v in plain.state_dict().items()})  # the same state-dict keys
    assert type(swapped[0]) is ChannelsLastInstanceNorm3d
    x = torch.randn(2, 6, 4, 5, 7)
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


@pytest.mark.parametrize("layer", [lambda: ACSConv(1, 6, 3, padding=1), lambda: Conv2p5d(1, 6, 3, padding=1),
                                   lambda: A3DConv(1, 6, 3, padding=1, depth=5)])
def test_one_channel_input_answers_channels_last(layer):
    # a (N, 1, D, H, W) input is contiguous and channels-last at once: the layer still answers channels-last, so
    # the rest of the network does not run contiguous (and copy at every layer)
    out = layer()(torch.randn(2, 1, 5, 6, 7))
    assert _is_cl(out)


@pytest.mark.parametrize("operator", ["acs", "conv2p5d"])
def test_poc_unet_switches_layout_once(operator):
    from monai_acs.networks import poc_unet

    net = poc_unet(operator, channels=(8, 16), strides=(2,))
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


def test_swapped_modules_script_and_agree():
    # `monai.bundle ckpt_export` scripts the networks: the swapped classes script (running the parent's computation)
    net = keep_channels_last(nn.Sequential(nn.InstanceNorm3d(4, affine=True), nn.AvgPool3d((1, 2, 2))))
    x = torch.randn(1, 4, 3, 4, 4)
    scripted = torch.jit.script(net)
    torch.testing.assert_close(scripted(x), net(x))
    torch.testing.assert_close(scripted(x), net(x.contiguous(memory_format=CL)), rtol=1e-5, atol=1e-5)
