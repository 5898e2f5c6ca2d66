"""Whole-network weight transfer: 2.5D conversion equals the 2D model slice by slice; keep_depth; 2D heads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from monai_acs import convert_to_3d

# Uneven depth / height / width catch axis mix-ups.
N, D, H, W = 2, 3, 20, 24


def _per_slice(model2d: nn.Module, volume: torch.Tensor) -> torch.Tensor:
    """Apply a 2D model to every depth slice of (N, C, D, H, W) and stack the results back along depth."""
    n, c, d, h, w = volume.shape
    out = model2d(volume.permute(0, 2, 1, 3, 4).reshape(n * d, c, h, w))
    return out.reshape(n, d, *out.shape[1:]).permute(0, 2, 1, 3, 4)


def _randomise_batchnorm(model: nn.Module) -> None:
    """Non-trivial running statistics and affine parameters, so that eval-mode BatchNorm is tested for real."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            c = module.num_features
            module.running_mean.copy_(torch.randn(c, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(c, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(c, generator=generator) * 0.1)


class _EncoderDecoder(nn.Module):
    """Conv / BN / pooling / strided conv / bilinear upsampling / skip concatenation / transposed conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.down = nn.Sequential(nn.Conv2d(8, 12, 3, stride=2, padding=1, groups=4), nn.BatchNorm2d(12), nn.ReLU())
        self.smooth = nn.AvgPool2d(3, stride=1, padding=1)
        self.up = nn.ConvTranspose2d(12, 8, 2, stride=2)
        self.wide = nn.Conv2d(16, 6, (1, 5), padding=(0, 2))
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.stem(x)
        y = self.smooth(self.down(self.pool(skip)))
        y = F.interpolate(self.up(y), size=skip.shape[-2:], mode="bilinear", align_corners=False)
        y = F.relu(self.wide(torch.cat([skip, y], dim=1)))
        return self.head(F.max_pool2d(y, 3, stride=1, padding=1))


def test_2p5d_equals_2d_per_slice_hand_made_net():
    model = _EncoderDecoder().double().eval()
    _randomise_batchnorm(model)
    net = convert_to_3d(model, "conv2p5d", keep_depth=True).eval()
    x = torch.randn(N, 3, D, H, W, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(net(x), _per_slice(model, x), rtol=1e-10, atol=1e-10)


def test_2p5d_equals_2d_per_slice_fcn_resnet50():
    # a real torchvision segmentation model: dilated ResNet-50, x.shape[-2:] + bilinear F.interpolate to the input
    model = torchvision.models.segmentation.fcn_resnet50(weights=None, weights_backbone=None, num_classes=3).eval()
    _randomise_batchnorm(model)
    net = convert_to_3d(model, "conv2p5d", keep_depth=True).eval()
    x = torch.randn(1, 3, 2, 32, 40)
    with torch.no_grad():
        torch.testing.assert_close(net(x)["out"], _per_slice(lambda t: model(t)["out"], x), rtol=1e-4, atol=1e-4)


def test_2p5d_resnet18_logits_are_the_mean_of_slice_logits():
    # global average pooling over (D, H, W) + Linear = the mean over slices of the 2D logits (fc is affine)
    model = torchvision.models.resnet18(num_classes=5).eval()
    _randomise_batchnorm(model)
    net = convert_to_3d(model, "conv2p5d", keep_depth=True).eval()
    x = torch.randn(N, 3, D, 32, 36)
    with torch.no_grad():
        per_slice = model(x.permute(0, 2, 1, 3, 4).reshape(N * D, 3, 32, 36)).reshape(N, D, 5).mean(1)
        torch.testing.assert_close(net(x), per_slice, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("depth", [3, 7])
def test_keep_depth_never_strides_or_pools_depth(depth):
    net = convert_to_3d(torchvision.models.resnet18(num_classes=4), "acs", keep_depth=True).eval()
    for name, module in net.named_modules():
        stride = getattr(module, "stride", None)
        if isinstance(stride, tuple) and len(stride) == 3:
            assert stride[0] == 1, (name, stride)
        kernel = getattr(module, "kernel_size", None)
        if isinstance(module, (nn.MaxPool3d, nn.AvgPool3d)):
            assert kernel[0] == 1, (name, kernel)
    depths = {}

    def record(name):
        def hook(module, args, output):
            depths[name] = output.shape[2]

        return hook

    hooks = [m.register_forward_hook(record(n)) for n, m in net.named_modules() if n and n not in ("avgpool", "fc")]
    with torch.no_grad():
        out = net(torch.randn(1, 3, depth, 32, 32))
    for hook in hooks:
        hook.remove()
    assert out.shape == (1, 4)
    assert depths and set(depths.values()) == {depth}, depths


def test_keep_depth_even_kernels_keep_depth():
    # 4x4 / stride-4 patchify stem (ConvNeXt) and a 2x2 / stride-2 transposed conv (U-Net decoders)
    model = nn.Sequential(nn.Conv2d(2, 4, 4, stride=4), nn.ReLU(), nn.ConvTranspose2d(4, 3, 2, stride=2))
    for operator in ("acs", "conv2p5d", "i3d", "mean_acs"):
        net = convert_to_3d(model, operator, keep_depth=True)
        assert net(torch.randn(1, 2, 5, 16, 24)).shape == (1, 3, 5, 8, 12), operator
    # 2.5D: still exactly the 2D model per slice
    net = convert_to_3d(model.double(), "conv2p5d", keep_depth=True)
    x = torch.randn(1, 2, 5, 16, 24, dtype=torch.float64)
    torch.testing.assert_close(net(x), _per_slice(model, x))


# the forward pass is checked on AlexNet only (VGG-11 in 3D costs as much as the rest of this file)
@pytest.mark.parametrize(("name", "size", "pool"), [("alexnet", 63, (1, 6, 6)), ("vgg11", None, (1, 7, 7))])
def test_vgg_alexnet_heads_keep_their_linear_weights(name, size, pool):
    model = torchvision.models.get_model(name, weights=None, num_classes=3)
    net = convert_to_3d(model, "acs", weights=model.state_dict()).eval()
    assert isinstance(net.avgpool, nn.AdaptiveAvgPool3d) and tuple(net.avgpool.output_size) == pool
    # the 2D state dict, Linear head included, loads into the 3D model unchanged
    net.load_state_dict(model.state_dict(), strict=True)
    torch.testing.assert_close(net.classifier[-1].weight, model.classifier[-1].weight)
    if size is not None:
        with torch.no_grad():
            assert net(torch.randn(1, 3, size, size, size)).shape == (1, 3)
