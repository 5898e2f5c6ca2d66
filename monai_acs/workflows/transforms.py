"""MONAI transforms the bundles add: depth-first axes and LiTS regions, DeepLesion loading and augmentation,
LIDC nodule crops. Each is a ``MapTransform`` the configs name with keyword arguments.

Boxes (DeepLesion) are (x1, y1, x2, y2) in continuous pixel coordinates: pixel column ``i`` spans ``[i, i + 1)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import InvertibleTransform, MapTransform, RandomizableTransform
from monai.utils import convert_to_tensor
from torch import Tensor

from ..data.deeplesion import recist_ellipse_mask
from .ct_io import cached_ct
from .nodules import sample_nodule_crop

logger = logging.getLogger(__name__)

__all__ = ['DepthFirstd', 'LitsRegionsd', 'LoadDeepLesiond', 'NoduleCropd', 'RandDetectionAugmentd', 'ResizeDetectiond']


def _reverse_spatial(img: Any) -> Any:
    """(C, a, b, c) -> (C, c, b, a); a MetaTensor's affine gets its spatial columns reversed to match."""
    img = convert_to_tensor(img, track_meta=get_track_meta())
    if img.ndim < 2:
        raise ValueError(f"DepthFirstd: expected a channel-first array (C, x, y[, z]), got shape {tuple(img.shape)}")
    spatial = list(range(1, img.ndim))
    out = img.permute([0, *spatial[::-1]])
    if isinstance(out, MetaTensor):
        affine = torch.as_tensor(out.affine).clone()
        n = img.ndim - 1
        if affine.shape[-1] == n + 1:
            affine[..., :n] = affine[..., :n].flip(-1)
            out.affine = affine
    return out


