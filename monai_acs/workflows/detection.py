"""Steps of the DeepLesion detection bundle (A3D paper Sec. 3, ACS paper Sec. IV-D): data, engines, FROC, inference.

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

import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events

from ..data.deeplesion import find_deeplesion_files, read_dl_info
from .plots import draw_detection
from .checkpoints import save_atomic

__all__ = [
    "DetectionWriter",
    "cache_capacity",
    "deeplesion_datalist",
    "mask_to_rle",
    "rle_to_mask",
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


# ----------------------------------------------------------------------------------------------------- engine steps


# ----------------------------------------------------------------------------------------------------- FROC


# ----------------------------------------------------------------------------------------------------- inference


def cache_capacity(
    cache_gib: float | None, num_slices: int, image_size: int, lesions_per_item: float = 1.0
) -> int:
    """How many preprocessed DeepLesion items (key slice with context, weak masks) fit in ``cache_gib`` GiB.

    The bundle gives this to MONAI's ``CacheDataset(cache_num=...)``: the first items are kept in memory, the others
    are read from their PNG slices each epoch. An item holds the image ``(num_slices, size, size)`` float32 and one
    ``(size, size)`` uint8 mask per lesion (DeepLesion: 32,735 lesions on 32,120 key slices, about 1 per item), so
    ``size^2 * (4 * num_slices + lesions_per_item)`` bytes plus a few hundred for boxes and keys: 3.25 MiB at 512 px
    and 3 slices.

    Args:
        cache_gib: the memory budget in GiB of one dataset (train or validation); None or a negative value: no bound
            (every item is cached, as ``cache_rate`` allows).
        num_slices: slices per item (D).
        image_size: height and width after resizing.
        lesions_per_item: mean masks per item. Default 1.0.

    Returns:
        The number of items to cache (0 when the budget is 0).

    Examples:
        >>> cache_capacity(2.0, 3, 512)
        630
    """
    if cache_gib is None or float(cache_gib) < 0:
        return sys.maxsize
    per_item = int(image_size) ** 2 * (4 * int(num_slices) + float(lesions_per_item)) + 512
    return int(float(cache_gib) * 2**30 // per_item)


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
            draw_detection(vol[s["index"]], det, self.display_window, path)
            written.append(path.name)
        n = sum(len(s["detections"]) for s in self.slices)
        print(
            f"{n} detections (score >= {self.score_threshold:g}) on {len(self.slices)} slices -> "
            f"{self.output_dir / 'detections.json'}; overlays: {written}",
            flush=True,
        )


