"""DeepLesion universal lesion detection (A3D paper Sec. 2.3, Fig. 2; ACS paper Sec. IV-D, Fig. 5).

A 3D backbone derived from DenseNet-121: torchvision's ``densenet121`` truncated after its third dense block
(``conv0 .. denseblock3``, transitions 1 and 2 included), with a 1-channel (grey CT) first convolution, converted
with :func:`monai_acs.convert_to_3d` and ``keep_depth=True`` so that all strides are (1, 2, 2) and the depth
stays D (the number of CT slices) through all three blocks. The fusion operator (``a3d`` by default, or ``acs``,
``conv2p5d`` = no fusion, ``i3d``, ``p3d``, ``tsm``) replaces both convolutions of every dense layer (the 1x1
bottleneck and the 3x3); the stem (``conv0``, ``pool0``) and the transition layers stay 2.5D (no fusion), as in
the reference A3D backbone. This is also the construction whose FLOPs reproduce the A3D paper's Table 1 (see
``scripts/count_flops.py``).

On top of it (:class:`KeySliceFPN`) the three dense-block outputs are unified in 3D (a D x 1 x 1 convolution
to a common channel count, nearest up-sampling along H and W, addition, top-down), and each pyramid level is
squeezed to the 2D key-slice map by a D x 1 x 1 convolution without depth padding. The 2D pyramid (strides 4,
8, 16) feeds Mask R-CNN heads from ``torchvision.models.detection`` (RPN, box and mask heads) in
:class:`DeepLesionDetector`; the mask head is trained with a Dice loss (the papers) instead of torchvision's
per-pixel binary cross-entropy.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import (
    RoIHeads,
    fastrcnn_loss,
    maskrcnn_inference,
    paste_masks_in_image,
    project_masks_on_boxes,
)
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import MultiScaleRoIAlign

from ..convert import convert_to_3d, load_2d_weights, resolve_weights
from ..layers.layout import keep_channels_last
from ..layers import P3DConv
from ..layers.registry import get_operator

__all__ = [
    "DEEPLESION_OPERATORS",
    "DeepLesionDetector",
    "DenseNet3dTrunk",
    "DenseNetTrunk2d",
    "DiceMaskRoIHeads",
    "KeySliceFPN",
    "adapt_input_conv",
    "deeplesion_backbone",
    "deeplesion_detector",
    "dice_mask_loss",
    "set_p3d_temporal_kernel",
]

#: Fusion operators of the A3D paper's comparison (Table 1 / 2), as registry keys.
DEEPLESION_OPERATORS: tuple[str, ...] = ("a3d", "acs", "conv2p5d", "i3d", "p3d", "tsm")

_TRUNK_LAYERS = (
    "conv0",
    "norm0",
    "relu0",
    "pool0",
    "denseblock1",
    "transition1",
    "denseblock2",
    "transition2",
    "denseblock3",
)
_STEM = ("conv0", "norm0", "relu0", "pool0")
_BLOCKS = ("denseblock1", "denseblock2", "denseblock3")


# ----------------------------------------------------------------------------------------------------- weights
def adapt_input_conv(weight: Tensor, in_channels: int) -> Tensor:
    """Adapt a first-layer kernel pretrained on RGB to ``in_channels`` input channels.

    One channel (grey CT): the RGB kernels are summed, so a grey image ``g`` gives the response the pretrained
    network gives to the RGB image ``(g, g, g)``. Other counts repeat the RGB kernels cyclically and rescale by
    ``3 / in_channels`` so the response to a constant image is kept.

    Args:
        weight: (out, 3, kh, kw) kernel (any input count is accepted; it is returned unchanged if it already has
            ``in_channels``).
        in_channels: the wanted input channel count (>= 1).

    Returns:
        A new (out, in_channels, kh, kw) tensor; ``weight`` is not modified.

    Raises:
        ValueError: for a non 4-D kernel or ``in_channels < 1``.

    Examples:
        >>> w = torch.arange(6.0).reshape(1, 3, 1, 2)
        >>> adapt_input_conv(w, 1).tolist()
        [[[[6.0, 9.0]]]]
        >>> adapt_input_conv(w, 6).shape
        torch.Size([1, 6, 1, 2])
    """
    if weight.dim() != 4:
        raise ValueError(f"adapt_input_conv: expected a (out, in, kh, kw) kernel, got shape {tuple(weight.shape)}")
    if in_channels < 1:
        raise ValueError(f"adapt_input_conv: in_channels must be >= 1, got {in_channels}")
    source = weight.shape[1]
    if source == in_channels:
        return weight.clone()
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = math.ceil(in_channels / source)
    return weight.repeat(1, repeats, 1, 1)[:, :in_channels] * (source / in_channels)


def _trunk_state_from_weights(weights: Any, trunk: nn.Module) -> dict[str, Tensor]:
    """The entries of 2D DenseNet weights that belong to the truncated trunk, the first kernel adapted."""
    state = resolve_weights(weights)
    own = trunk.state_dict()
    kept = {k: v for k, v in state.items() if k in own}
    if not kept:
        raise ValueError(
            "weights hold no DenseNet trunk entry (expected torchvision densenet121 keys such as "
            f"'features.conv0.weight'); got keys like {sorted(state)[:5]}"
        )
    key = "features.conv0.weight"
    if key in kept and kept[key].shape[1] != own[key].shape[1]:
        kept[key] = adapt_input_conv(kept[key], own[key].shape[1])
    return kept


# ----------------------------------------------------------------------------------------------------- 2D trunk
class DenseNetTrunk2d(nn.Module):
    """torchvision DenseNet (121 by default) truncated after dense block 3, with ``in_channels`` input channels.

    Parameter names are those of ``torchvision.models.densenet121`` (``features.conv0.weight``, ...), so its
    ImageNet weights load unchanged (the first kernel adapted by :func:`adapt_input_conv`).

    Args:
        in_channels: input channels. Default 1 (grey CT).
        growth_rate: channels added per dense layer. Default 32 (DenseNet-121).
        block_config: layers in dense blocks 1-3 (a 4th entry is ignored). Default (6, 12, 24).
        num_init_features: channels of ``conv0``. Default 64.
        bn_size: bottleneck width factor (1x1 conv outputs ``bn_size * growth_rate``). Default 4.

    Examples:
        >>> [f.shape[1] for f in DenseNetTrunk2d()(torch.randn(1, 1, 64, 64))]
        [256, 512, 1024]
    """

    def __init__(
        self,
        in_channels: int = 1,
        growth_rate: int = 32,
        block_config: Sequence[int] = (6, 12, 24),
        num_init_features: int = 64,
        bn_size: int = 4,
    ) -> None:
        super().__init__()
        blocks = tuple(int(b) for b in block_config)[:3]
        if len(blocks) != 3 or min(blocks) < 1:
            raise ValueError(f"block_config needs three positive layer counts, got {tuple(block_config)}")
        net = torchvision.models.DenseNet(growth_rate, (*blocks, 1), num_init_features, bn_size)
        features = net.features
        if in_channels != 3:
            features.conv0 = nn.Conv2d(in_channels, num_init_features, 7, 2, 3, bias=False)
            nn.init.kaiming_normal_(features.conv0.weight)
        self.in_channels = in_channels
        self.features = nn.Sequential(OrderedDict((name, getattr(features, name)) for name in _TRUNK_LAYERS))
        channels, out_channels = num_init_features, []
        for i, n_layers in enumerate(blocks):
            channels += n_layers * growth_rate
            out_channels.append(channels)
            if i < 2:
                channels //= 2
        #: channels of the three dense-block outputs (256, 512, 1024 for DenseNet-121)
        self.out_channels: tuple[int, ...] = tuple(out_channels)

    def forward(self, x: Tensor) -> list[Tensor]:
        outputs = []
        for name, layer in self.features.named_children():
            x = layer(x)
            if name in _BLOCKS:
                outputs.append(x)
        return outputs


# ----------------------------------------------------------------------------------------------------- 3D trunk
def set_p3d_temporal_kernel(module: nn.Module, kernel_size: int) -> nn.Module:
    """Give every :class:`~monai_acs.P3DConv` below ``module`` a depth kernel of ``kernel_size`` (identity start).

    The registry's P3D uses a depth kernel as long as the 2D kernel is high, so a 1x1 convolution gets a 1x1x1
    channel-mixing kernel and no depth context. The A3D paper's P3D row (Table 1) fuses context with a
    K x 1 x 1 convolution after every dense-layer convolution; ``kernel_size=3`` gives that construction for the
    1x1 bottlenecks too. The new kernels are [0, .., 1, .., 0] on the channel diagonal, so the layer still equals
    the 2.5D convolution before training. Works in place.

    Args:
        module: a converted network.
        kernel_size: odd depth kernel length.

    Returns:
        ``module``.

    Raises:
        ValueError: for an even or non-positive ``kernel_size``.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"set_p3d_temporal_kernel: kernel_size must be odd and positive, got {kernel_size}")
    for layer in module.modules():
        if isinstance(layer, P3DConv) and layer.temporal_weight.shape[2] != kernel_size:
            old = layer.temporal_weight
            weight = torch.zeros(old.shape[0], old.shape[1], kernel_size, 1, 1, device=old.device, dtype=old.dtype)
            if weight.device.type != "meta":
                index = torch.arange(old.shape[0], device=old.device)
                weight[index, index, kernel_size // 2, 0, 0] = 1.0
            layer.temporal_weight = nn.Parameter(weight)
    return module


class DenseNet3dTrunk(nn.Module):
    """The 3D DenseNet trunk: :class:`DenseNetTrunk2d` converted part by part with ``keep_depth=True``.

    The dense blocks are converted with the fusion ``operator``; the stem and the transitions with ``conv2p5d``
    (no fusion). Built by :func:`deeplesion_backbone`; parameter names are those of the 2D trunk.

    Args:
        trunk2d: the 2D trunk (its weights are moved, it is not modified).
        operator: fusion operator of the dense layers. Default ``"a3d"``.
        num_slices: the input depth D. Default 7.
        p3d_temporal_kernel: with ``operator="p3d"``, the depth kernel of every P3D layer (see
            :func:`set_p3d_temporal_kernel`); None keeps the registry's. Default None.

    Note:
        The input depth must equal ``num_slices`` (A3D's fusion matrices and the squeeze convolutions of the
        detector are D x D / D x 1 x 1).
    """

    def __init__(
        self,
        trunk2d: DenseNetTrunk2d,
        operator: str = "a3d",
        num_slices: int = 7,
        p3d_temporal_kernel: int | None = None,
    ) -> None:
        super().__init__()
        if int(num_slices) < 1:
            raise ValueError(f"num_slices must be >= 1, got {num_slices}")
        self.operator = operator
        self.num_slices = int(num_slices)
        self.in_channels = trunk2d.in_channels
        self.out_channels = trunk2d.out_channels
        self.strides = (4, 8, 16)
        options = get_operator(operator).depth_options(self.num_slices)
        options.pop("keep_depth", None)  # every block below is converted with keep_depth=True
        layers = OrderedDict()
        for name, layer in trunk2d.features.named_children():
            if name in _BLOCKS:
                layers[name] = convert_to_3d(layer, operator, keep_depth=True, **options)
            else:
                layers[name] = convert_to_3d(layer, "conv2p5d", keep_depth=True)
        self.features = nn.Sequential(layers)
        if p3d_temporal_kernel is not None and operator == "p3d":
            set_p3d_temporal_kernel(self.features, int(p3d_temporal_kernel))

    def _check(self, x: Tensor) -> None:
        if x.dim() != 5 or x.shape[1] != self.in_channels or x.shape[2] != self.num_slices:
            raise ValueError(
                f"DenseNet3dTrunk ({self.operator}) expects (N, {self.in_channels}, D={self.num_slices}, H, W), "
                f"got shape {tuple(x.shape)}"
            )

    def forward_intermediates(self, x: Tensor) -> list[Tensor]:
        """The outputs of dense blocks 1, 2, 3: (N, C_i, D, H / s, W / s) with s = 4, 8, 16."""
        self._check(x)
        outputs = []
        for name, layer in self.features.named_children():
            x = layer(x)
            if name in _BLOCKS:
                outputs.append(x)
        return outputs

    def forward(self, x: Tensor) -> Tensor:
        """The output of dense block 3: (N, 1024, D, H / 16, W / 16) for DenseNet-121."""
        return self.forward_intermediates(x)[-1]


def deeplesion_backbone(
    operator: str = "a3d",
    num_slices: int = 7,
    weights: Any = None,
    in_channels: int = 1,
    growth_rate: int = 32,
    block_config: Sequence[int] = (6, 12, 24),
    num_init_features: int = 64,
    bn_size: int = 4,
    p3d_temporal_kernel: int | None = None,
) -> DenseNet3dTrunk:
    """The 3D DenseNet-121 backbone of the A3D paper (Sec. 2.3): conv0 .. dense block 3, depth kept at D.

    Args:
        operator: fusion operator of the dense layers: ``"a3d"`` (default), ``"acs"``, ``"conv2p5d"`` (no
            fusion), ``"i3d"``, ``"p3d"``, ``"tsm"`` (any registered key is accepted).
        num_slices: the input depth D (3 or 7 in the papers). Default 7.
        weights: 2D DenseNet weights loaded before conversion: ``"DenseNet121_Weights.IMAGENET1K_V1"`` (from
            torchvision's cache, downloaded into it once when missing), a torchvision weights enum, a file or a state dict
            of ``densenet121`` (classifier and the layers after dense block 3 are ignored; the RGB first kernel is
            summed to one channel). None: random initialisation ("r."). Default None.
        in_channels: input channels. Default 1.
        growth_rate, block_config, num_init_features, bn_size: DenseNet hyper-parameters; the defaults are
            DenseNet-121 (smaller values make fast tests; ImageNet weights need the defaults).
        p3d_temporal_kernel: see :func:`set_p3d_temporal_kernel` (``operator="p3d"`` only). Default None.

    Returns:
        A :class:`DenseNet3dTrunk`: ``forward`` gives dense block 3's output, ``forward_intermediates`` all three.

    Raises:
        ValueError: unknown operator (closest key named), bad weights (keys and shapes named).
        FileNotFoundError: a weights file or torchvision cache entry is missing.

    Examples:
        >>> net = deeplesion_backbone("a3d", num_slices=3, block_config=(1, 1, 1))
        >>> [tuple(f.shape) for f in net.forward_intermediates(torch.randn(1, 1, 3, 32, 32))]
        [(1, 96, 3, 8, 8), (1, 80, 3, 4, 4), (1, 72, 3, 2, 2)]
    """
    trunk2d = DenseNetTrunk2d(in_channels, growth_rate, block_config, num_init_features, bn_size)
    if weights is not None:
        load_2d_weights(trunk2d, _trunk_state_from_weights(weights, trunk2d))
    # its (1, 2, 2) average pools keep the layers' channels-last layout on CPU
    return keep_channels_last(DenseNet3dTrunk(trunk2d, operator, num_slices, p3d_temporal_kernel))


# ----------------------------------------------------------------------------------------------------- 3D -> 2D
class KeySliceFPN(nn.Module):
    """Fuse the three 3D dense-block outputs top-down and squeeze every level to the 2D key-slice map.

    A3D paper Sec. 2.3 / Fig. 2: each dense-block output is unified to ``out_channels`` by a D x 1 x 1
    convolution (depth padding D // 2, so the depth stays D), the coarser map is up-sampled (nearest, H and W
    only) and added; each of the three fused 3D maps is then squeezed to 2D by a D x 1 x 1 convolution without
    depth padding. The result is a 2D feature pyramid at strides 4, 8 and 16.

    Args:
        in_channels: channels of the three dense-block outputs, finest first.
        out_channels: pyramid channels. Default 512.
        num_slices: depth D. Default 7.

    Examples:
        >>> fpn = KeySliceFPN((8, 16, 32), 4, num_slices=3)
        >>> feats = [torch.randn(1, c, 3, 16 // 2**i, 16 // 2**i) for i, c in enumerate((8, 16, 32))]
        >>> [tuple(v.shape) for v in fpn(feats).values()]
        [(1, 4, 16, 16), (1, 4, 8, 8), (1, 4, 4, 4)]
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 512, num_slices: int = 7) -> None:
        super().__init__()
        d = int(num_slices)
        self.num_slices, self.out_channels = d, int(out_channels)
        self.lateral = nn.ModuleList(
            nn.Conv3d(c, out_channels, (d, 1, 1), padding=(d // 2, 0, 0), bias=False) for c in in_channels
        )
        self.squeeze = nn.ModuleList(nn.Conv3d(out_channels, out_channels, (d, 1, 1)) for _ in in_channels)
        for conv in [*self.lateral, *self.squeeze]:
            nn.init.kaiming_uniform_(conv.weight, a=1)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    def forward(self, features: Sequence[Tensor]) -> OrderedDict[str, Tensor]:
        if len(features) != len(self.lateral):
            raise ValueError(f"KeySliceFPN expects {len(self.lateral)} feature maps, got {len(features)}")
        for i, feature in enumerate(features):
            if feature.dim() != 5 or feature.shape[2] != self.num_slices:
                raise ValueError(
                    f"KeySliceFPN level {i}: expected (N, C, D={self.num_slices}, H, W), got {tuple(feature.shape)}"
                )
        fused: list[Tensor] = []
        top: Tensor | None = None
        for lateral, feature in zip(reversed(self.lateral), reversed(list(features))):
            x = lateral(feature)
            if top is not None:
                x = x + F.interpolate(top, size=x.shape[-3:], mode="nearest")
            fused.append(x)
            top = x
        fused.reverse()
        return OrderedDict((str(i), squeeze(x).squeeze(2)) for i, (squeeze, x) in enumerate(zip(self.squeeze, fused)))


# ----------------------------------------------------------------------------------------------------- heads
def dice_mask_loss(
    mask_logits: Tensor,
    proposals: Sequence[Tensor],
    gt_masks: Sequence[Tensor],
    gt_labels: Sequence[Tensor],
    matched_idxs: Sequence[Tensor],
    eps: float = 1.0,
) -> Tensor:
    """Soft Dice loss of the Mask R-CNN mask head, averaged over the positive RoIs.

    Ground-truth masks are cropped to each RoI and resized to the mask head's M x M grid (torchvision's
    ``project_masks_on_boxes``); the predicted mask is ``sigmoid`` of the logits of the RoI's ground-truth class.
    Per RoI: ``1 - (2 sum(p g) + eps) / (sum(p) + sum(g) + eps)``.

    Args:
        mask_logits: (R, num_classes, M, M) logits of the positive RoIs of all images.
        proposals: per image, the (R_i, 4) positive RoI boxes.
        gt_masks: per image, (G_i, H, W) ground-truth masks.
        gt_labels: per image, (G_i,) ground-truth labels.
        matched_idxs: per image, (R_i,) index of the ground truth each RoI is matched to.
        eps: smoothing term. Default 1.

    Returns:
        The scalar loss (0 with a gradient path when there is no positive RoI).
    """
    size = mask_logits.shape[-1]
    labels = [gt[idx] for gt, idx in zip(gt_labels, matched_idxs)]
    targets = [project_masks_on_boxes(m, p, i, size) for m, p, i in zip(gt_masks, proposals, matched_idxs)]
    if mask_logits.numel() == 0 or not targets:
        return mask_logits.sum() * 0
    labels_t = torch.cat(labels, dim=0)
    target = torch.cat(targets, dim=0)
    if target.numel() == 0:
        return mask_logits.sum() * 0
    prob = torch.sigmoid(mask_logits[torch.arange(labels_t.shape[0], device=labels_t.device), labels_t])
    inter = (prob * target).flatten(1).sum(1)
    union = prob.flatten(1).sum(1) + target.flatten(1).sum(1)
    return (1.0 - (2.0 * inter + eps) / (union + eps)).mean()


def _bce_mask_loss(
    mask_logits: Tensor,
    proposals: Sequence[Tensor],
    gt_masks: Sequence[Tensor],
    gt_labels: Sequence[Tensor],
    matched_idxs: Sequence[Tensor],
) -> Tensor:
    from torchvision.models.detection.roi_heads import maskrcnn_loss

    return maskrcnn_loss(mask_logits, list(proposals), list(gt_masks), list(gt_labels), list(matched_idxs))


class DiceMaskRoIHeads(RoIHeads):
    """torchvision's Mask R-CNN RoI heads with a choice of mask loss: Dice (the papers), BCE, or both summed.

    Box branch and its losses (cross-entropy + smooth L1) are torchvision's. ``forward`` returns detections with
    ``masks`` as (K, 1, M, M) probabilities in box coordinates (paste them with ``paste_masks_in_image``).

    Args:
        *args, **kwargs: as :class:`torchvision.models.detection.roi_heads.RoIHeads` (mask modules required).
        mask_loss: ``"dice"`` (default), ``"bce"`` (torchvision's) or ``"dice_bce"``.
    """

    def __init__(self, *args: Any, mask_loss: str = "dice", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if mask_loss not in ("dice", "bce", "dice_bce"):
            raise ValueError(f"mask_loss must be 'dice', 'bce' or 'dice_bce', got {mask_loss!r}")
        if not self.has_mask():
            raise ValueError("DiceMaskRoIHeads needs mask_roi_pool, mask_head and mask_predictor")
        self.mask_loss = mask_loss

    def forward(  # type: ignore[override]
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        if self.training:
            if targets is None:
                raise ValueError("DiceMaskRoIHeads: targets are needed in training mode")
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)

        result: list[dict[str, Tensor]] = []
        losses: dict[str, Tensor] = {}
        if self.training:
            loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
            losses = {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
            mask_proposals, positive_matched = [], []
            for image_proposals, image_labels, image_matched in zip(proposals, labels, matched_idxs):
                positive = torch.where(image_labels > 0)[0]
                mask_proposals.append(image_proposals[positive])
                positive_matched.append(image_matched[positive])
        else:
            boxes, scores, box_labels = self.postprocess_detections(
                class_logits, box_regression, proposals, image_shapes
            )
            result = [{"boxes": b, "labels": lab, "scores": s} for b, lab, s in zip(boxes, box_labels, scores)]
            mask_proposals = [r["boxes"] for r in result]

        mask_logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, mask_proposals, image_shapes)))
        if self.training:
            assert targets is not None
            gt_masks = [t["masks"] for t in targets]
            gt_labels = [t["labels"] for t in targets]
            loss = mask_logits.sum() * 0
            if self.mask_loss in ("dice", "dice_bce"):
                loss = loss + dice_mask_loss(mask_logits, mask_proposals, gt_masks, gt_labels, positive_matched)
            if self.mask_loss in ("bce", "dice_bce") and sum(int(p.shape[0]) for p in mask_proposals):
                loss = loss + _bce_mask_loss(mask_logits, mask_proposals, gt_masks, gt_labels, positive_matched)
            losses["loss_mask"] = loss
        else:
            probs = maskrcnn_inference(mask_logits, [r["labels"] for r in result])
            for prob, r in zip(probs, result):
                r["masks"] = prob
        return result, losses


# ----------------------------------------------------------------------------------------------------- detector
class DeepLesionDetector(nn.Module):
    """3D-context Mask R-CNN for universal lesion detection (A3D paper Fig. 2).

    ``forward(images, targets=None)`` follows torchvision's detection models: in training mode it returns the
    loss dict (``loss_objectness``, ``loss_rpn_box_reg``, ``loss_classifier``, ``loss_box_reg``, ``loss_mask``; the
    papers weight them equally, i.e. sum them), in eval mode a list with one dict per image: ``boxes`` (K, 4)
    x1, y1, x2, y2 in pixels of the input, ``labels`` (K,), ``scores`` (K,), ``masks`` (K, 1, H, W)
    probabilities pasted into the image.

    Args:
        backbone: the 3D trunk (:func:`deeplesion_backbone`).
        neck: the 3D-to-2D pyramid (:class:`KeySliceFPN`).
        rpn: torchvision ``RegionProposalNetwork``.
        roi_heads: :class:`DiceMaskRoIHeads`.

    Note:
        Images are not resized or normalised inside the model (the bundle's transforms do it); all images of a
        batch must have the same size, a multiple of 16.
    """

    def __init__(
        self, backbone: DenseNet3dTrunk, neck: KeySliceFPN, rpn: RegionProposalNetwork, roi_heads: DiceMaskRoIHeads
    ) -> None:
        super().__init__()
        self.backbone, self.neck, self.rpn, self.roi_heads = backbone, neck, rpn, roi_heads
        self.num_slices = backbone.num_slices

    def _stack(self, images: Tensor | Sequence[Tensor]) -> Tensor:
        if not isinstance(images, Tensor):
            shapes = {tuple(im.shape) for im in images}
            if len(shapes) != 1:
                raise ValueError(f"DeepLesionDetector: all images of a batch must have one shape, got {shapes}")
            images = torch.stack(list(images))
        if images.dim() != 5 or images.shape[1] != 1 or images.shape[2] != self.num_slices:
            raise ValueError(
                f"DeepLesionDetector expects images (N, 1, D={self.num_slices}, H, W), got {tuple(images.shape)}"
            )
        if images.shape[-1] % 16 or images.shape[-2] % 16:
            raise ValueError(f"DeepLesionDetector: H and W must be multiples of 16, got {tuple(images.shape[-2:])}")
        return images

    def _check_targets(self, targets: Sequence[dict[str, Tensor]] | None, n: int) -> None:
        if targets is None:
            raise ValueError("DeepLesionDetector: targets are needed in training mode")
        if len(targets) != n:
            raise ValueError(f"DeepLesionDetector: {n} images but {len(targets)} targets")
        for i, target in enumerate(targets):
            for key in ("boxes", "labels", "masks"):
                if key not in target:
                    raise ValueError(f"DeepLesionDetector: target {i} lacks {key!r} (has {sorted(target)})")
            boxes = target["boxes"]
            if boxes.dim() != 2 or boxes.shape[-1] != 4:
                raise ValueError(f"DeepLesionDetector: target {i} boxes must be (G, 4), got {tuple(boxes.shape)}")
            if boxes.numel() and bool((boxes[:, 2:] <= boxes[:, :2]).any()):
                raise ValueError(f"DeepLesionDetector: target {i} has a box with x2 <= x1 or y2 <= y1: {boxes}")

    def forward(
        self, images: Tensor | Sequence[Tensor], targets: Sequence[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        x = self._stack(images)
        if self.training:
            self._check_targets(targets, x.shape[0])
        size = (int(x.shape[-2]), int(x.shape[-1]))
        features = self.neck(self.backbone.forward_intermediates(x))
        image_list = ImageList(x[:, :, self.num_slices // 2], [size] * x.shape[0])
        target_list = list(targets) if (self.training and targets is not None) else None
        proposals, rpn_losses = self.rpn(image_list, features, target_list)
        detections, head_losses = self.roi_heads(features, proposals, image_list.image_sizes, target_list)
        if self.training:
            return {**rpn_losses, **head_losses}
        for det in detections:
            det["masks"] = paste_masks_in_image(det["masks"], det["boxes"], size)
        return detections


def deeplesion_detector(
    operator: str = "a3d",
    num_slices: int = 7,
    backbone_weights: Any = None,
    weights: Any = None,
    num_classes: int = 2,
    feature_channels: int = 512,
    representation_size: int = 2048,
    mask_channels: int = 256,
    anchor_sizes: Sequence[Sequence[float]] = ((16, 24, 32), (48, 64, 96), (128, 192, 256)),
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    mask_loss: str = "dice",
    rpn_batch_size_per_image: int = 32,
    rpn_pre_nms_top_n_train: int = 2000,
    rpn_post_nms_top_n_train: int = 2000,
    rpn_pre_nms_top_n_test: int = 1000,
    rpn_post_nms_top_n_test: int = 300,
    box_batch_size_per_image: int = 64,
    box_positive_fraction: float = 0.25,
    box_score_thresh: float = 5e-5,
    box_nms_thresh: float = 0.5,
    box_detections_per_img: int = 50,
    **backbone_options: Any,
) -> DeepLesionDetector:
    """The universal lesion detector of the A3D paper (Sec. 2.3, Fig. 2) with a configurable fusion operator.

    3D DenseNet-121 backbone (:func:`deeplesion_backbone`), 3D-to-2D key-slice pyramid (:class:`KeySliceFPN`),
    torchvision Mask R-CNN heads: RPN (binary cross-entropy + smooth L1), box head (two FC layers;
    cross-entropy + smooth L1) and mask head (four 3x3 convolutions; Dice loss). Sampling sizes and test
    thresholds default to those of the reference AlignShift/A3D configuration (RPN 32 anchors per image, 64 RoIs
    per image with 25 % positives, score threshold 5e-5, 50 detections per image, so that FROC reaches 16 FPs
    per image).

    Args:
        operator: fusion operator of the backbone. Default ``"a3d"``.
        num_slices: input depth D. Default 7.
        backbone_weights: 2D DenseNet-121 weights for the backbone (see :func:`deeplesion_backbone`), e.g.
            ``"DenseNet121_Weights.IMAGENET1K_V1"`` ("p."); None: random ("r."). Default None.
        weights: weights of the whole detector (a state dict or a file written by the bundle), loaded
            ``strict=True`` after building. Default None.
        num_classes: classes including background. Default 2 (background, lesion).
        feature_channels: channels of the 2D pyramid. Default 512.
        representation_size: width of the box head's FC layers. Default 2048.
        mask_channels: channels of the mask head's convolutions. Default 256.
        anchor_sizes: anchor sizes (pixels) per pyramid level (strides 4, 8, 16).
        aspect_ratios: anchor aspect ratios, the same at every level. Default (0.5, 1, 2).
        mask_loss: ``"dice"`` (default, the papers), ``"bce"`` (torchvision) or ``"dice_bce"``.
        rpn_batch_size_per_image, rpn_pre_nms_top_n_train, rpn_post_nms_top_n_train, rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test, box_batch_size_per_image, box_positive_fraction, box_score_thresh,
        box_nms_thresh, box_detections_per_img: as in ``torchvision.models.detection.MaskRCNN``.
        **backbone_options: further :func:`deeplesion_backbone` arguments (``block_config``, ``growth_rate``,
            ``num_init_features``, ``bn_size``, ``p3d_temporal_kernel``, ``in_channels``).

    Returns:
        A :class:`DeepLesionDetector`.

    Examples:
        >>> net = deeplesion_detector("a3d", num_slices=3, block_config=(1, 1, 1), feature_channels=8,
        ...                           representation_size=16, mask_channels=8).eval()
        >>> out = net(torch.randn(1, 1, 3, 64, 64))
        >>> sorted(out[0]), out[0]["masks"].shape[-2:]
        (['boxes', 'labels', 'masks', 'scores'], torch.Size([64, 64]))
    """
    if len(anchor_sizes) != 3:
        raise ValueError(f"anchor_sizes needs one tuple per pyramid level (3), got {anchor_sizes}")
    backbone = deeplesion_backbone(operator, num_slices, backbone_weights, **backbone_options)
    neck = KeySliceFPN(backbone.out_channels, feature_channels, num_slices)
    levels = ["0", "1", "2"]
    anchors = AnchorGenerator(
        tuple(tuple(float(s) for s in level) for level in anchor_sizes),
        tuple(tuple(float(r) for r in aspect_ratios) for _ in anchor_sizes),
    )
    rpn = RegionProposalNetwork(
        anchors,
        RPNHead(feature_channels, anchors.num_anchors_per_location()[0]),
        fg_iou_thresh=0.7,
        bg_iou_thresh=0.3,
        batch_size_per_image=rpn_batch_size_per_image,
        positive_fraction=0.5,
        pre_nms_top_n={"training": rpn_pre_nms_top_n_train, "testing": rpn_pre_nms_top_n_test},
        post_nms_top_n={"training": rpn_post_nms_top_n_train, "testing": rpn_post_nms_top_n_test},
        nms_thresh=0.7,
    )
    box_pool = MultiScaleRoIAlign(levels, output_size=7, sampling_ratio=2)
    mask_pool = MultiScaleRoIAlign(levels, output_size=14, sampling_ratio=2)
    roi_heads = DiceMaskRoIHeads(
        box_pool,
        TwoMLPHead(feature_channels * 7 * 7, representation_size),
        FastRCNNPredictor(representation_size, num_classes),
        fg_iou_thresh=0.5,
        bg_iou_thresh=0.5,
        batch_size_per_image=box_batch_size_per_image,
        positive_fraction=box_positive_fraction,
        bbox_reg_weights=None,
        score_thresh=box_score_thresh,
        nms_thresh=box_nms_thresh,
        detections_per_img=box_detections_per_img,
        mask_roi_pool=mask_pool,
        mask_head=MaskRCNNHeads(feature_channels, (mask_channels,) * 4, 1),
        mask_predictor=MaskRCNNPredictor(mask_channels, mask_channels, num_classes),
        mask_loss=mask_loss,
    )
    detector = DeepLesionDetector(backbone, neck, rpn, roi_heads)
    if weights is not None:
        state = resolve_weights(weights)
        detector.load_state_dict(state, strict=True)
    return detector
