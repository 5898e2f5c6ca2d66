"""ignite metrics the bundles attach to their MONAI evaluators: every reported figure is computed here, once.

Each metric puts one scalar under its own name in ``engine.state.metrics`` (usable as ``key_val_metric``, for
checkpoint selection, ``StatsHandler``, TensorBoard and ``MetricsSaver``) and its details under ``<name>/<detail>``;
:class:`monai_acs.workflows.report.MetricsReport` builds the reports from those entries. The definitions are those of
:mod:`monai_acs.metrics` (Dice global / per case, IoU, AUC), so a bundle prints the paper's figures.

Under ``torch.distributed`` the per-case values of all ranks are gathered before computing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine
from ignite.metrics import Metric

from .. import metrics as _m
from ..metrics import froc

__all__ = ["BinaryClassificationMetrics", "FROCMetric", "LITS_REGIONS", "LitsDiceMetric", "SegmentationMetrics",
           "summarize_lits_dice"]

#: The evaluated regions of LiTS: the liver is every non-background voxel (labels 1 and 2), the tumour label 2.
LITS_REGIONS: tuple[str, ...] = ("liver", "tumour")


def _gather(values: list[Any]) -> list[Any]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, values)
        return [v for part in gathered for v in part]
    return values


def _pairs(output: Any) -> tuple[Sequence[Any], Sequence[Any]]:
    """``(preds, labels)`` from a decollated engine output (list of dicts), a dict, or a pair."""
    if isinstance(output, dict):
        return output["pred"], output["label"]
    if isinstance(output, (list, tuple)) and output and isinstance(output[0], dict):
        return [o["pred"] for o in output], [o["label"] for o in output]
    return output[0], output[1]


class _DetailedMetric(Metric):
    """A metric whose ``compute`` gives a dict: ``key`` under the metric's name, every entry under ``name/entry``."""

    key = ""

    def completed(self, engine: Engine, name: str) -> None:
        result = self.compute()
        engine.state.metrics[name] = result[self.key]
        for entry, value in result.items():
            engine.state.metrics[f"{name}/{entry}"] = value


class SegmentationMetrics(_DetailedMetric):
    """Per-class Dice global, Dice per case and IoU (global) of label maps, and their foreground means.

    ``update`` takes the evaluator's decollated output after its postprocessing: ``pred`` and ``label`` as one-hot
    (C, ...) or label maps (1, ...). ``compute`` gives ``dice_global``, ``dice_per_case``, ``miou`` (means over the
    foreground classes), ``cases``, and ``dice_global/<class>``, ``dice_per_case/<class>``, ``iou/<class>`` per
    foreground class (:func:`monai_acs.metrics.dice_global`, :func:`~monai_acs.metrics.dice_per_case`,
    :func:`~monai_acs.metrics.iou`); the metric's own value is ``key`` (default ``dice_global``).

    Args:
        class_names: class names, background first.
        key: the entry that is the metric's value. Default ``"dice_global"``.
        output_transform: maps the engine output to ``(preds, labels)``. Default: the decollated ``pred``/``label``.
        device: accumulation device. Default CPU.

    Examples:
        >>> m = SegmentationMetrics(["background", "a"])
        >>> m.reset()
        >>> m.update(([torch.tensor([[[0, 1], [1, 1]]])], [torch.tensor([[[0, 1], [0, 1]]])]))
        >>> round(m.compute()["dice_global"], 3)
        0.8
    """

    def __init__(
        self,
        class_names: Sequence[str],
        key: str = "dice_global",
        output_transform: Callable = _pairs,
        device: str | torch.device = "cpu",
    ) -> None:
        self.class_names = [str(c) for c in class_names]
        if len(self.class_names) < 2:
            raise ValueError(f"SegmentationMetrics: need background and at least one class, got {class_names}")
        if key not in ("dice_global", "dice_per_case", "miou"):
            raise ValueError(f"SegmentationMetrics: key must be dice_global, dice_per_case or miou, got {key!r}")
        self.key = key
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._preds: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []

    @staticmethod
    def _label_map(x: Any) -> np.ndarray:
        t = torch.as_tensor(x).detach().cpu()
        t = t.argmax(0) if t.shape[0] > 1 else t[0]
        return t.numpy().astype(np.uint8)

    def update(self, output: Any) -> None:
        preds, labels = output
        for p, y in zip(preds, labels):
            self._preds.append(self._label_map(p))
            self._labels.append(self._label_map(y))

    def compute(self) -> dict[str, float]:
        preds, labels = _gather(self._preds), _gather(self._labels)
        if not preds:
            raise RuntimeError("SegmentationMetrics: no case was evaluated")
        n = len(self.class_names)
        values = {"dice_global": _m.dice_global(preds, labels, num_classes=n),
                  "dice_per_case": _m.dice_per_case(preds, labels, num_classes=n),
                  "iou": _m.iou(preds, labels, num_classes=n)}
        result: dict[str, float] = {"cases": float(len(preds))}
        for kind, per_class in values.items():
            for i, name in enumerate(self.class_names[1:], start=1):
                result[f"{kind}/{name}"] = float(per_class[i])
            mean = float(np.nanmean(per_class[1:])) if not np.all(np.isnan(per_class[1:])) else math.nan
            result["miou" if kind == "iou" else kind] = mean
        return result


