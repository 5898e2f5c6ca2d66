"""LiTS liver / tumour segmentation network of the ACS paper (Sec. IV-C): torchvision DeepLabV3-ResNet101, whole
network converted to 3D."""

from __future__ import annotations

from typing import Any

import torch
import torchvision
from torch import nn

from ..convert import load_2d_weights, resolve_weights
from ._common import convert_with_weights, load_backbone_weights

__all__ = ["lits_deeplab_2d", "lits_deeplab", "PRETRAINING"]

PRETRAINING = {
    "none": None,  # "r."
    "imagenet": "ResNet101_Weights.IMAGENET1K_V1",  # "p.EO": encoder only
    "coco": "DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1",  # "p.WN": whole network
}


def lits_deeplab_2d(num_classes: int = 3, pretraining: str = "none", weights: Any = None) -> nn.Module:
    """The 2D DeepLabV3-ResNet101 (no auxiliary head) with the chosen pretraining loaded.

    Args:
        num_classes: output classes (background, liver, tumour). Default 3.
        pretraining: ``"none"`` (r.), ``"imagenet"`` (p.EO, encoder only) or ``"coco"`` (p.WN, whole network; the
            last classifier layer is re-initialised when the class count differs). Default ``"none"``.
        weights: overrides the weights source of ``pretraining`` (a file, state dict or torchvision enum name).

    Returns:
        The 2D network.

    Raises:
        ValueError: unknown ``pretraining``.
    """
    if pretraining not in PRETRAINING:
        raise ValueError(f"pretraining must be one of {sorted(PRETRAINING)}, got {pretraining!r}")
    net = torchvision.models.segmentation.deeplabv3_resnet101(
        weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False
    )
    source = weights if weights is not None else PRETRAINING[pretraining]
    if pretraining == "imagenet" and source is not None:
        load_backbone_weights(net.backbone, source, drop_prefixes=("fc.",))
    elif pretraining == "coco" and source is not None:
        state = {k: v for k, v in resolve_weights(source).items() if not k.startswith("aux_classifier.")}
        skipped = load_2d_weights(net, state, skip_mismatched=True)
        if any(not k.startswith("classifier.4.") for k in skipped):
            raise ValueError(f"unexpected shape mismatches outside the last classifier layer: {skipped}")
    return net


def lits_deeplab(
    operator: str = "acs", num_classes: int = 3, pretraining: str = "none", weights: Any = None, return_dict: bool = True
) -> nn.Module:
    """The LiTS network in 3D: :func:`lits_deeplab_2d` converted with ``convert_to_3d``.

    Args:
        operator: fusion operator (``"acs"`` default, ``"conv2p5d"``, ``"i3d"``, ...).
        num_classes: output classes. Default 3.
        pretraining: ``"none"``, ``"imagenet"`` or ``"coco"`` (see :func:`lits_deeplab_2d`).
        weights: optional weights source overriding the pretraining's default.
        return_dict: return torchvision's ``{"out": logits}`` (default True). With False the network returns the
            logits tensor itself, as MONAI engines, inferers, ``verify_net_in_out`` and ``ckpt_export`` expect; the
            state dict keys are the same either way.

    Returns:
        The 3D network: (N, 3, D, H, W) -> ``{"out": (N, num_classes, D, H, W)}`` (or the tensor itself).

    Examples:
        >>> import torch
        >>> net = lits_deeplab("conv2p5d", return_dict=False).eval()
        >>> net(torch.zeros(1, 3, 8, 16, 16)).shape
        torch.Size([1, 3, 8, 16, 16])
    """
    net = convert_with_weights(lits_deeplab_2d(num_classes, pretraining, weights), operator)
    return net if return_dict else _select_output(net, "out")


class _SelectOutput(nn.Module):
    """Return ``module(x)[key]`` (used only when the converted network is not an fx graph)."""

    def __init__(self, module: nn.Module, key: str) -> None:
        super().__init__()
        self.module, self.key = module, key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)[self.key]


def _select_output(net: nn.Module, key: str) -> nn.Module:
    """Make ``net`` return ``net(x)[key]``: rewrite the fx graph's output (state dict keys unchanged) when possible.

    A converted network may hold a train and an eval graph (``ConvertedGraphModule``); both are rewritten.
    """
    if isinstance(net, torch.fx.GraphModule):
        graphs = [g for g in (getattr(net, "_train_graph", None), getattr(net, "_eval_graph", None)) if g is not None]
        graphs = graphs or [net.graph]
        outputs = [next(node for node in g.nodes if node.op == "output") for g in graphs]
        if all(isinstance(o.args[0], dict) and key in o.args[0] for o in outputs):
            for graph, output in zip(graphs, outputs):
                output.args = (output.args[0][key],)
                output.type = torch.Tensor  # the return annotation TorchScript reads
                graph.eliminate_dead_code()
            net.recompile()
            return net
    return _SelectOutput(net, key)
