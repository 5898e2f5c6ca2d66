"""LIDC-IDRI networks with other 2D backbones (ACS paper Tables A4 / A5) and at reduced width.

The ACS paper's LIDC networks (Sec. IV-B-2, :mod:`monai_acs.networks.lidc`) use ResNet-18; its supplement repeats
the experiment with VGG-16 (Table A4) and DenseNet-121 (Table A5) "with exactly the same settings". This module
builds the same two heads - the FCN-like segmentation decoder with two progressive up-samplings, and the pooled
classifier - on any of these encoders, converted with :func:`monai_acs.convert_to_3d`:

- ``"resnet18"``: at ``width=64`` exactly :func:`monai_acs.networks.lidc_seg_net` / ``lidc_cls_net`` (the paper's
  network); at another width the same layout with channels ``width, 2 width, 4 width, 8 width``.
- ``"vgg16"`` / ``"vgg16_bn"``: torchvision's VGG-16 convolutional part (without / with batch norm), keeping the
  2nd and 4th max-pool only, so that, like the paper's ResNet-18 (first convolution at stride 1, no first
  max-pool, ``layer3`` at stride 1), the encoder down-samples twice. Features: block 1 (stride 1), block 3
  (stride 2), block 5 (stride 4).
- ``"densenet121"``: torchvision's DenseNet-121 features with ``conv0`` at stride 1, no ``pool0``, and no pooling in
  ``transition2``. Features: ``relu0`` (stride 1), ``denseblock2`` (stride 2), ``relu(norm5)`` (stride 4).

The paper does not say where it removed the VGG and DenseNet poolings; the choice above gives the three backbones
the same strides as its ResNet-18. Parameter names follow torchvision under ``backbone.``, so ImageNet weights
(:data:`LIDC_IMAGENET_WEIGHTS`) load unchanged at ``width=64``. ``width`` scales the channel counts (VGG: every
stage; DenseNet: ``num_init_features=width``, ``growth_rate=width // 2``) for smaller CPU experiments; reduced
widths cannot load ImageNet weights.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock

from ._common import convert_with_weights, load_backbone_weights
from .lidc import lidc_cls_net, lidc_seg_net

__all__ = [
    "LIDC_BACKBONES",
    "LIDC_IMAGENET_WEIGHTS",
    "DenseNet121Encoder2d",
    "LIDCClassifier2d",
    "LIDCFCN2d",
    "ScaledResNet18Encoder2d",
    "VGG16Encoder2d",
    "build_lidc_cls_net",
    "build_lidc_seg_net",
    "lidc_encoder_2d",
    "lidc_net_2d",
]

#: The backbones :func:`build_lidc_seg_net` / :func:`build_lidc_cls_net` accept.
LIDC_BACKBONES: tuple[str, ...] = ("resnet18", "vgg16", "vgg16_bn", "densenet121")

#: torchvision's ImageNet weights of each backbone (torchvision's cache; downloaded into it once when missing).
LIDC_IMAGENET_WEIGHTS: dict[str, str] = {
    "resnet18": "ResNet18_Weights.IMAGENET1K_V1",
    "vgg16": "VGG16_Weights.IMAGENET1K_V1",
    "vgg16_bn": "VGG16_BN_Weights.IMAGENET1K_V1",
    "densenet121": "DenseNet121_Weights.IMAGENET1K_V1",
}

_PAPER_WIDTH = 64


def _init_like_torchvision(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


def _basic_layer(inplanes: int, planes: int, stride: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or inplanes != planes:
        downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
    return nn.Sequential(BasicBlock(inplanes, planes, stride, downsample), BasicBlock(planes, planes))


class ScaledResNet18Encoder2d(nn.Module):
    """The paper's high-resolution ResNet-18 encoder (conv1 stride 1, no max-pool, layer3 stride 1) at any width.

    At ``width=64`` its parameters have torchvision's ``resnet18`` names and shapes. ``forward`` returns
    (layer4, layer2, stem) features with ``channels = (8 width, 2 width, width)`` at strides 4, 2, 1.

    Args:
        width: channels of the stem and ``layer1``. Default 64 (ResNet-18).
        in_channels: input channels. Default 3.
    """

    def __init__(self, width: int = _PAPER_WIDTH, in_channels: int = 3) -> None:
        super().__init__()
        w = int(width)
        self.conv1 = nn.Conv2d(in_channels, w, 7, 1, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _basic_layer(w, w, 1)
        self.layer2 = _basic_layer(w, 2 * w, 2)
        self.layer3 = _basic_layer(2 * w, 4 * w, 1)
        self.layer4 = _basic_layer(4 * w, 8 * w, 2)
        self.channels = (8 * w, 2 * w, w)
        _init_like_torchvision(self)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        stem = self.relu(self.bn1(self.conv1(x)))
        mid = self.layer2(self.layer1(stem))
        return self.layer4(self.layer3(mid)), mid, stem


class VGG16Encoder2d(nn.Module):
    """torchvision's VGG-16 ``features`` keeping only the 2nd and 4th max-pool (total stride 4).

    The removed pools become ``nn.Identity`` so parameter names stay torchvision's (``features.<i>.weight``).
    ``forward`` returns (block 5, block 3, block 1) features with ``channels = (8 s, 4 s, s)``, ``s = width``.

    Args:
        width: channels of the first block (VGG-16: 64; the other blocks scale with it). Default 64.
        batch_norm: VGG-16-BN. Default False.
        in_channels: input channels. Default 3.
    """

    def __init__(self, width: int = _PAPER_WIDTH, batch_norm: bool = False, in_channels: int = 3) -> None:
        super().__init__()
        cfg = [v if v == "M" else int(v) * int(width) // _PAPER_WIDTH for v in torchvision.models.vgg.cfgs["D"]]
        features = torchvision.models.vgg.make_layers(cfg, batch_norm=batch_norm)
        if in_channels != 3:
            features[0] = nn.Conv2d(in_channels, cfg[0], 3, padding=1)
        pools = [i for i, m in enumerate(features) if isinstance(m, nn.MaxPool2d)]
        for i in pools[0::2]:  # pools 1, 3 and 5 go; pools 2 and 4 stay
            features[i] = nn.Identity()
        self.features = features
        self._taps = (pools[0], pools[2], pools[4])  # outputs of blocks 1, 3 and 5
        convs = [v for v in cfg if v != "M"]  # 2 + 2 + 3 + 3 + 3 convolutions
        self.channels = (int(convs[12]), int(convs[6]), int(convs[0]))
        for m in self.features.modules():  # torchvision's VGG initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        stem = mid = x
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i == self._taps[0]:
                stem = x
            elif i == self._taps[1]:
                mid = x
        return x, mid, stem


class DenseNet121Encoder2d(nn.Module):
    """torchvision's DenseNet-121 ``features`` with ``conv0`` at stride 1, no ``pool0``, no ``transition2`` pool.

    ``forward`` returns (``relu(norm5)``, ``denseblock2``, ``relu0``) features at strides 4, 2, 1; at ``width=64``
    ``channels = (1024, 512, 64)``.

    Args:
        width: ``num_init_features`` (DenseNet-121: 64); ``growth_rate = width // 2``. Default 64.
        in_channels: input channels. Default 3.
    """

    def __init__(self, width: int = _PAPER_WIDTH, in_channels: int = 3) -> None:
        super().__init__()
        w = int(width)
        if w < 2 or w % 2:
            raise ValueError(f"DenseNet121Encoder2d: width must be an even number >= 2, got {width}")
        growth, blocks = w // 2, (6, 12, 24, 16)
        features = torchvision.models.DenseNet(growth_rate=growth, block_config=blocks, num_init_features=w).features
        features.conv0 = nn.Conv2d(in_channels, w, 7, 1, 3, bias=False)
        nn.init.kaiming_normal_(features.conv0.weight)
        features.pool0 = nn.Identity()
        features.transition2.pool = nn.Identity()
        self.features = features
        c = w
        per_block = []
        for i, n in enumerate(blocks):
            c += n * growth
            per_block.append(c)
            if i < len(blocks) - 1:
                c //= 2
        self.channels = (per_block[3], per_block[1], w)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        f = self.features
        stem = f.relu0(f.norm0(f.conv0(x)))
        mid = f.denseblock2(f.transition1(f.denseblock1(f.pool0(stem))))
        deep = f.norm5(f.denseblock4(f.transition3(f.denseblock3(f.transition2(mid)))))
        return F.relu(deep), mid, stem


def lidc_encoder_2d(backbone: str, width: int = _PAPER_WIDTH, in_channels: int = 3) -> nn.Module:
    """The 2D encoder of ``backbone`` (one of :data:`LIDC_BACKBONES`), with ``channels = (deep, mid, stem)``.

    Raises:
        ValueError: unknown backbone.
    """
    if backbone == "resnet18":
        return ScaledResNet18Encoder2d(width, in_channels)
    if backbone in ("vgg16", "vgg16_bn"):
        return VGG16Encoder2d(width, backbone == "vgg16_bn", in_channels)
    if backbone == "densenet121":
        return DenseNet121Encoder2d(width, in_channels)
    raise ValueError(f"unknown LIDC backbone {backbone!r}; choose one of {LIDC_BACKBONES}")


class LIDCFCN2d(nn.Module):
    """An encoder + the paper's FCN-like decoder (two progressive 2x up-samplings with skip fusion, then a head).

    Same structure as :class:`monai_acs.networks.lidc.FCNResNet18_2d`: the deep features, up-sampled, are fused
    with the mid features by a 1x1 convolution, up-sampled again and fused with the stem features, then a 3x3
    convolution to ``deep // 4`` channels, batch norm, ReLU and a 1x1 classifier.
    """

    def __init__(self, backbone: nn.Module, num_classes: int = 2) -> None:
        super().__init__()
        deep, mid, stem = backbone.channels
        self.backbone = backbone
        self.fuse1 = nn.Conv2d(deep + mid, deep, 1, bias=False)
        self.fuse2 = nn.Conv2d(deep + stem, deep, 1, bias=False)
        self.head = nn.Sequential(
            nn.Conv2d(deep, deep // 4, 3, padding=1, bias=False),
            nn.BatchNorm2d(deep // 4),
            nn.ReLU(),
            nn.Conv2d(deep // 4, num_classes, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        deep, mid, stem = self.backbone(x)
        x = self.fuse1(torch.cat([mid, F.interpolate(deep, scale_factor=2.0, mode="bilinear")], dim=1))
        x = self.fuse2(torch.cat([stem, F.interpolate(x, scale_factor=2.0, mode="bilinear")], dim=1))
        return self.head(x)


class LIDCClassifier2d(nn.Module):
    """An encoder + global average pooling + a linear layer (one logit for binary cross-entropy)."""

    def __init__(self, backbone: nn.Module, num_classes: int = 1) -> None:
        super().__init__()
        self.backbone = backbone
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(backbone.channels[0], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.pool(self.backbone(x)[0]), 1))


def _check(backbone: str, width: int, backbone_weights: Any) -> None:
    if backbone not in LIDC_BACKBONES:
        raise ValueError(f"unknown LIDC backbone {backbone!r}; choose one of {LIDC_BACKBONES}")
    if int(width) < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    if backbone_weights is not None and int(width) != _PAPER_WIDTH:
        raise ValueError(
            f"backbone_weights ({backbone_weights!r}) need the original {backbone} (width={_PAPER_WIDTH}), "
            f"got width={width}"
        )


def _convert(net2d: nn.Module, backbone: str, operator: str, weights: Any, backbone_weights: Any) -> nn.Module:
    if backbone_weights is not None:
        load_backbone_weights(net2d.backbone, backbone_weights, drop_prefixes=("fc.", "classifier."))
    return convert_with_weights(net2d, operator, weights)


def build_lidc_seg_net(
    backbone: str = "resnet18",
    operator: str = "acs",
    weights: Any = None,
    backbone_weights: Any = None,
    num_classes: int = 2,
    in_channels: int = 3,
    width: int = _PAPER_WIDTH,
) -> nn.Module:
    """The LIDC nodule segmentation network on any of :data:`LIDC_BACKBONES`, converted to 3D (ACS paper
    Sec. IV-B-2, Tables A4 / A5).

    Args:
        backbone: ``"resnet18"`` (default; the paper's main network), ``"vgg16"``, ``"vgg16_bn"``,
            ``"densenet121"``.
        operator: fusion operator (``"acs"``, ``"conv2p5d"``, ``"i3d"``, ...). Default ``"acs"``.
        weights: whole-network 2D weights of the 2D model. Default None.
        backbone_weights: 2D ImageNet weights of the encoder ("p."), e.g. ``LIDC_IMAGENET_WEIGHTS[backbone]`` or a
            file. Needs ``width=64``. Default None ("r.").
        num_classes: output classes (background, nodule). Default 2.
        in_channels: input channels (3: the grey channel repeated). Default 3.
        width: channel width of the first stage (64 = the original backbone). Default 64.

    Returns:
        The 3D network: (N, in_channels, D, H, W) -> (N, num_classes, D, H, W); D, H, W divisible by 4.

    Raises:
        ValueError: unknown backbone, ``width < 1``, or ``backbone_weights`` with a reduced width.

    Examples:
        >>> net = build_lidc_seg_net("vgg16_bn", "acs", width=8)
        >>> net(torch.zeros(1, 3, 8, 8, 8)).shape
        torch.Size([1, 2, 8, 8, 8])
    """
    _check(backbone, width, backbone_weights)
    if backbone == "resnet18" and int(width) == _PAPER_WIDTH:
        return lidc_seg_net(operator, weights, backbone_weights, num_classes, in_channels)
    net2d = LIDCFCN2d(lidc_encoder_2d(backbone, width, in_channels), num_classes)
    return _convert(net2d, backbone, operator, weights, backbone_weights)


def build_lidc_cls_net(
    backbone: str = "resnet18",
    operator: str = "acs",
    weights: Any = None,
    backbone_weights: Any = None,
    num_classes: int = 1,
    in_channels: int = 3,
    width: int = _PAPER_WIDTH,
) -> nn.Module:
    """The LIDC malignancy classifier on any of :data:`LIDC_BACKBONES`, converted to 3D.

    Args:
        backbone: ``"resnet18"`` (default), ``"vgg16"``, ``"vgg16_bn"``, ``"densenet121"``.
        operator: fusion operator. Default ``"acs"``.
        weights: whole-network 2D weights. Default None.
        backbone_weights: 2D ImageNet weights of the encoder ("p."); needs ``width=64``. Default None.
        num_classes: logits (1 for binary cross-entropy). Default 1.
        in_channels: input channels. Default 3.
        width: channel width of the first stage. Default 64.

    Returns:
        The 3D network: (N, in_channels, D, H, W) -> (N, num_classes).

    Raises:
        ValueError: as :func:`build_lidc_seg_net`.

    Examples:
        >>> net = build_lidc_cls_net("densenet121", "acs", width=8)
        >>> net(torch.zeros(2, 3, 8, 8, 8)).shape
        torch.Size([2, 1])
    """
    _check(backbone, width, backbone_weights)
    if backbone == "resnet18" and int(width) == _PAPER_WIDTH:
        return lidc_cls_net(operator, weights, backbone_weights, num_classes, in_channels)
    net2d = LIDCClassifier2d(lidc_encoder_2d(backbone, width, in_channels), num_classes)
    return _convert(net2d, backbone, operator, weights, backbone_weights)


def lidc_net_2d(
    task: str,
    backbone: str = "resnet18",
    width: int = _PAPER_WIDTH,
    in_channels: int = 3,
    num_classes: int | None = None,
) -> nn.Module:
    """The 2D network that :func:`build_lidc_seg_net` (``task="segmentation"``) or :func:`build_lidc_cls_net`
    (``task="classification"``) converts, for 2D training: its state dict is their ``weights`` argument.

    Args:
        task: ``"segmentation"`` or ``"classification"``.
        backbone: one of :data:`LIDC_BACKBONES`. Default ``"resnet18"``.
        width: channel width of the first stage. Default 64.
        in_channels: input channels. Default 3.
        num_classes: outputs; default 2 (segmentation) or 1 (classification), as the builders.

    Raises:
        ValueError: unknown task or backbone, or ``width < 1``.

    Examples:
        >>> net = lidc_net_2d("segmentation", width=8)
        >>> net(torch.zeros(1, 3, 16, 16)).shape
        torch.Size([1, 2, 16, 16])
    """
    if task not in ("segmentation", "classification"):
        raise ValueError(f"task must be 'segmentation' or 'classification', got {task!r}")
    _check(backbone, width, None)
    seg = task == "segmentation"
    classes = int(num_classes) if num_classes is not None else (2 if seg else 1)
    if backbone == "resnet18" and int(width) == _PAPER_WIDTH:
        from .lidc import ClsResNet18_2d, FCNResNet18_2d

        return FCNResNet18_2d(classes, in_channels) if seg else ClsResNet18_2d(classes, in_channels)
    encoder = lidc_encoder_2d(backbone, width, in_channels)
    return LIDCFCN2d(encoder, classes) if seg else LIDCClassifier2d(encoder, classes)