class DepthFirstd(MapTransform, InvertibleTransform):
    """Reverse the spatial axes of channel-first arrays: MONAI's (C, x, y, z) becomes the paper's (C, z, y, x).

    The ACS paper (Sec. IV-C) transposes LiTS volumes to z, y, x so that depth is the first spatial axis, which is
    what ``conv2p5d``, ``keep_depth`` and the A3D operators assume. Unlike ``monai.transforms.Transposed`` this
    transform also permutes the affine's columns, so the metadata still describes the data (spacing reads as
    (z, y, x), later spatial transforms and ``Invertd`` stay correct). It is its own inverse and is recorded for
    ``Invertd``.

    Args:
        keys: keys of the arrays to transform.
        allow_missing_keys: skip missing keys instead of raising. Default False.

    Examples:
        >>> import torch
        >>> from monai.data import MetaTensor
        >>> img = MetaTensor(torch.zeros(1, 4, 5, 6), affine=torch.diag(torch.tensor([0.7, 0.8, 2.5, 1.0])))
        >>> out = DepthFirstd("image")({"image": img})["image"]
        >>> tuple(out.shape), [round(float(s), 2) for s in out.pixdim]
        ((1, 6, 5, 4), [2.5, 0.8, 0.7])
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = _reverse_spatial(d[key])
            self.push_transform(d, key)
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            self.get_most_recent_transform(d, key)  # raises if the last recorded transform is not this one
            self.pop_transform(d, key)
            d[key] = _reverse_spatial(d[key])
        return d


def lits_region_masks(x: Any) -> torch.Tensor:
    """A label map (1, ...) -> bool region masks (2, ...): liver (label >= 1), tumour (label == 2)."""
    t = torch.as_tensor(x)
    if t.ndim < 2 or t.shape[0] not in (1, 2):
        raise ValueError(
            f"expected a LiTS label map (1, ...) or liver/tumour masks (2, ...), got shape {tuple(t.shape)}"
        )
    if t.shape[0] == 2:
        return t.bool()
    return torch.cat([t >= 1, t == 2]).bool()


class LitsRegionsd(MapTransform):
    """Turn LiTS label maps (1, ...) with 0 background, 1 liver, 2 tumour into two float masks (2, ...):
    liver (labels 1 and 2: the whole organ, tumours included, as the LiTS challenge scores it) and tumour (label 2).

    MONAI's ``MeanDice(include_background=True)`` over these channels is the mean of the liver and tumour Dice.

    Examples:
        >>> import torch
        >>> out = LitsRegionsd("label")({"label": torch.tensor([[0, 1, 2]])})["label"]
        >>> out.tolist()
        [[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]
    """

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            masks = lits_region_masks(d[key]).float()
            d[key] = MetaTensor(masks, meta=d[key].meta) if isinstance(d[key], MetaTensor) else masks
        return d


class LoadDeepLesiond(MapTransform):
    """Load a key slice with its D-slice context and its lesions from a :func:`deeplesion_datalist` item.

    Adds ``image`` (D, H, W) float32 HU (slices at ``target_interval_mm`` around the key slice, as
    :func:`monai_acs.data.deeplesion.load_slices`), ``boxes`` (G, 4) float32, ``labels`` (G,) int64 (all 1, lesion),
    ``masks`` (G, H, W) uint8 weak masks (the ellipse of each lesion's RECIST diameters; the papers use GrabCut) and
    ``original_size`` (H, W).

    Args:
        num_slices: D (odd). Default 3.
        target_interval_mm: slice interval of the context. Default 2.0 (the papers').
    """

    def __init__(self, num_slices: int = 3, target_interval_mm: float = 2.0) -> None:
        super().__init__(keys=["record"])
        self.num_slices, self.target_interval_mm = int(num_slices), float(target_interval_mm)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from ..data.deeplesion import load_slices

        d = dict(data)
        record = d["record"]
        image = load_slices(d["images_dir"], record, self.num_slices, self.target_interval_mm)
        size = image.shape[-2:]
        masks = np.stack([recist_ellipse_mask(size, r) for r in record["recist"]]).astype(np.uint8)
        d["image"] = torch.as_tensor(image)
        d["boxes"] = torch.as_tensor(np.asarray(record["boxes"], dtype=np.float32).reshape(-1, 4))
        d["labels"] = torch.ones(d["boxes"].shape[0], dtype=torch.int64)
        d["masks"] = torch.as_tensor(masks)
        d["original_size"] = tuple(int(s) for s in size)
        return d


class ResizeDetectiond(MapTransform):
    """Resize ``image`` (D, H, W) to (D, size, size) (bilinear), and ``masks`` / ``boxes`` with it.

    Records the factor as ``scale`` ((sy, sx), new / old) so boxes can be mapped back.

    Args:
        size: output height and width (512 in the papers). None keeps the size.
        keys: the image key. Default ``"image"``.
    """

    def __init__(self, size: int | None, keys: KeysCollection = "image") -> None:
        super().__init__(keys)
        self.size = None if size is None else int(size)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = torch.as_tensor(d["image"], dtype=torch.float32)
        h, w = image.shape[-2:]
        if self.size is None or (h, w) == (self.size, self.size):
            d["image"], d["scale"] = image, (1.0, 1.0)
            return d
        sy, sx = self.size / h, self.size / w
        d["image"] = F.interpolate(image[None], size=(self.size, self.size), mode="bilinear", align_corners=False)[0]
        if "masks" in d and d["masks"].numel():
            masks = F.interpolate(
                d["masks"][None].float(), size=(self.size, self.size), mode="bilinear", align_corners=False
            )[0]
            d["masks"] = (masks >= 0.5).to(torch.uint8)
        elif "masks" in d:
            d["masks"] = torch.zeros(0, self.size, self.size, dtype=torch.uint8)
        if "boxes" in d:
            d["boxes"] = d["boxes"] * torch.tensor([sx, sy, sx, sy], dtype=torch.float32)
        d["scale"] = (sy, sx)
        return d


def _affine_about_centre(angle_deg: float, scale: float, shift: tuple[float, float], h: int, w: int) -> Tensor:
    """3 x 3 forward map of pixel coordinates (x, y): rotate and scale about the image centre, then shift."""
    a = math.radians(angle_deg)
    cos, sin = math.cos(a) * scale, math.sin(a) * scale
    cx, cy = w / 2.0, h / 2.0
    return torch.tensor(
        [
            [cos, -sin, cx - cos * cx + sin * cy + shift[0]],
            [sin, cos, cy - sin * cx - cos * cy + shift[1]],
            [0.0, 0.0, 1.0],
        ],
        dtype=torch.float64,
    )


def _warp(image: Tensor, forward: Tensor, mode: str, padding_mode: str) -> Tensor:
    """Resample (C, H, W) so that output(x) = input(forward^-1 x) (continuous pixel coordinates)."""
    _, h, w = image.shape
    inverse = torch.linalg.inv(forward)
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5, indexing="ij"
    )
    points = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1) @ inverse.T
    grid = torch.stack([points[..., 0] / w * 2 - 1, points[..., 1] / h * 2 - 1], dim=-1).to(torch.float32)
    out = F.grid_sample(image[None].float(), grid[None], mode=mode, padding_mode=padding_mode, align_corners=False)
    return out[0]


class RandDetectionAugmentd(MapTransform, RandomizableTransform):
    """Training augmentation of the papers: horizontal flip, shift, rescaling and rotation, applied to ``image``
    (all D slices alike), ``masks`` and ``boxes``.

    With probability ``flip_prob`` the image is mirrored left-right; with probability ``prob`` a random affine map
    (rotation in +-``rotate_range`` degrees and scaling by 1 +- ``scale_range`` about the centre, then a shift of
    up to +-``shift_range`` of the size; the reference A3D configuration's values by default) is applied (image
    bilinear with reflected borders, masks nearest). Boxes become the bounding boxes of their transformed corners,
    clipped to the image; boxes left narrower than ``min_size`` pixels are dropped with their masks and labels.

    Args:
        prob: probability of the affine part. Default 0.8.
        flip_prob: probability of the flip. Default 0.5.
        rotate_range: maximal rotation in degrees. Default 15.
        scale_range: maximal relative scaling. Default 0.2.
        shift_range: maximal shift as a fraction of height / width. Default 0.04.
        min_size: smallest box side kept, in pixels. Default 2.
    """

    def __init__(
        self,
        prob: float = 0.8,
        flip_prob: float = 0.5,
        rotate_range: float = 15.0,
        scale_range: float = 0.2,
        shift_range: float = 0.04,
        min_size: float = 2.0,
    ) -> None:
        MapTransform.__init__(self, keys=["image"])
        RandomizableTransform.__init__(self, prob)
        self.flip_prob, self.rotate_range, self.scale_range = float(flip_prob), float(rotate_range), float(scale_range)
        self.shift_range, self.min_size = float(shift_range), float(min_size)
        self._flip = False
        self._params = (0.0, 1.0, (0.0, 0.0))

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self._flip = bool(self.R.rand() < self.flip_prob)
        angle = float(self.R.uniform(-self.rotate_range, self.rotate_range))
        scale = float(self.R.uniform(1 - self.scale_range, 1 + self.scale_range))
        shift = (
            float(self.R.uniform(-self.shift_range, self.shift_range)),
            float(self.R.uniform(-self.shift_range, self.shift_range)),
        )
        self._params = (angle, scale, shift)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        image = torch.as_tensor(d["image"], dtype=torch.float32)
        h, w = image.shape[-2:]
        forward = torch.eye(3, dtype=torch.float64)
        if self._flip:
            forward = torch.tensor([[-1.0, 0, w], [0, 1, 0], [0, 0, 1]], dtype=torch.float64) @ forward
        if self._do_transform:
            angle, scale, (tx, ty) = self._params
            forward = _affine_about_centre(angle, scale, (tx * w, ty * h), h, w) @ forward
        if torch.equal(forward, torch.eye(3, dtype=torch.float64)):
            return d
        d["image"] = _warp(image, forward, "bilinear", "reflection")
        masks = d["masks"]
        if masks.numel():
            d["masks"] = (_warp(masks.float(), forward, "nearest", "zeros") > 0.5).to(torch.uint8)
        boxes = d["boxes"].to(torch.float64)
        if boxes.numel():
            x1, y1, x2, y2 = boxes.unbind(1)
            corners = torch.stack(
                [torch.stack([x1, y1]), torch.stack([x2, y1]), torch.stack([x1, y2]), torch.stack([x2, y2])]
            )  # (4, 2, G)
            moved = torch.einsum("ij,kjg->kig", forward[:2, :2], corners) + forward[:2, 2][None, :, None]
            new = torch.stack(
                [
                    moved[:, 0].min(0).values,
                    moved[:, 1].min(0).values,
                    moved[:, 0].max(0).values,
                    moved[:, 1].max(0).values,
                ],
                dim=1,
            )
            new[:, 0::2] = new[:, 0::2].clamp(0, w)
            new[:, 1::2] = new[:, 1::2].clamp(0, h)
            keep = ((new[:, 2] - new[:, 0]) >= self.min_size) & ((new[:, 3] - new[:, 1]) >= self.min_size)
            d["boxes"] = new[keep].to(torch.float32)
            d["labels"] = d["labels"][keep]
            d["masks"] = d["masks"][keep]
        return d


class NoduleCropd(MapTransform):
    """Replace the CT path under ``image`` by the nodule's crop: ``(1, r, r, r)`` float32 HU, axes along L, P, S, as
    in training (:func:`sample_nodule_crop` around ``centre_lps``). The CT is read once for all its nodules.

    Args:
        roi_size: crop voxels per side (as trained). Default 48.
        spacing_mm: crop voxel size (as trained). Default 1.0.
        cval: HU outside the CT. Default -1024.
    """

    def __init__(self, roi_size: int = 48, spacing_mm: float = 1.0, cval: float = -1024.0) -> None:
        super().__init__(keys="image")
        self.roi_size, self.spacing_mm, self.cval = int(roi_size), float(spacing_mm), float(cval)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        hu, affine = cached_ct(str(d["image"]))
        crop = sample_nodule_crop(hu, affine, d["centre_lps"], self.roi_size, self.spacing_mm, self.cval)
        d["ct"], d["image"] = str(d["image"]), torch.from_numpy(crop)[None]
        return d

