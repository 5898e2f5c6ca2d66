"""monai_acs: ACS convolutions and A3D context fusion, turning 2D CNNs and their weights into 3D networks."""

from __future__ import annotations

from .convert import convert_to_3d, load_2d_weights
from .layers import (
    A3DConv,
    ACSConv,
    ACSConvTranspose,
    Conv2p5d,
    I3DConv,
    MeanACSConv,
    P3DConv,
    SoftACSConv,
    TSMConv,
    get_operator,
    list_operators,
    register_operator,
)

__version__ = "0.1.0"

__all__ = [
    "A3DConv",
    "ACSConv",
    "ACSConvTranspose",
    "Conv2p5d",
    "I3DConv",
    "MeanACSConv",
    "P3DConv",
    "SoftACSConv",
    "TSMConv",
    "__version__",
    "convert_to_3d",
    "load_2d_weights",
    "get_operator",
    "list_operators",
    "register_operator",
]
