"""Figures of the bundles' reports: the FROC curve, LiTS overlays, DeepLesion detection overlays (matplotlib Agg /
PIL, written to files; nothing is shown).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ['draw_detection', 'plot_froc', 'to_lps', 'to_lps_spacing', 'write_overlay_png']


def plot_froc(result: Mapping[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fps = np.asarray(result["curve_fps"], dtype=float)
    sens = np.asarray(result["curve_sensitivity"], dtype=float)
    fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
    keep = fps > 0
    ax.step(np.clip(fps[keep], 1e-2, None), sens[keep], where="post", label="FROC")
    levels = sorted(float(k) for k in result["sensitivity"])
    ax.plot(levels, [result["sensitivity"][k] for k in levels], "o", label="reported levels")
    ax.set_xscale("log")
    ax.set_xlim(0.25, 32)
    ax.set_ylim(0, 1.02)
    ax.set_xticks(levels)
    ax.set_xticklabels([f"{k:g}" for k in levels])
    ax.set_xlabel("false positives per image")
    ax.set_ylabel("sensitivity")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def draw_detection(hu: np.ndarray, det: Mapping[str, Any], window: Sequence[float], path: Path) -> None:
    from PIL import Image, ImageDraw

    from .detection import rle_to_mask

    lo, hi = float(window[0]), float(window[1])
    grey = (np.clip((hu - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    rgb = np.stack([grey] * 3, axis=-1)
    mask = rle_to_mask(det["mask_rle"])
    if mask.any():
        inner = mask.copy()
        inner[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
        rgb[mask & ~inner] = (255, 220, 0)
    image = Image.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    x1, y1, x2, y2 = det["box"]
    draw.rectangle([x1, y1, x2, y2], outline=(255, 40, 40))
    draw.text((max(x1, 0), max(y1 - 11, 0)), f"{det['score']:.2f}", fill=(255, 40, 40))
    image.save(path)


def to_lps(volume_zyx: np.ndarray, axcodes: str) -> np.ndarray:
    """Reorient a network-space (z, y, x) array whose (x, y, z) axes follow ``axcodes`` to L, P, S (for display)."""
    import nibabel.orientations as nio

    xyz = np.transpose(volume_zyx, (2, 1, 0))
    transform = nio.ornt_transform(nio.axcodes2ornt(tuple(axcodes)), nio.axcodes2ornt(("L", "P", "S")))
    return np.transpose(nio.apply_orientation(xyz, transform), (2, 1, 0))


def write_overlay_png(
    image_zyx: np.ndarray,
    label_zyx: np.ndarray,
    spacing_zyx: Sequence[float],
    path: str | os.PathLike,
    title: str = "",
) -> str:
    """Save a PNG with the label map over axial, coronal and sagittal slices through the liver's centre.

    The arrays are (z, y, x) with voxel axes toward patient Left, Posterior, Superior (the bundle's network space):
    the axial slice is shown as a radiologist reads it (anterior up, patient's right on the left), coronal and
    sagittal with superior up. The slices pass through the centroid of the predicted liver (labels 1 and 2), or
    through the middle of the volume when no liver was found. Liver is drawn green, tumour red.

    Args:
        image_zyx: the image, any range (displayed between its 0.5 and 99.5 percentiles).
        label_zyx: the label map (0 background, 1 liver, 2 tumour), same shape.
        spacing_zyx: voxel size in mm along (z, y, x), for the aspect ratio.
        path: the PNG to write.
        title: figure title.

    Returns:
        The written path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    image = np.asarray(image_zyx, dtype=np.float32)
    label = np.asarray(label_zyx)
    if image.shape != label.shape or image.ndim != 3:
        raise ValueError(f"write_overlay_png: image {image.shape} and label {label.shape} must be the same 3D shape")
    liver = np.argwhere(label >= 1)
    centre = liver.mean(0).round().astype(int) if len(liver) else np.array(image.shape) // 2
    cz, cy, cx = (int(c) for c in centre)
    sz, sy, sx = (float(s) for s in spacing_zyx)
    lo, hi = np.percentile(image, [0.5, 99.5]) if image.size else (0.0, 1.0)
    colours = ListedColormap([(0, 0, 0, 0), (0.1, 0.9, 0.2, 0.35), (1.0, 0.1, 0.1, 0.6)])
    views = [
        ("axial", image[cz], label[cz], sy / sx, "upper", f"z={cz}"),
        ("coronal", image[:, cy, :], label[:, cy, :], sz / sx, "lower", f"y={cy}"),
        ("sagittal", image[:, :, cx], label[:, :, cx], sz / sy, "lower", f"x={cx}"),
    ]
    fig = Figure(figsize=(12, 4.6), dpi=100)
    FigureCanvasAgg(fig)
    for i, (name, img, lab, aspect, origin, where) in enumerate(views):
        ax = fig.add_subplot(1, 3, i + 1)
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, aspect=aspect, origin=origin,
                  interpolation="nearest")
        ax.imshow(np.clip(lab, 0, 2), cmap=colours, vmin=0, vmax=2, aspect=aspect, origin=origin,
                  interpolation="nearest")
        ax.set_title(f"{name} ({where})", fontsize=9)
        ax.set_axis_off()
    suffix = "" if len(liver) else " (no liver found)"
    fig.suptitle(f"{title}{suffix}\ngreen: liver, red: tumour", fontsize=10)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return str(out)


def to_lps_spacing(spacing_zyx: Sequence[float], axcodes: str) -> list[float]:
    """Spacing (z, y, x) of a network-space array after :func:`to_lps` (axes may be permuted)."""
    import nibabel.orientations as nio

    transform = nio.ornt_transform(nio.axcodes2ornt(tuple(axcodes)), nio.axcodes2ornt(("L", "P", "S")))
    spacing_xyz = list(spacing_zyx)[::-1]
    out_xyz = [0.0, 0.0, 0.0]
    for src, (dst, _) in enumerate(transform):
        out_xyz[int(dst)] = spacing_xyz[src]
    return out_xyz[::-1]

