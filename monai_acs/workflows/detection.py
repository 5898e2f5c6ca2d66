"""Steps of the DeepLesion detection bundle (A3D paper Sec. 3, ACS paper Sec. IV-D): data, engine steps, FROC, inference.

Data flow: ``DL_info.csv`` + 16-bit PNG slices -> :class:`LoadDeepLesiond` (D slices at 2 mm around the key slice,
RECIST ellipse weak masks) -> HU clip and normalisation (MONAI ``ScaleIntensityRanged``) -> :class:`ResizeDetectiond`
-> :class:`RandDetectionAugmentd` (training: horizontal flip, shift, rescaling, rotation) -> MONAI engines.

The MONAI ``SupervisedTrainer`` and ``SupervisedEvaluator`` carry the detector through ``iteration_update``
(:class:`DetectionTrainStep`, :class:`DetectionEvalStep`): their default iteration calls ``network(inputs)`` and
``loss_function(pred, label)``, while a torchvision-style detector takes the targets in ``forward`` and returns its
losses itself. Everything else (handlers, checkpoints, LR schedule, validation, metrics) is MONAI / ignite.

Boxes are (x1, y1, x2, y2) in continuous pixel coordinates: pixel column ``i`` spans ``[i, i + 1)``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from ignite.metrics import Metric
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform
from torch import Tensor, nn

from ..data.deeplesion import find_deeplesion_files, read_dl_info, read_hu_png, recist_ellipse_mask
from ..errors import BundleError
from ..metrics import froc
from .checks import check_volume
from .runs import load_checkpoint, load_weights, publish_model, save_atomic

__all__ = [
    "DetectionEvalStep",
    "DetectionTrainStep",
    "DetectionWriter",
    "FROCMetric",
    "LoadDeepLesiond",
    "RandDetectionAugmentd",
    "ResizeDetectiond",
    "SliceContextDataset",
    "WarmupMultiStepLambda",
    "context_slices",
    "deeplesion_datalist",
    "evaluate_detection",
    "finish_detection_run",
    "list_collate",
    "mask_to_rle",
    "read_ct_volume",
    "rle_to_mask",
    "sum_losses",
    "write_froc_report",
]

logger = logging.getLogger(__name__)

_DEMO = "python scripts/make_demo_data.py deeplesion --out DIR"


# ----------------------------------------------------------------------------------------------------- data
def deeplesion_datalist(dataset_dir: str | os.PathLike, split: int | Sequence[int]) -> list[dict[str, Any]]:
    """One item per key slice of the official ``split`` (1 train, 2 validation, 3 test) of a DeepLesion folder.

    Args:
        dataset_dir: the folder holding ``DL_info.csv`` and ``Images_png/``.
        split: official split(s) to keep.

    Returns:
        Items ``{"images_dir": str, "record": <read_dl_info record>, "id": file name}``.

    Raises:
        FileNotFoundError: the folder does not have the DeepLesion layout (the message says how to make demo data).
        ValueError: the split holds no key slice.
    """
    csv_path, images_dir = find_deeplesion_files(dataset_dir)
    records = read_dl_info(csv_path, split=split)
    if not records:
        raise ValueError(
            f"DeepLesion dataset_dir '{dataset_dir}': no key slice in split {split} of {csv_path} (1 train, 2 "
            f"validation, 3 test); with the demo data, write at least 5 studies to get all three splits ({_DEMO})"
        )
    return [{"images_dir": str(images_dir), "record": r, "id": r["file_name"]} for r in records]


def list_collate(batch: Sequence[Any]) -> list[Any]:
    """Collate a detection batch as a plain list of items (images keep their own targets)."""
    return list(batch)


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


# ----------------------------------------------------------------------------------------------------- engine steps
def sum_losses(losses: Mapping[str, Tensor], weights: Mapping[str, float] | None = None) -> Tensor:
    """The detector's total loss: the weighted sum of its loss dict (equal weights, as in the papers, by default)."""
    if not losses:
        raise ValueError("sum_losses: the detector returned no loss")
    weights = weights or {}
    return sum(float(weights.get(k, 1.0)) * v for k, v in losses.items())  # type: ignore[return-value]


def _plain(x: Any) -> Tensor:
    """A plain tensor (MONAI ``MetaTensor`` meta-data tracking slows every op of a large network down)."""
    x = torch.as_tensor(x)
    return x.as_tensor() if hasattr(x, "as_tensor") else x