class BinaryClassificationMetrics(_DetailedMetric):
    """AUC (:func:`monai_acs.metrics.auc`), accuracy at probability 0.5, and the class counts of a binary classifier.

    ``update`` takes ``pred`` probabilities (after a sigmoid) and 0/1 ``label``, one element per case. ``compute``
    gives ``auc`` (the metric's value; ``nan`` when one class is absent), ``accuracy``, ``cases``, ``positives``,
    ``negatives``.

    Args:
        output_transform: maps the engine output to ``(probabilities, labels)``. Default: decollated ``pred``/``label``.
        device: accumulation device. Default CPU.

    Examples:
        >>> m = BinaryClassificationMetrics()
        >>> m.reset()
        >>> m.update(([torch.tensor([0.9]), torch.tensor([0.2])], [torch.tensor([1.0]), torch.tensor([0.0])]))
        >>> m.compute()["auc"], m.compute()["accuracy"]
        (1.0, 1.0)
    """

    key = "auc"

    def __init__(self, output_transform: Callable = _pairs, device: str | torch.device = "cpu") -> None:
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._probs: list[float] = []
        self._labels: list[float] = []

    def update(self, output: Any) -> None:
        probs, labels = output
        for p, y in zip(probs, labels):
            self._probs += torch.as_tensor(p).detach().float().cpu().reshape(-1).tolist()
            self._labels += torch.as_tensor(y).detach().float().cpu().reshape(-1).tolist()

    def compute(self) -> dict[str, float]:
        p, y = np.asarray(_gather(self._probs)), np.asarray(_gather(self._labels))
        if not len(y):
            raise RuntimeError("BinaryClassificationMetrics: no case was evaluated")
        positives = int((y >= 0.5).sum())
        auc = float(_m.auc(p, y)) if 0 < positives < len(y) else math.nan
        return {"auc": auc, "accuracy": float(((p >= 0.5) == (y >= 0.5)).mean()), "cases": float(len(y)),
                "positives": float(positives), "negatives": float(len(y) - positives)}


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

    def completed(self, engine: Engine, name: str) -> None:
        """Put the average sensitivity under ``name``, the sensitivity at each level under ``name/<FPs per image>``,
        and the whole result (curve included) in ``engine.state.metric_details[name]`` (for the report)."""
        engine.state.metrics[name] = self.compute()
        for level, value in self.last_result["sensitivity"].items():
            engine.state.metrics[f"{name}/{float(level):g}"] = float(value)
        details = getattr(engine.state, "metric_details", None)
        if details is None:
            details = engine.state.metric_details = {}
        details[name] = self.last_result


def _lits_counts(pred: Any, label: Any) -> dict[str, int]:
    from .transforms import lits_region_masks

    p, lab = lits_region_masks(pred), lits_region_masks(label)
    if p.shape != lab.shape:
        raise ValueError(f"prediction shape {tuple(p.shape)} differs from label shape {tuple(lab.shape)}")
    counts = {}
    for i, region in enumerate(LITS_REGIONS):
        counts[f"{region}_tp"] = int((p[i] & lab[i]).sum())
        counts[f"{region}_pred"] = int(p[i].sum())
        counts[f"{region}_label"] = int(lab[i].sum())
    return counts


def _dice(tp: float, n_pred: float, n_label: float) -> float:
    return 2.0 * tp / (n_pred + n_label) if n_pred + n_label > 0 else math.nan


