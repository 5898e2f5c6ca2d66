"""The papers' networks as public constructors, each built with :func:`monai_acs.convert_to_3d`."""

from __future__ import annotations

from .poc import poc_unet, poc_unet_2d

__all__ = ["poc_unet", "poc_unet_2d"]
