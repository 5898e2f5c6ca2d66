"""The torch.fx pass: functional calls, shape arithmetic, reductions, permutes and broadcasts become 3D.

Each pattern sits in a small module. Converted 2.5D with ``keep_depth`` (no fusion, depth never strided), a
slice-wise pattern must equal the 2D module applied slice by slice; the default conversion must give the 3D shapes.
Also: MONAI 2D networks (``UNet`` traces; ``BasicUNet`` falls back to child-by-child conversion).
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from monai_acs import convert_to_3d
from monai_acs.convert import find_leftover_2d
from monai_acs.convert.graph import ConvertedGraphModule

N, C, D, H, W = 2, 4, 3, 8, 12  # uneven D / H / W


class _ShapeInterpolate(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # torchvision segmentation heads
        small = F.avg_pool2d(x, 2)
        return F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False)


class _UnpackInterpolate(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        return F.interpolate(F.max_pool2d(x, 2), size=(h, w), mode="bilinear", align_corners=True)


class _ChannelShuffle(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # ShuffleNet v2
        b, c, h, w = x.size()
        x = x.view(b, 2, c // 2, h, w).transpose(1, 2).contiguous()
        return x.view(b, -1, h, w)


class _ChannelsLast(nn.Module):
    def __init__(self) -> None:  # ConvNeXt block: permute, LayerNorm, Linear, permute back, (C, 1, 1) layer scale
        super().__init__()
        self.norm = nn.LayerNorm(C)
        self.mlp = nn.Linear(C, C)
        self.scale = nn.Parameter(torch.rand(C, 1, 1) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(self.norm(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        return x + self.scale * y


class _BroadcastViews(nn.Module):
    def __init__(self) -> None:  # FrozenBatchNorm2d-style reshape(1, -1, 1, 1), per-channel buffer (1, C, 1, 1)
        super().__init__()
        self.gain = nn.Parameter(torch.rand(C) + 0.5)
        self.register_buffer("shift", torch.randn(1, C, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain.reshape(1, -1, 1, 1) + self.shift


class _SpatialAttention(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # flatten positions, softmax over them, view back
        b, c, h, w = x.shape
        weights = torch.softmax(x.reshape(b, c, h * w), dim=-1)
        return weights.view(b, c, h, w) * x


class _PadSlice(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # F.pad 4-tuple, strided slicing of H and W
        return F.pad(x, (1, 1, 2, 0))[:, :, ::2, ::2]


class _SqueezeExcite(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Conv2d(C, C, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # global pooling -> per-channel gate, several spellings
        gate = torch.sigmoid(self.fc(F.adaptive_avg_pool2d(x, 1)))
        mean = x.mean((2, 3), keepdim=True)
        b, c = x.shape[:2]
        return x * gate + mean + x.amax(dim=[-2, -1]).view(b, c, 1, 1)


SLICE_WISE = [_ShapeInterpolate, _UnpackInterpolate, _ChannelShuffle, _ChannelsLast, _BroadcastViews, _PadSlice]


def _per_slice(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    n, c, d, h, w = x.shape
    out = module(x.permute(0, 2, 1, 3, 4).reshape(n * d, c, h, w))
    return out.reshape(n, d, *out.shape[1:]).permute(0, 2, 1, 3, 4)


@pytest.mark.parametrize("pattern", SLICE_WISE, ids=lambda p: p.__name__)
def test_slice_wise_patterns_equal_2d_per_slice(pattern):
    torch.manual_seed(0)
    module = pattern().double()
    net = convert_to_3d(module, "conv2p5d", keep_depth=True)
    assert isinstance(net, ConvertedGraphModule) and find_leftover_2d(net) == []
    x = torch.randn(N, C, D, H, W, dtype=torch.float64)
    torch.testing.assert_close(net(x), _per_slice(module, x))


@pytest.mark.parametrize("pattern", [*SLICE_WISE, _SpatialAttention, _SqueezeExcite], ids=lambda p: p.__name__)
def test_depth_one_volume_equals_2d(pattern):
    # one slice: even the patterns that mix positions (reductions over D, H, W) equal the 2D module
    torch.manual_seed(0)
    module = pattern().double()
    net = convert_to_3d(module, "conv2p5d", keep_depth=True)
    x = torch.randn(N, C, 1, H, W, dtype=torch.float64)
    torch.testing.assert_close(net(x)[:, :, 0], module(x[:, :, 0]))


def test_reductions_and_attention_cover_depth():
    x = torch.randn(N, C, D, H, W)
    net = convert_to_3d(_SqueezeExcite(), "acs")
    mean = x.mean((2, 3, 4), keepdim=True)
    gate = torch.sigmoid(net.fc(F.adaptive_avg_pool3d(x, 1)))
    torch.testing.assert_close(net(x), x * gate + mean + x.amax(dim=(-3, -2, -1)).view(N, C, 1, 1, 1))
    attention = convert_to_3d(_SpatialAttention())
    expected = torch.softmax(x.reshape(N, C, D * H * W), dim=-1).view(N, C, D, H, W) * x
    torch.testing.assert_close(attention(x), expected)


def test_default_conversion_strides_depth_like_height():
    class Pools(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pool = nn.AvgPool2d(3, stride=1, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
            y = self.pool(F.avg_pool2d(y, 3, 1, 1))  # padded 3x3 pools on small maps (Inception v3 on 1x1 maps)
            return F.interpolate(y, scale_factor=2, mode="bilinear")

    x = torch.randn(N, C, 6, H, W)
    assert convert_to_3d(Pools())(x).shape == (N, C, 6, H, W)
    assert convert_to_3d(Pools(), keep_depth=True)(x).shape == (N, C, 6, H, W)
    assert convert_to_3d(Pools())(torch.randn(1, C, 1, 1, 1)).shape == (1, C, 2, 2, 2)
    kept = convert_to_3d(Pools(), keep_depth=True)
    torch.testing.assert_close(kept(x[:, :, :1]), _per_slice(Pools(), x[:, :, :1]))


def _monai_nets(norm: str = "instance"):
    from monai.networks.nets import BasicUNet, UNet

    unet = UNet(spatial_dims=2, in_channels=1, out_channels=2, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
    basic = BasicUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(4, 4, 8, 8, 16, 4), norm=norm)
    return unet, basic


@pytest.mark.parametrize("operator", ["acs", "conv2p5d", "i3d"])
def test_monai_unet_traces_and_trains(operator):
    unet, _ = _monai_nets()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # UNet is traced: no fallback warning
        net = convert_to_3d(unet, operator)
    assert isinstance(net, ConvertedGraphModule)
    out = net(torch.randn(2, 1, 16, 12, 20))
    assert out.shape == (2, 2, 16, 12, 20)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("operator", ["acs", "mean_acs"])
def test_monai_basic_unet_falls_back_child_by_child(operator):
    _, basic = _monai_nets()
    with pytest.warns(UserWarning) as caught:
        net = convert_to_3d(basic, operator)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    # names the modules, why tracing failed, and which layout-dependent names their own forward uses
    for text in ("upcat_4, upcat_3, upcat_2, upcat_1 (UpCat)", "torch.jit.isinstance", "'pad'", "'shape'"):
        assert text in messages[0], messages[0]
    assert "BasicUNet" not in messages[0].split("(UpCat)")[0]  # its forward uses nothing 2D: not reported
    assert find_leftover_2d(net) == []
    x = torch.randn(1, 1, 33, 18, 19)  # odd sizes: UpCat pads the upsampled map in 3D as well
    out = net(x)
    assert out.shape == (1, 2, 33, 18, 19)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_monai_basic_unet_2p5d_equals_2d_per_slice():
    # batch norm in eval mode is per slice; instance norm would normalise over the whole volume
    _, basic = _monai_nets(norm="batch")
    basic = basic.double().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = convert_to_3d(basic, "conv2p5d", keep_depth=True).eval()
    x = torch.randn(1, 1, 3, 32, 48, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(net(x), _per_slice(basic, x))


class _EvenKernels(nn.Module):
    def __init__(self) -> None:  # keep_depth depth corrections: pad before the 4x4 conv, crop after the 2x2 deconv
        super().__init__()
        self.patchify = nn.Conv2d(C, C, 4, stride=4)
        self.up = nn.ConvTranspose2d(C, C, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.up(self.patchify(x)), 3, 1, 1)


@pytest.mark.parametrize(
    "pattern", [*SLICE_WISE, _SpatialAttention, _SqueezeExcite, _EvenKernels], ids=lambda p: p.__name__
)
def test_rewritten_graphs_script(pattern):
    net = convert_to_3d(pattern(), "acs", keep_depth=True).eval()
    x = torch.randn(1, C, D, H, W)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script is deprecated in torch 2.14
        scripted = torch.jit.script(net)
    torch.testing.assert_close(scripted(x), net(x))


def test_a3d_after_a_depth_padding_correction_is_built_for_the_padded_depth():
    # ConvNeXt's 4 x 4 stem under keep_depth: the graph pads one slice in front of it, so its A3D slice mix is
    # (D + 1) x (D + 1); the next layers see D slices again (this made ConvNeXt fail in the zoo sweep for a3d)
    net = convert_to_3d(_EvenKernels(), "a3d", keep_depth=True, depth=D)
    assert net.patchify.depth == D + 1
    assert net(torch.randn(1, C, D, H, W)).shape == (1, C, D, H // 2, W // 2)  # stride 4, then 2x up


def test_untraceable_parent_converts_its_children_by_tracing_them():
    from torchvision.models.convnext import LayerNorm2d

    class Untraceable(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, C, 3, padding=1)
            self.norm = LayerNorm2d(C)  # channels-last permutes inside: traced and rewritten on its own

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.abs().sum() > 0:  # data-dependent control flow (always true here): torch.fx cannot trace it
                x = -x
            return self.norm(self.conv(x))

    with pytest.warns(UserWarning, match=r"<root> \(Untraceable\).*TraceError.*'sum'"):
        net = convert_to_3d(Untraceable(), "conv2p5d", keep_depth=True)
    assert isinstance(net, Untraceable) and isinstance(net.norm, ConvertedGraphModule)
    assert find_leftover_2d(net) == []
    x = torch.randn(N, 3, D, H, W)
    model = Untraceable()
    model.load_state_dict(net.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(net(x), _per_slice(model, x), rtol=1e-5, atol=1e-5)