def summarize_lits_dice(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Dice global and Dice per case of liver and tumour from per-case voxel counts.

    Dice global pools the voxels of all cases before taking the ratio; Dice per case averages the per-case Dice
    over the cases where the region is present in the label or the prediction (a case where both are empty has no
    Dice and is left out, as in :mod:`monai_acs.metrics`).

    Args:
        rows: one mapping per case with ``<region>_tp``, ``<region>_pred``, ``<region>_label`` voxel counts.

    Returns:
        ``{"cases": n, "liver": {"dice_global", "dice_per_case", "cases_counted"}, "tumour": {...},
        "per_case": [{"case", "liver_dice", "tumour_dice", counts...}]}``.
    """
    per_case = []
    for row in rows:
        item = dict(row)
        for region in LITS_REGIONS:
            item[f"{region}_dice"] = _dice(row[f"{region}_tp"], row[f"{region}_pred"], row[f"{region}_label"])
        per_case.append(item)
    summary: dict[str, Any] = {"cases": len(per_case)}
    for region in LITS_REGIONS:
        tp = sum(r[f"{region}_tp"] for r in per_case)
        n_pred = sum(r[f"{region}_pred"] for r in per_case)
        n_label = sum(r[f"{region}_label"] for r in per_case)
        values = [r[f"{region}_dice"] for r in per_case if not math.isnan(r[f"{region}_dice"])]
        summary[region] = {
            "dice_global": _dice(tp, n_pred, n_label),
            "dice_per_case": float(np.mean(values)) if values else math.nan,
            "cases_counted": len(values),
        }
    summary["per_case"] = per_case
    return summary


def _lits_items(output: Any) -> list[tuple[str | None, Any, Any]]:
    """``[(case, pred, label), ...]`` from a decollated evaluator output; ``case`` from its ``case_name`` key (the
    postprocessing copies the batch's ``case`` there: MONAI keeps batch keys out of the output) or ``case``."""
    items = output if isinstance(output, (list, tuple)) else [output]
    found = []
    for item in items:
        if not isinstance(item, Mapping) or "pred" not in item or "label" not in item:
            keys = sorted(item) if isinstance(item, Mapping) else type(item).__name__
            raise KeyError(f"LitsDiceMetric needs 'pred' and 'label' in the engine output, got {keys}")
        case = item.get("case_name", item.get("case"))
        found.append((case if isinstance(case, str) else None, item["pred"], item["label"]))
    return found


class LitsDiceMetric(_DetailedMetric):
    """The ACS paper's LiTS metrics (Table VI): Dice global and Dice per case of the liver (labels 1 and 2) and the
    tumour (label 2), from per-case voxel counts (:func:`summarize_lits_dice`).

    Attached as one of the evaluator's ``additional_metrics`` (e.g. ``"val_lits"``): its value is the tumour Dice
    global; ``<name>/tumour_dice_global``, ``<name>/tumour_dice_per_case``, ``<name>/liver_dice_global``,
    ``<name>/liver_dice_per_case``, ``<name>/<region>_cases_counted`` and ``<name>/cases`` go into
    ``engine.state.metrics``, and the whole summary with its per-case rows into
    ``engine.state.metric_details[<name>]`` (for :class:`monai_acs.workflows.lits.LitsDiceReport` and
    :class:`monai_acs.workflows.report.MetricsReport`). ``pred`` / ``label``: label maps (1, ...) or the liver /
    tumour masks of :class:`monai_acs.workflows.transforms.LitsRegionsd`; a ``case_name`` key (``CopyItemsd`` of the
    batch's ``case`` in the postprocessing) names the rows.

    Examples:
        >>> m = LitsDiceMetric()
        >>> m.reset()
        >>> m.update([("a", torch.tensor([[[0, 1, 2]]]), torch.tensor([[[0, 2, 2]]]))])  # (case, pred, label)
        >>> r = m.compute()
        >>> r["liver_dice_global"], round(r["tumour_dice_global"], 3)
        (1.0, 0.667)
    """

    key = "tumour_dice_global"

    def __init__(self, output_transform: Callable = _lits_items, device: str | torch.device = "cpu") -> None:
        self.summary: dict[str, Any] | None = None
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._rows: list[dict[str, Any]] = []

    def update(self, output: Any) -> None:
        for case, pred, label in output:
            self._rows.append({"case": case or f"case_{len(self._rows)}", **_lits_counts(pred, label)})

    def compute(self) -> dict[str, Any]:
        rows = _gather(self._rows)
        if not rows:
            raise RuntimeError("LitsDiceMetric: no case was evaluated")
        self.summary = summarize_lits_dice(rows)
        result: dict[str, Any] = {"cases": float(self.summary["cases"])}
        for region in LITS_REGIONS:
            for entry, value in self.summary[region].items():
                result[f"{region}_{entry}"] = float(value)
        return result

    def completed(self, engine: Engine, name: str) -> None:
        super().completed(engine, name)
        details = getattr(engine.state, "metric_details", None)
        if details is None:
            details = engine.state.metric_details = {}
        details[name] = {**self.summary, "epoch": int(engine.state.epoch)}