def _to_device(batch: Sequence[Mapping[str, Any]], device: torch.device, with_targets: bool) -> tuple:
    images = torch.stack([_plain(item["image"]).to(torch.float32) for item in batch])
    if images.dim() == 4:
        images = images[:, None]  # (N, D, H, W) -> (N, 1, D, H, W)
    images = images.to(device)
    if not with_targets:
        return images, None
    targets = [{key: _plain(item[key]).to(device) for key in ("boxes", "labels", "masks")} for item in batch]
    return images, targets


class DetectionTrainStep:
    """``iteration_update`` of a MONAI ``SupervisedTrainer`` for a torchvision-style detector.

    Moves a :func:`list_collate` batch to the engine's device, runs ``network(images, targets)`` in training mode,
    sums the loss dict with ``engine.loss_function`` (:func:`sum_losses`), back-propagates (optionally clipping the
    gradient norm) and steps ``engine.optimizer``.

    Args:
        grad_clip_norm: maximal gradient norm (35 in the reference configuration); None disables. Default None.

    Returns (per call):
        ``{"loss": total, <each loss>: value}`` as detached tensors (the engine output).
    """

    def __init__(self, grad_clip_norm: float | None = None) -> None:
        self.grad_clip_norm = grad_clip_norm

    def __call__(self, engine: Engine, batch: Sequence[Mapping[str, Any]]) -> dict[str, Tensor]:
        images, targets = _to_device(batch, engine.state.device, True)
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        losses = engine.network(images, targets)
        loss = engine.loss_function(losses)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"detection loss is not finite at iteration {engine.state.iteration}: "
                f"{ {k: float(v) for k, v in losses.items()} }"
            )
        loss.backward()
        if self.grad_clip_norm is not None:
            nn.utils.clip_grad_norm_(engine.network.parameters(), float(self.grad_clip_norm))
        engine.optimizer.step()
        return {"loss": loss.detach(), **{k: v.detach() for k, v in losses.items()}}


