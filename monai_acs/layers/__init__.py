"""3D context-fusion layers: functional core, thin modules, and the operator registry."""

from __future__ import annotations

from .a3d import A3DConv
from .acs import ACSConv, Conv2p5d, MeanACSConv, SoftACSConv
from .functional import a3d_fuse, acs_conv3d, acs_conv_transpose3d, default_split, mean_acs_conv3d, tsm_shift
from .fusion import I3DConv, P3DConv, TSMConv, inflate_conv_weight
from .layout import keep_channels_last
from .registry import OperatorSpec, get_operator, list_operators, register_operator
from .transposed import ACSConvTranspose

__all__ = [
    "A3DConv",
    "ACSConv",
    "ACSConvTranspose",
    "Conv2p5d",
    "I3DConv",
    "MeanACSConv",
    "OperatorSpec",
    "P3DConv",
    "SoftACSConv",
    "TSMConv",
    "a3d_fuse",
    "acs_conv3d",
    "acs_conv_transpose3d",
    "default_split",
    "get_operator",
    "inflate_conv_weight",
    "keep_channels_last",
    "list_operators",
    "mean_acs_conv3d",
    "register_operator",
    "tsm_shift",
]
