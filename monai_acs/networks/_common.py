"""Helpers shared by the network constructors."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..convert import convert_to_3d, load_2d_weights
from ..layers.layout import keep_channels_last

__all__ = ["convert_with_weights", "load_backbone_weights"]


def load_backbone_weights(backbone: nn.Module, weights: Any, drop_prefixes: tuple[str, ...] = ("fc.",)) -> None:
    """Load 2D classification weights (e.g. ``"ResNet18_Weights.IMAGENET1K_V1"``) into a backbone, without its head.

    Args:
        backbone: the 2D backbone module.
        weights: anything :func:`monai_acs.convert.resolve_weights` accepts.
        drop_prefixes: key prefixes of the classification head to leave out. Default ``("fc.",)``.
    """
    from ..convert import resolve_weights

    state = {k: v for k, v in resolve_weights(weights).items() if not k.startswith(drop_prefixes)}
    load_2d_weights(backbone, state)


def convert_with_weights(net2d: nn.Module, operator: str, weights: Any = None, **options: Any) -> nn.Module:
    """Load whole-network 2D ``weights`` (if any) then convert with ``operator``; the norms and pools that would drop
    the channels-last layout on CPU keep it (:func:`monai_acs.layers.keep_channels_last`)."""
    return keep_channels_last(convert_to_3d(net2d, operator, weights=weights, **options))
