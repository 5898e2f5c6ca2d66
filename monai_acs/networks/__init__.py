"""The papers' networks as public constructors, each built with :func:`monai_acs.convert_to_3d`."""

from __future__ import annotations

from .deeplesion import deeplesion_backbone, deeplesion_detector
from .lidc import lidc_cls_net, lidc_seg_net
from .lidc_backbones import LIDC_BACKBONES, LIDC_IMAGENET_WEIGHTS, build_lidc_cls_net, build_lidc_seg_net, lidc_net_2d
from .lits import lits_deeplab, lits_deeplab_2d
from .poc import poc_unet, poc_unet_2d

__all__ = [
    "LIDC_BACKBONES",
    "LIDC_IMAGENET_WEIGHTS",
    "build_lidc_cls_net",
    "build_lidc_seg_net",
    "deeplesion_backbone",
    "deeplesion_detector",
    "lidc_cls_net",
    "lidc_net_2d",
    "lidc_seg_net",
    "lits_deeplab",
    "lits_deeplab_2d",
    "poc_unet",
    "poc_unet_2d",
]
