"""The proof-of-concept segmentation UNet (ACS paper Sec. IV-A): a MONAI 2D UNet, converted to 3D."""

from __future__ import annotations

from typing import Any, Sequence

from monai.networks.nets import UNet
from torch import nn

from ..convert import convert_to_3d
from ..layers.layout import keep_channels_last
from ..layers.registry import get_operator

__all__ = ["poc_unet_2d", "poc_unet"]


def poc_unet_2d(
    in_channels: int = 1,
    out_channels: int = 6,
    channels: Sequence[int] = (16, 32, 64, 128),
    strides: Sequence[int] = (2, 2, 2),
    num_res_units: int = 1,
) -> nn.Module:
    """The 2D UNet pretrained on the 2D shapes: ``monai.networks.nets.UNet(spatial_dims=2, ...)``.

    Args:
        in_channels: input channels. Default 1.
        out_channels: classes; 6 so the 2D head transfers whole to the 3D task. Default 6.
        channels: encoder channels. Default (16, 32, 64, 128).
        strides: down-sampling strides. Default (2, 2, 2).
        num_res_units: residual units per block. Default 1.

    Returns:
        The 2D network.
    """
    return UNet(2, in_channels, out_channels, channels, strides, num_res_units=num_res_units)


def poc_unet(
    operator: str = "acs",
    weights: Any = None,
    in_channels: int = 1,
    out_channels: int = 6,
    channels: Sequence[int] = (16, 32, 64, 128),
    strides: Sequence[int] = (2, 2, 2),
    num_res_units: int = 1,
    depth: int = 48,
) -> nn.Module:
    """The 3D proof-of-concept UNet: :func:`poc_unet_2d` converted with ``convert_to_3d``.

    Args:
        operator: fusion operator key (``"acs"``, ``"conv2p5d"``, ``"i3d"``, ``"mean_acs"``, ``"soft_acs"``,
            ``"a3d"``, ...). Default ``"acs"``. ``"a3d"`` is converted with ``keep_depth=True`` and ``depth``.
        weights: 2D weights (state dict, file or None for random initialisation, "r." in the paper).
        in_channels, out_channels, channels, strides, num_res_units: as in :func:`poc_unet_2d`.
        depth: input depth, used by ``"a3d"`` only. Default 48.

    Returns:
        The 3D network, input (N, in_channels, D, H, W).

    Examples:
        >>> import torch
        >>> poc_unet("acs", channels=(4, 8), strides=(2,))(torch.randn(1, 1, 8, 8, 8)).shape
        torch.Size([1, 6, 8, 8, 8])
    """
    net2d = poc_unet_2d(in_channels, out_channels, channels, strides, num_res_units)
    options = get_operator(operator).depth_options(depth)
    # its InstanceNorm3d layers keep the layers' channels-last layout on CPU (no copy back and forth per norm)
    return keep_channels_last(convert_to_3d(net2d, operator, weights=weights, **options))
