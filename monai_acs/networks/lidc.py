"""LIDC-IDRI networks of the ACS paper (Sec. IV-B-2): ResNet-18 FCN segmentation and ResNet-18 classifier.

Both use torchvision's ResNet-18 with the first 7x7 convolution at stride 1, no first max-pool, and layer3 at
stride 1, so the encoder down-samples twice (layer2, layer4); the FCN decoder up-samples twice, fusing the
layer2 and stem features. Parameter names match torchvision's ``resnet18`` under ``backbone.``, so ImageNet
weights load unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from ._common import convert_with_weights, load_backbone_weights

__all__ = ["ResNet18Encoder2d", "FCNResNet18_2d", "ClsResNet18_2d", "lidc_seg_net", "lidc_cls_net"]


class ResNet18Encoder2d(nn.Module):
    """torchvision ResNet-18 at higher resolution: conv1 stride 1, no max-pool, layer3 stride 1.

    ``forward`` returns (layer4, layer2, stem) features at strides 4, 2 and 1.
    """

    def __init__(self) -> None:
        super().__init__()
        net = torchvision.models.resnet18(weights=None)
        net.conv1.stride = (1, 1)
        net.layer3[0].conv1.stride = (1, 1)
        net.layer3[0].downsample[0].stride = (1, 1)
        self.conv1, self.bn1, self.relu = net.conv1, net.bn1, net.relu
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        stem = self.relu(self.bn1(self.conv1(x)))
        mid = self.layer2(self.layer1(stem))
        return self.layer4(self.layer3(mid)), mid, stem


class FCNResNet18_2d(nn.Module):
    """ResNet-18 encoder + FCN decoder: fuse layer4 with layer2 (1x1 conv), then with the stem, then an FCN head."""

    def __init__(self, num_classes: int = 2, in_channels: int = 3) -> None:
        super().__init__()
        self.backbone = ResNet18Encoder2d()
        if in_channels != 3:
            self.backbone.conv1 = nn.Conv2d(in_channels, 64, 7, 1, 3, bias=False)
        self.fuse1 = nn.Conv2d(512 + 128, 512, 1, bias=False)
        self.fuse2 = nn.Conv2d(512 + 64, 512, 1, bias=False)
        self.head = nn.Sequential(
            nn.Conv2d(512, 128, 3, padding=1, bias=False), nn.BatchNorm2d(128), nn.ReLU(), nn.Conv2d(128, num_classes, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        deep, mid, stem = self.backbone(x)
        x = self.fuse1(torch.cat([mid, F.interpolate(deep, scale_factor=2.0, mode="bilinear")], dim=1))
        x = self.fuse2(torch.cat([stem, F.interpolate(x, scale_factor=2.0, mode="bilinear")], dim=1))
        return self.head(x)


class ClsResNet18_2d(nn.Module):
    """ResNet-18 encoder + global average pooling + linear head (one logit for binary cross-entropy)."""

    def __init__(self, num_classes: int = 1, in_channels: int = 3) -> None:
        super().__init__()
        self.backbone = ResNet18Encoder2d()
        if in_channels != 3:
            self.backbone.conv1 = nn.Conv2d(in_channels, 64, 7, 1, 3, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.pool(self.backbone(x)[0]), 1))


def _build(net2d: nn.Module, operator: str, weights: Any, backbone_weights: Any) -> nn.Module:
    if backbone_weights is not None:
        load_backbone_weights(net2d.backbone, backbone_weights)
    return convert_with_weights(net2d, operator, weights)


def lidc_seg_net(
    operator: str = "acs", weights: Any = None, backbone_weights: Any = None, num_classes: int = 2, in_channels: int = 3
) -> nn.Module:
    """The LIDC nodule segmentation network (ACS paper Sec. IV-B-2), converted to 3D.

    Args:
        operator: fusion operator (``"acs"``, ``"conv2p5d"``, ``"i3d"`` for 3D, ...). Default ``"acs"``.
        weights: whole-network 2D weights of :class:`FCNResNet18_2d`. Default None.
        backbone_weights: 2D ImageNet weights of the encoder, e.g. ``"ResNet18_Weights.IMAGENET1K_V1"`` ("p.").
        num_classes: output classes (2: background, nodule). Default 2.
        in_channels: input channels (3: the grey channel repeated for RGB weights). Default 3.

    Returns:
        The 3D network: (N, in_channels, D, H, W) -> (N, num_classes, D, H, W).

    Examples:
        >>> net = lidc_seg_net("acs")
        >>> round(sum(p.numel() for p in net.parameters()) * 4 / 1e6, 1)  # MB of float32 parameters
        49.6
    """
    return _build(FCNResNet18_2d(num_classes, in_channels), operator, weights, backbone_weights)


def lidc_cls_net(
    operator: str = "acs", weights: Any = None, backbone_weights: Any = None, num_classes: int = 1, in_channels: int = 3
) -> nn.Module:
    """The LIDC malignancy classifier (ACS paper Sec. IV-B-2): ResNet-18 with one logit, converted to 3D.

    Args:
        operator: fusion operator. Default ``"acs"``.
        weights: whole-network 2D weights of :class:`ClsResNet18_2d`. Default None.
        backbone_weights: 2D ImageNet weights of the encoder ("p."). Default None.
        num_classes: logits (1 for binary cross-entropy). Default 1.
        in_channels: input channels. Default 3.

    Returns:
        The 3D network: (N, in_channels, D, H, W) -> (N, num_classes).
    """
    return _build(ClsResNet18_2d(num_classes, in_channels), operator, weights, backbone_weights)