class DetectionEvalStep:
    """``iteration_update`` of a MONAI ``SupervisedEvaluator``: the detector in eval mode on a list batch.

    Args:
        keep_masks: keep the pasted mask probabilities in the output (inference); False drops them (FROC needs
            boxes and scores only). Default False.
        with_targets: put the items' targets in ``output["label"]``. Default True.

    Returns (per call):
        ``{"pred": [per image dict on CPU], "label": [targets on CPU] or None, "items": the batch}``.
    """

    def __init__(self, keep_masks: bool = False, with_targets: bool = True) -> None:
        self.keep_masks, self.with_targets = keep_masks, with_targets

    def __call__(self, engine: Engine, batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        images, _ = _to_device(batch, engine.state.device, False)
        engine.network.eval()
        with torch.no_grad():
            detections = engine.network(images)
        pred = [{k: v.detach().cpu() for k, v in det.items() if self.keep_masks or k != "masks"} for det in detections]
        label = None
        if self.with_targets:
            label = [{"boxes": torch.as_tensor(item["boxes"]).cpu()} for item in batch]
        return {"pred": pred, "label": label, "items": list(batch)}


class WarmupMultiStepLambda:
    """LR factor per iteration: linear warm-up, then x ``gamma`` at each milestone epoch (for ``LambdaLR``).

    The papers' schedule (lr 0.02, x0.1 at epochs 10 and 13 of 20) with the reference configuration's linear
    warm-up from ``warmup_ratio`` over the first ``warmup_iters`` iterations. Step the scheduler every iteration.

    Args:
        iters_per_epoch: iterations per epoch (the training loader's length).
        milestones: epochs (1-based, as in the papers: "at epoch 10") from which the factor is multiplied by gamma.
        gamma: factor. Default 0.1.
        warmup_iters: warm-up length in iterations (0 disables). Default 0.
        warmup_ratio: starting factor of the warm-up. Default 0.01.
    """

    def __init__(
        self,
        iters_per_epoch: int,
        milestones: Sequence[int],
        gamma: float = 0.1,
        warmup_iters: int = 0,
        warmup_ratio: float = 0.01,
    ) -> None:
        self.iters_per_epoch = max(1, int(iters_per_epoch))
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma, self.warmup_iters, self.warmup_ratio = float(gamma), int(warmup_iters), float(warmup_ratio)

    def __call__(self, iteration: int) -> float:
        epoch = iteration // self.iters_per_epoch + 1  # the 1-based epoch this iteration belongs to
        factor = self.gamma ** sum(epoch > m for m in self.milestones)
        if iteration < self.warmup_iters:
            factor *= self.warmup_ratio + (1 - self.warmup_ratio) * iteration / self.warmup_iters
        return factor


# ----------------------------------------------------------------------------------------------------- FROC
class FROCMetric(Metric):
    """ignite metric: average FROC sensitivity over ``average_over`` FPs per image (the papers' key number).

    ``update`` takes the :class:`DetectionEvalStep` output; ``compute`` runs :func:`monai_acs.metrics.froc` on all
    images seen (``last_result`` keeps the full result: sensitivities per level and the curve).

    Args:
        fp_rates: FPs-per-image levels. Default (0.5, 1, 2, 4, 8, 16).
        iou_threshold: a detection is a true positive when its IoU with a not yet matched lesion box is >= this.
            Default 0.5.
        average_over: levels averaged into the key number. Default (0.5, 1, 2, 4).
        gather: under ``torch.distributed``, gather the images of all ranks before computing (every rank must
            call ``compute``). Default True.
    """

    def __init__(
        self,
        fp_rates: Sequence[float] = (0.5, 1, 2, 4, 8, 16),
        iou_threshold: float = 0.5,
        average_over: Sequence[float] = (0.5, 1, 2, 4),
        output_transform: Callable = lambda x: x,
        device: str | torch.device = "cpu",
        gather: bool = True,
    ) -> None:
        self.fp_rates, self.iou_threshold = tuple(float(r) for r in fp_rates), float(iou_threshold)
        self.average_over = tuple(float(r) for r in average_over)
        self.last_result: dict[str, Any] | None = None
        self.gather = bool(gather)
        super().__init__(output_transform=output_transform, device=device)

    required_output_keys = ("pred", "label")

    def reset(self) -> None:
        self._detections: list[np.ndarray] = []
        self._truths: list[np.ndarray] = []

    def update(self, output: Mapping[str, Any] | Sequence[Any]) -> None:
        """Add one batch: the :class:`DetectionEvalStep` output, or its ``(pred, label)`` pair."""
        pred, label = (output["pred"], output["label"]) if isinstance(output, Mapping) else output
        for det, truth in zip(pred, label):
            boxes = det["boxes"].reshape(-1, 4).numpy()
            scores = det["scores"].reshape(-1, 1).numpy()
            self._detections.append(np.concatenate([boxes, scores], axis=1))
            self._truths.append(truth["boxes"].reshape(-1, 4).numpy())

    def compute(self) -> float:
        detections, truths = self._detections, self._truths
        if self.gather and torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, (detections, truths))
            detections = [d for part in gathered for d in part[0]]
            truths = [t for part in gathered for t in part[1]]
        if not truths:
            raise RuntimeError("FROCMetric: no image was evaluated")
        self.last_result = froc(detections, truths, self.fp_rates, self.iou_threshold, self.average_over)
        return float(self.last_result["average_sensitivity"])


