"""One report handler for every bundle: ``results.json`` / ``results.md`` built from ``engine.state.metrics``.

The figures come from the metrics attached to the evaluator (:mod:`monai_acs.workflows.metrics`, MONAI's); nothing
here runs a network. Attached to an evaluator, :class:`MetricsReport` writes the report when the evaluation completes
(``evaluate.json``). Attached to the validation evaluator of a training run with a ``key_metric``, it keeps the
metrics of the best validation (the epoch whose weights ``model_best.pt`` holds; saved beside it, so a resumed run
reports correctly) and :meth:`MetricsReport.write_best` writes that report once training is over.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from .plots import plot_froc
from .checkpoints import save_atomic

__all__ = ["MetricsReport", "classification_results", "format_classification_table", "format_lits_table",
           "format_table", "lits_results", "segmentation_results", "write_report"]


def _pct(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def segmentation_results(metrics: Mapping[str, Any], name: str, class_names: Sequence[str]) -> dict[str, Any]:
    """The per-class table of a :class:`~monai_acs.workflows.metrics.SegmentationMetrics` attached as ``name``:
    ``{"classes": {class: {"dice_global", "dice_per_case", "iou"}}, "mean": {...}, "cases": n}``."""
    classes = {c: {k: float(metrics[f"{name}/{k}/{c}"]) for k in ("dice_global", "dice_per_case", "iou")}
               for c in list(class_names)[1:]}
    mean = {k: float(metrics[f"{name}/{k}"]) for k in ("dice_global", "dice_per_case", "miou")}
    return {"classes": classes, "mean": mean, "cases": int(metrics[f"{name}/cases"])}


def classification_results(metrics: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The figures of a :class:`~monai_acs.workflows.metrics.BinaryClassificationMetrics` attached as ``name``:
    ``{"auc", "accuracy", "cases", "malignant", "benign"}`` (positives are malignant)."""
    return {"auc": float(metrics[name]), "accuracy": float(metrics[f"{name}/accuracy"]),
            "cases": int(metrics[f"{name}/cases"]), "malignant": int(metrics[f"{name}/positives"]),
            "benign": int(metrics[f"{name}/negatives"])}