def write_froc_report(
    result: Mapping[str, Any],
    output_dir: str | os.PathLike,
    title: str = "FROC",
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``froc.csv`` (sensitivity per FPs-per-image level and the average), ``froc_curve.csv``, ``froc.png`` and
    ``froc.json`` into ``output_dir``, print the table, and return the summary.

    Args:
        result: a :func:`monai_acs.metrics.froc` result (e.g. ``FROCMetric.last_result``).
        output_dir: folder to write to (created).
        title: heading of the printed table and the plot.
        extra: entries added to ``froc.json`` (settings, checkpoint, ...).

    Returns:
        ``{"sensitivity": {fp: s}, "average_sensitivity": a, "num_images": n, "num_lesions": m, ...extra}``.
    """
    if result is None:
        raise ValueError("write_froc_report: no FROC result (did the evaluation run?)")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    sens = {float(k): float(v) for k, v in result["sensitivity"].items()}
    summary = {
        "sensitivity": {f"{k:g}": v for k, v in sens.items()},
        "average_sensitivity": float(result["average_sensitivity"]),
        "num_images": int(result["num_images"]),
        "num_lesions": int(result["num_lesions"]),
        **dict(extra or {}),
    }
    rows = [("fp_per_image", "sensitivity")] + [(f"{k:g}", f"{v:.4f}") for k, v in sens.items()]
    rows.append(("average", f"{summary['average_sensitivity']:.4f}"))
    with (out / "froc.csv").open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    with (out / "froc_curve.csv").open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("fp_per_image", "sensitivity", "score_threshold"))
        for fp, s, t in zip(result["curve_fps"], result["curve_sensitivity"], result["curve_thresholds"]):
            writer.writerow((f"{float(fp):.4f}", f"{float(s):.4f}", f"{float(t):.6g}"))
    save_atomic(json.dumps(summary, indent=2) + "\n", out / "froc.json")
    _plot_froc(result, out / "froc.png", title)
    header = " | ".join(f"{k:g}" for k in sens)
    values = " | ".join(f"{100 * v:.2f}" for v in sens.values())
    print(
        f"{title} ({summary['num_images']} images, {summary['num_lesions']} lesions, IoU >= 0.5)\n"
        f"sensitivity (%) at FPs/image: {header} | avg\n{' ' * 29}{values} | "
        f"{100 * summary['average_sensitivity']:.2f}\nwritten to {out}",
        flush=True,
    )
    return summary


def _plot_froc(result: Mapping[str, Any], path: Path, title: str) -> None:
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


def evaluate_detection(
    network: nn.Module,
    loader: Any,
    device: Any,
    checkpoint: str | None = None,
    fp_rates: Sequence[float] = (0.5, 1, 2, 4, 8, 16),
    iou_threshold: float = 0.5,
    average_over: Sequence[float] = (0.5, 1, 2, 4),
) -> dict[str, Any]:
    """Run the detector over ``loader`` (optionally loading ``checkpoint`` first) and return the FROC result."""
    if checkpoint is not None:
        load_weights(network, load_checkpoint(checkpoint), checkpoint)
    metric = FROCMetric(fp_rates, iou_threshold, average_over, gather=False)
    metric.reset()
    step = DetectionEvalStep()
    holder = Engine(lambda e, b: None)
    holder.network, holder.state.device = network, torch.device(device)  # type: ignore[attr-defined]
    for batch in loader:
        metric.update(step(holder, batch))
    metric.compute()
    return metric.last_result  # type: ignore[return-value]


def finish_detection_run(
    network: nn.Module,
    loader: Any,
    device: Any,
    run_dir: str,
    models_dir: str,
    settings: Mapping[str, Any],
    publish: bool = True,
) -> dict[str, Any]:
    """Evaluate the run's best checkpoint on the validation loader, write the FROC report into the run folder and
    (unless ``publish=False``) publish the weights as ``<models_dir>/model.pt``."""
    best = Path(run_dir) / "model_best.pt"
    if not best.is_file():
        raise FileNotFoundError(f"{best} was not written: did validation run? (val_interval <= epochs)")
    module = network.module if isinstance(network, nn.parallel.DistributedDataParallel) else network
    result = evaluate_detection(module, loader, device, checkpoint=str(best))
    extra = {**dict(settings), "run_dir": run_dir, "best_checkpoint": str(best)}
    summary = write_froc_report(
        result,
        run_dir,
        f"Validation FROC, best checkpoint ({settings.get('operator')}, D={settings.get('num_slices')})",
        extra,
    )
    if str(publish).strip().lower() not in ("false", "0", "no", "none", ""):  # "--publish false" arrives as a string
        published = publish_model(best, models_dir, info=extra)
        print(f"best model published to {published}; logs and checkpoints in {run_dir}", flush=True)
    else:
        print(f"logs and checkpoints in {run_dir} (not published: publish=false)", flush=True)
    return summary


# ----------------------------------------------------------------------------------------------------- inference
def read_ct_volume(input_path: str | os.PathLike, slice_interval_mm: float | None = None) -> dict[str, Any]:
    """Read a CT volume for inference: a NIfTI file, a DICOM series folder, or a DeepLesion slice folder.

    - DeepLesion folder (``Images_png/<series>/NNN.png``, 16-bit HU + 32768): slices are the PNG numbers; the slice
      interval comes from ``slice_interval_mm`` or else from ``DL_info.csv`` two folders up.
    - NIfTI (``.nii`` / ``.nii.gz``): axial slices along the third voxel axis, shown with rows = second axis
      (array order, no reorientation); interval = the third voxel size.
    - DICOM series folder (``.dcm`` files, read with ITK through MONAI ``LoadImage``): as NIfTI.

    Args:
        input_path: the file or folder.
        slice_interval_mm: overrides the slice interval. Default None.

    Returns:
        ``{"volume": (Z, H, W) float32 HU, "slice_numbers": [Z ints], "slice_interval_mm": float, "format": str,
        "input": str}``.

    Raises:
        FileNotFoundError: the path does not exist or holds no readable slice.
        ValueError: the format is not recognised or the slice interval is unknown.
    """
    path = Path(input_path)
    if not path.exists():
        raise FileNotFoundError(
            f"inference input '{path}' does not exist (a .nii/.nii.gz file, a DICOM series "
            f"folder or a DeepLesion Images_png/<series> folder)"
        )
    if path.is_dir() and sorted(path.glob("*.png")):
        pngs = sorted((p for p in path.glob("*.png") if p.stem.isdigit()), key=lambda p: int(p.stem))
        if not pngs:
            raise FileNotFoundError(f"'{path}': no NNN.png DeepLesion slices")
        volume = np.stack([read_hu_png(p).astype(np.float32) for p in pngs])
        check_volume(volume, f"'{path}'")
        interval = slice_interval_mm
        if interval is None:
            csv_path = path.parent.parent / "DL_info.csv"
            if csv_path.is_file():
                for record in read_dl_info(csv_path):
                    if record["series_dir"] == path.name:
                        interval = float(record["spacing"][2])
                        break
        if interval is None:
            raise ValueError(
                f"'{path}': slice interval unknown (no DL_info.csv entry two folders up); pass --slice_interval_mm"
            )
        return {
            "volume": volume,
            "slice_numbers": [int(p.stem) for p in pngs],
            "slice_interval_mm": float(interval),
            "format": "deeplesion_png",
            "input": str(path),
        }
    if path.is_file() and path.name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        try:
            img = nib.load(str(path))
            data = np.asarray(img.dataobj, dtype=np.float32)
        except Exception as error:  # nibabel: EOFError, zlib.error, OSError ... none names the file
            raise BundleError(
                f"cannot read '{path}': {type(error).__name__}: {' '.join(str(error).split())}; the file is corrupt "
                f"or truncated (an "
                f"interrupted copy?): replace it with an intact copy"
            ) from error
        if data.ndim != 3:
            raise ValueError(f"'{path}': expected a 3D CT volume, got shape {data.shape}")
        check_volume(data, f"'{path}'", affine=img.affine)
        volume = np.ascontiguousarray(np.transpose(data, (2, 1, 0)))
        interval = slice_interval_mm or float(img.header.get_zooms()[2])
        return {
            "volume": volume,
            "slice_numbers": list(range(volume.shape[0])),
            "slice_interval_mm": interval,
            "format": "nifti",
            "input": str(path),
        }
    if path.is_dir():
        from monai.transforms import LoadImage

        try:
            image = LoadImage(reader="ITKReader", image_only=True)(str(path))
        except Exception as error:  # ITK raises many types for unreadable folders
            raise ValueError(
                f"'{path}': not a DeepLesion slice folder and not a readable DICOM series "
                f"({type(error).__name__}: {error})"
            ) from error
        data = np.asarray(image, dtype=np.float32)
        if data.ndim != 3:
            raise ValueError(f"'{path}': expected a 3D DICOM series, got shape {data.shape}")
        check_volume(data, f"'{path}'", affine=image.affine)
        volume = np.ascontiguousarray(np.transpose(data, (2, 1, 0)))
        # ITKReader puts no NIfTI-style "pixdim" in the metadata: the slice interval is the length of the affine's
        # third column (the distance between consecutive slices; ITK takes it from the slice positions).
        interval = slice_interval_mm or float(np.linalg.norm(np.asarray(image.affine, dtype=np.float64)[:3, 2]))
        return {
            "volume": volume,
            "slice_numbers": list(range(volume.shape[0])),
            "slice_interval_mm": interval,
            "format": "dicom",
            "input": str(path),
        }
    raise ValueError(
        f"inference input '{path}': not a .nii/.nii.gz file, a DICOM series folder or a DeepLesion slice folder"
    )


def context_slices(
    volume: np.ndarray, index: int, num_slices: int, interval_mm: float, target_interval_mm: float = 2.0
) -> np.ndarray:
    """D slices centred on ``volume[index]`` at ``target_interval_mm`` spacing, linearly interpolated along z.

    Positions beyond the volume are clamped to its first / last slice (as
    :func:`monai_acs.data.deeplesion.load_slices` does with ``Slice_range``).

    Examples:
        >>> vol = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)
        >>> context_slices(vol, 2, 3, interval_mm=1.0)[:, 0, 0].tolist()
        [0.0, 2.0, 4.0]
        >>> context_slices(vol, 0, 3, interval_mm=4.0)[:, 0, 0].tolist()
        [0.0, 0.0, 0.5]
    """
    if num_slices < 1 or num_slices % 2 == 0:
        raise ValueError(f"num_slices must be odd and positive, got {num_slices}")
    step = float(target_interval_mm) / float(interval_mm)
    last = volume.shape[0] - 1
    out = []
    for j in range(-(num_slices // 2), num_slices // 2 + 1):
        position = min(max(index + j * step, 0.0), float(last))
        below = math.floor(position + 1e-6)
        frac = position - below
        slice_ = volume[below]
        if frac > 1e-6 and below < last:
            slice_ = (1 - frac) * slice_ + frac * volume[below + 1]
        out.append(slice_)
    return np.stack(out).astype(np.float32)


class SliceContextDataset(torch.utils.data.Dataset):
    """One item per axial slice (or those in ``slice_range``) of a :func:`read_ct_volume` result, with its context.

    Items: ``{"image": (D, H, W) HU, "slice": slice number, "original_size": (H, W)}`` passed through ``transform``.

    Args:
        volume: a :func:`read_ct_volume` result.
        num_slices: D. Default 3.
        target_interval_mm: context spacing. Default 2.0.
        slice_range: inclusive (first, last) slice numbers (PNG numbers for DeepLesion folders, 0-based indices for
            NIfTI / DICOM); None: every slice. Default None.
        transform: applied to each item. Default None.
    """

    def __init__(
        self,
        volume: Mapping[str, Any],
        num_slices: int = 3,
        target_interval_mm: float = 2.0,
        slice_range: Sequence[int] | None = None,
        transform: Callable | None = None,
    ) -> None:
        self.volume = volume
        self.num_slices, self.target_interval_mm, self.transform = int(num_slices), float(target_interval_mm), transform
        numbers = list(volume["slice_numbers"])
        if slice_range is not None:
            lo, hi = int(slice_range[0]), int(slice_range[1])
            selected = [i for i, n in enumerate(numbers) if lo <= n <= hi]
            if not selected:
                raise ValueError(
                    f"slice_range {list(slice_range)} selects no slice of {volume['input']} "
                    f"(slices {numbers[0]}..{numbers[-1]})"
                )
        else:
            selected = list(range(len(numbers)))
        self.indices = selected

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        index = self.indices[i]
        vol = self.volume["volume"]
        image = context_slices(vol, index, self.num_slices, self.volume["slice_interval_mm"], self.target_interval_mm)
        item = {
            "image": torch.as_tensor(image),
            "slice": int(self.volume["slice_numbers"][index]),
            "index": index,
            "original_size": tuple(int(s) for s in vol.shape[-2:]),
        }
        return self.transform(item) if self.transform is not None else item


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """Run-length encoding of a binary (H, W) mask in row-major order, starting with a run of zeros.

    Examples:
        >>> mask_to_rle(np.array([[0, 1, 1], [1, 0, 0]]))
        {'size': [2, 3], 'counts': [1, 3, 2]}
        >>> mask_to_rle(np.array([[1, 1]]))
        {'size': [1, 2], 'counts': [0, 2]}
    """
    flat = np.asarray(mask, dtype=bool).ravel()
    size = [int(s) for s in np.shape(mask)]
    if not flat.size:
        return {"size": size, "counts": []}
    boundaries = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], boundaries, [flat.size]])).tolist()
    if flat[0]:
        runs = [0] + runs
    return {"size": size, "counts": [int(r) for r in runs]}


def rle_to_mask(rle: Mapping[str, Any]) -> np.ndarray:
    """Decode :func:`mask_to_rle`.

    Examples:
        >>> rle_to_mask({"size": [2, 3], "counts": [1, 3, 2]}).astype(int).tolist()
        [[0, 1, 1], [1, 0, 0]]
    """
    h, w = rle["size"]
    flat = np.zeros(h * w, dtype=bool)
    position, value = 0, False
    for count in rle["counts"]:
        flat[position : position + count] = value
        position += count
        value = not value
    return flat.reshape(h, w)


class DetectionWriter:
    """ignite handler of the inference engine: per-slice detections as JSON plus overlay PNGs of the top findings.

    Detections with score >= ``score_threshold`` are mapped back to the input's pixel grid (boxes divided by the
    resize factor, masks resized and thresholded at 0.5) and written to ``<output_dir>/detections.json``:
    ``{"input", "format", "num_slices", "slice_interval_mm", "image_size", "slices": [{"slice", "detections":
    [{"box": [x1, y1, x2, y2], "score", "label", "mask_rle": {"size", "counts"}}]}]}`` (row-major RLE starting
    with zeros, see :func:`mask_to_rle`). The ``top_k`` highest-scoring findings of the volume get an overlay PNG
    ``overlay_<rank>_slice<k>.png`` (the slice in ``display_window`` HU, box in red, mask outline in yellow).

    Args:
        output_dir: output folder (created).
        volume: the :func:`read_ct_volume` result (for the overlays).
        num_slices: D (recorded). Default 3.
        score_threshold: minimal score written. Default 0.05.
        top_k: number of overlays. Default 5.
        display_window: HU window of the overlays. Default (-160, 240).
    """

    def __init__(
        self,
        output_dir: str,
        volume: Mapping[str, Any],
        num_slices: int = 3,
        score_threshold: float = 0.05,
        top_k: int = 5,
        display_window: Sequence[float] = (-160.0, 240.0),
    ) -> None:
        self.output_dir = Path(output_dir)
        self.volume, self.num_slices = volume, int(num_slices)
        self.score_threshold, self.top_k, self.display_window = float(score_threshold), int(top_k), display_window
        self.slices: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self.slices = []

    def _collect(self, engine: Engine) -> None:
        output = engine.state.output
        for det, item in zip(output["pred"], output["items"]):
            h, w = item["original_size"]
            sy, sx = item.get("scale", (1.0, 1.0))
            keep = det["scores"] >= self.score_threshold
            boxes = det["boxes"][keep] / torch.tensor([sx, sy, sx, sy])
            masks = det["masks"][keep] if "masks" in det else torch.zeros(0, 1, h, w)
            if masks.numel() and tuple(masks.shape[-2:]) != (h, w):
                masks = F.interpolate(masks.float(), size=(h, w), mode="bilinear", align_corners=False)
            found = []
            for box, score, label, mask in zip(boxes, det["scores"][keep], det["labels"][keep], masks):
                found.append(
                    {
                        "box": [round(float(v), 2) for v in box],
                        "score": round(float(score), 5),
                        "label": int(label),
                        "mask_rle": mask_to_rle((mask[0] >= 0.5).numpy()),
                    }
                )
            self.slices.append({"slice": int(item["slice"]), "index": int(item["index"]), "detections": found})

    def _write(self, engine: Engine) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.slices.sort(key=lambda s: s["slice"])
        vol = self.volume["volume"]
        result = {
            "input": self.volume["input"],
            "format": self.volume["format"],
            "num_slices": self.num_slices,
            "slice_interval_mm": self.volume["slice_interval_mm"],
            "image_size": [int(s) for s in vol.shape[-2:]],
            "score_threshold": self.score_threshold,
            "slices": [{"slice": s["slice"], "detections": s["detections"]} for s in self.slices],
        }
        save_atomic(json.dumps(result) + "\n", self.output_dir / "detections.json")
        findings = [(d["score"], s, d) for s in self.slices for d in s["detections"]]
        findings.sort(key=lambda f: -f[0])
        written = []
        for rank, (_, s, det) in enumerate(findings[: self.top_k], start=1):
            path = self.output_dir / f"overlay_{rank}_slice{s['slice']}.png"
            _overlay(vol[s["index"]], det, self.display_window, path)
            written.append(path.name)
        n = sum(len(s["detections"]) for s in self.slices)
        print(
            f"{n} detections (score >= {self.score_threshold:g}) on {len(self.slices)} slices -> "
            f"{self.output_dir / 'detections.json'}; overlays: {written}",
            flush=True,
        )


def _overlay(hu: np.ndarray, det: Mapping[str, Any], window: Sequence[float], path: Path) -> None:
    from PIL import Image, ImageDraw

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