def lits_results(metrics: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The LiTS Table VI figures of a :class:`~monai_acs.workflows.metrics.LitsDiceMetric` attached as ``name``:
    ``{"tumour": {"dice_global", "dice_per_case", "cases_counted"}, "liver": {...}, "cases": n}``."""
    regions = {region: {key: float(metrics[f"{name}/{region}_{key}"]) for key in ("dice_global", "dice_per_case")}
               for region in ("tumour", "liver")}
    for region in regions:
        regions[region]["cases_counted"] = int(metrics[f"{name}/{region}_cases_counted"])
    return {**regions, "cases": int(metrics[f"{name}/cases"])}


def format_table(results: Mapping[str, Any]) -> str:
    """Markdown table of :func:`segmentation_results` (percent)."""
    lines = ["| class | Dice (global) | Dice (per case) | IoU |", "|---|---|---|---|"]
    for name, row in results["classes"].items():
        lines.append(f"| {name} | {_pct(row['dice_global'])} | {_pct(row['dice_per_case'])} | {_pct(row['iou'])} |")
    mean = results["mean"]
    lines.append(f"| **mean (foreground)** | {_pct(mean['dice_global'])} | {_pct(mean['dice_per_case'])} | "
                 f"{_pct(mean['miou'])} |")
    return "\n".join(lines)


def format_classification_table(results: Mapping[str, Any]) -> str:
    """Markdown table of :func:`classification_results` (percent)."""
    row = (f"| {results['cases']} ({results['benign']} / {results['malignant']}) | {_pct(results['auc'])} | "
           f"{_pct(results['accuracy'])} |")
    return f"| cases (benign / malignant) | AUC | accuracy (p >= 0.5) |\n|---|---|---|\n{row}"


def format_lits_table(summary: Mapping[str, Any]) -> str:
    """Markdown table of :func:`monai_acs.workflows.metrics.summarize_lits_dice` in the layout of the ACS paper's Table VI (percent)."""
    les, liv = summary["tumour"], summary["liver"]
    return "\n".join([
        "| | Lesion DG | Lesion DPC | Liver DG | Liver DPC |",
        "|---|---|---|---|---|",
        f"| this model ({summary['cases']} cases) | {_pct(les['dice_global'])} | {_pct(les['dice_per_case'])} | "
        f"{_pct(liv['dice_global'])} | {_pct(liv['dice_per_case'])} |",
    ])


def write_report(
    results: Mapping[str, Any],
    out_dir: str,
    title: str,
    extra: Mapping[str, Any] | None = None,
    table: Callable[[Mapping[str, Any]], str] | None = None,
) -> dict[str, Any]:
    """Print the result table and write ``results.json`` and ``results.md`` into ``out_dir`` (atomically).

    ``table`` formats ``results`` as Markdown (default :func:`format_table`, the per-class segmentation table).
    """
    report = {**results, **(extra or {})}
    text = f"## {title}\n\n{(table or format_table)(results)}\n"
    if extra:
        text += "\n" + "\n".join(f"- {k}: {v}" for k, v in extra.items()) + "\n"
    save_atomic(json.dumps(report, indent=2, default=str) + "\n", Path(out_dir) / "results.json")
    save_atomic(text, Path(out_dir) / "results.md")
    print("\n" + text + f"\n(results written to {out_dir}/results.json and results.md)", flush=True)
    return report


_KINDS = ("segmentation", "classification", "froc", "lits")
_DETAILS = "_details"


def _plain(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else float(value)


#: The best validation's metrics so far, beside ``model_best.pt``.
BEST_VALIDATION = "best_validation.json"


class MetricsReport:
    """Write the bundle's report (``results.json``, ``results.md``, the printed table) from ``engine.state.metrics``.

    Args:
        output_dir: where the report goes (the run folder, or ``evaluate.json``'s ``output_dir``).
        kind: ``"segmentation"`` (per-class Dice global / per case / IoU table), ``"classification"`` (AUC table) or
            ``"froc"`` (FROC table, curve and plot: :func:`write_froc_report`) or ``"lits"`` (Table VI row).
        metric: the name under which the evaluator's :class:`~monai_acs.workflows.metrics.SegmentationMetrics`,
            :class:`~monai_acs.workflows.metrics.BinaryClassificationMetrics` or ``FROCMetric`` is attached, or for
            ``"lits"`` its :class:`~monai_acs.workflows.metrics.LitsDiceMetric` (``"val_lits"``).
        title: the report's heading.
        class_names: class names, background first (segmentation). Default None.
        extra: entries added to the report (settings, data description, checkpoint, ...). Default None.
        key_metric: in a training run, the metric that selects the best validation (as ``RunCheckpointer``'s);
            None reports the last evaluation (``evaluate.json``). Default None.
        mode: ``"max"`` or ``"min"`` for ``key_metric``. Default ``"max"``.
        also: metrics of the best validation added to the report as ``{metric name: report key}``. Default None.

    Raises (when writing):
        RuntimeError: training ended without a validation (``val_interval`` > ``epochs``).
    """

    def __init__(
        self,
        output_dir: str,
        kind: str,
        metric: str,
        title: str,
        class_names: Sequence[str] | None = None,
        extra: Mapping[str, Any] | None = None,
        key_metric: str | None = None,
        mode: str = "max",
        also: Mapping[str, str] | None = None,
    ) -> None:
        if kind not in _KINDS:
            raise ValueError(f"MetricsReport: kind must be one of {_KINDS}, got {kind!r}")
        if mode not in ("max", "min"):
            raise ValueError(f"MetricsReport: mode must be 'max' or 'min', got {mode!r}")
        self.output_dir, self.kind, self.metric, self.title = output_dir, kind, metric, title
        self.class_names, self.extra = list(class_names or []), dict(extra or {})
        self.key_metric, self.mode, self.also = key_metric, mode, dict(also or {})
        self.best: dict[str, Any] | None = None
        self.best_epoch = -1
        self.report: dict[str, Any] | None = None

    def attach(self, engine: Engine) -> None:
        """Attach to an evaluator: record (or, without ``key_metric``, write) each evaluation."""
        engine.add_event_handler(Events.COMPLETED, self._evaluated)

    def _better(self, value: float) -> bool:
        if self.best is None:
            return not math.isnan(value)
        best = self.best[self.key_metric]
        return value > best if self.mode == "max" else value < best

    def _evaluated(self, engine: Engine) -> None:
        metrics = dict(engine.state.metrics)
        details = getattr(engine.state, "metric_details", None) or {}
        if self.metric in details:  # e.g. the FROC curve
            metrics[_DETAILS] = details[self.metric]
        if self.key_metric is None:
            self.write(metrics)
            return
        if self.key_metric not in metrics:
            raise KeyError(f"MetricsReport: key metric {self.key_metric!r} not among {sorted(metrics)}")
        self._load_best()
        if self._better(float(metrics[self.key_metric])):
            self.best, self.best_epoch = metrics, int(engine.state.epoch)
            # kept beside model_best.pt, so that a resumed run reports the validation of the weights it publishes
            if self._writes():
                save_atomic(json.dumps({"epoch": self.best_epoch, "metrics": metrics}, default=_plain) + "\n",
                            self._best_file)

    @property
    def _best_file(self) -> Path:
        return Path(self.output_dir) / BEST_VALIDATION

    def _load_best(self) -> None:
        if self.best is None and self._best_file.is_file():  # a resumed run: its best validation so far
            saved = json.loads(self._best_file.read_text())
            self.best, self.best_epoch = saved["metrics"], int(saved["epoch"])

    def write_best(self) -> dict[str, Any] | None:
        """The run step after training: write the report of the best validation (the weights of ``model_best.pt``,
        also across a resume) and return it (None on ranks > 0)."""
        self._load_best()
        if self.best is None:
            raise RuntimeError(
                "MetricsReport: training ended without a validation giving a defined "
                f"{self.key_metric} (val_interval <= epochs? both classes / a non-empty mask in the validation set?)"
            )
        return self.write(self.best, {"best_epoch": self.best_epoch})

    @staticmethod
    def _writes() -> bool:
        # under torch.distributed the metrics are gathered on every rank; only global rank 0 writes
        dist = torch.distributed
        return not (dist.is_available() and dist.is_initialized() and dist.get_rank() > 0)

    def write(self, metrics: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """Write the report of ``metrics`` (an ``engine.state.metrics``) and return it (None on ranks > 0)."""
        if not self._writes():
            return None
        if self.kind == "froc":
            result = dict(metrics[_DETAILS])
            result["sensitivity"] = {float(k): float(v) for k, v in result["sensitivity"].items()}
            self.report = write_froc_report(result, self.output_dir, self.title, {**self.extra, **(extra or {})})
            return self.report
        if self.kind == "segmentation":
            results, table = segmentation_results(metrics, self.metric, self.class_names), format_table
        elif self.kind == "lits":
            results, table = lits_results(metrics, self.metric), format_lits_table
        else:
            results, table = classification_results(metrics, self.metric), format_classification_table
        added = {key: float(metrics[name]) for name, key in self.also.items() if name in metrics}
        self.report = write_report({**results, **added}, self.output_dir, self.title,
                                   {**self.extra, **(extra or {})}, table)
        return self.report


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
    plot_froc(result, out / "froc.png", title)
    header = " | ".join(f"{k:g}" for k in sens)
    values = " | ".join(f"{100 * v:.2f}" for v in sens.values())
    print(
        f"{title} ({summary['num_images']} images, {summary['num_lesions']} lesions, IoU >= 0.5)\n"
        f"sensitivity (%) at FPs/image: {header} | avg\n{' ' * 29}{values} | "
        f"{100 * summary['average_sensitivity']:.2f}\nwritten to {out}",
        flush=True,
    )
    return summary

