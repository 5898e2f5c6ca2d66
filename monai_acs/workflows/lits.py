"""Steps of the LiTS bundle (ACS paper Sec. IV-C): depth-first axes, LiTS Dice, run report, CT volume segmentation.

The LiTS bundle (``bundles/lits_acs``) calls these from its configs:

- :class:`DepthFirstd` turns MONAI's (C, x, y, z) arrays into the paper's (C, z, y, x) and back (invertible, affine
  kept consistent);
- :class:`LitsRegionsd` and :class:`monai_acs.workflows.metrics.LitsDiceMetric` compute the paper's Table VI
  metrics, Dice global and Dice per case of the liver (labels 1 and 2) and of the tumour (label 2);
  :class:`LitsDiceReport` writes them per validation;
- :func:`lits_datalist`, :func:`check_lits_split` fail fast with clear messages;
- the best validation's figures are reported by :class:`monai_acs.workflows.report.MetricsReport` (``kind="lits"``);
- :class:`VolumeReport` is the report handler of the inference evaluator (a MONAI ``SupervisedEvaluator`` with a
  sliding-window inferer, ``Invertd`` / ``SaveImaged`` postprocessing): a CSV of liver and tumour volumes and an
  overlay PNG per input; inputs that fail are skipped by the dataset and reported.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from ..data.lits import load_lits_datalist
from .checkpoints import save_atomic
from .ct_io import input_stem
from .metrics import LITS_REGIONS
from .plots import to_lps, to_lps_spacing, write_overlay_png
from .report import format_lits_table

__all__ = [
    "LitsDiceReport",
    "VolumeReport",
    "check_lits_split",
    "lits_datalist",
]

logger = logging.getLogger(__name__)


def _is_main_process() -> bool:
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or (
        torch.distributed.get_rank() == 0
    )


def write_lits_dice(summary: Mapping[str, Any], out_dir: str | os.PathLike, stem: str = "lits_dice") -> list[Path]:
    """Write ``<stem>.json`` (summary and per-case rows), ``<stem>.csv`` (the four figures) and
    ``<stem>_per_case.csv`` into ``out_dir``, each atomically.

    Returns:
        The written paths.
    """
    out = Path(out_dir)
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["region", "dice_global", "dice_per_case", "cases_counted", "cases"])
    for region in ("tumour", "liver"):
        r = summary[region]
        writer.writerow([region, f"{r['dice_global']:.6f}", f"{r['dice_per_case']:.6f}", r["cases_counted"],
                         summary["cases"]])
    cases = io.StringIO()
    fields = ["case"] + [f"{reg}_{k}" for reg in LITS_REGIONS for k in ("dice", "tp", "pred", "label")]
    case_writer = csv.DictWriter(cases, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    case_writer.writeheader()
    for row in summary["per_case"]:
        case_writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    paths = [
        save_atomic(json.dumps(summary, indent=2, default=float) + "\n", out / f"{stem}.json"),
        save_atomic(table.getvalue(), out / f"{stem}.csv"),
        save_atomic(cases.getvalue(), out / f"{stem}_per_case.csv"),
    ]
    return paths


class LitsDiceReport:
    """ignite handler for a MONAI evaluator: write the LiTS Dice that
    :class:`~monai_acs.workflows.metrics.LitsDiceMetric` computed (read from ``engine.state.metric_details[metric]``,
    nothing is recomputed) as CSV/JSON files, and optionally print the Table VI layout. Only rank 0 writes under
    ``torch.distributed``.

    Args:
        metric: the name the metric is attached under. Default ``"val_lits"``.
        output_dir: folder for the files; None writes nothing. Default None.
        per_epoch: name the files ``epoch_<NNNN>`` after the evaluator's epoch (the trainer's epoch under
            ``ValidationHandler``), so a training run keeps every validation; otherwise ``lits_dice``. Default False.
        print_results: print the table at the end of the pass. Default False.
    """

    def __init__(
        self, metric: str = "val_lits", output_dir: str | None = None, per_epoch: bool = False,
        print_results: bool = False,
    ) -> None:
        self.metric, self.output_dir, self.per_epoch, self.print_results = metric, output_dir, per_epoch, print_results

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _write(self, engine: Engine) -> None:
        summary = (getattr(engine.state, "metric_details", None) or {}).get(self.metric)
        if summary is None:
            raise KeyError(f"LitsDiceReport: no LitsDiceMetric attached as {self.metric!r} to this evaluator")
        if not _is_main_process():
            return
        logger.info(
            "LiTS Dice over %d cases: lesion DG %.4f DPC %.4f | liver DG %.4f DPC %.4f", summary["cases"],
            summary["tumour"]["dice_global"], summary["tumour"]["dice_per_case"], summary["liver"]["dice_global"],
            summary["liver"]["dice_per_case"],
        )
        written = []
        if self.output_dir is not None:
            stem = f"epoch_{engine.state.epoch:04d}" if self.per_epoch else "lits_dice"
            written = write_lits_dice(summary, self.output_dir, stem)
        if self.print_results:
            print("\n" + format_lits_table(summary), flush=True)
            if written:
                print(f"(written to {', '.join(str(p) for p in written)})", flush=True)


# ------------------------------------------------------------------------------------------------- bundle steps


def lits_datalist(
    dataset_dir: str | os.PathLike, split: str = "training", val_fraction: float = 0.2, seed: int = 0
) -> list[dict[str, str]]:
    """One split of LiTS for the bundle: :func:`monai_acs.data.lits.load_lits_datalist` plus a ``case`` name.

    Raises at once (before any network is built) when ``dataset_dir`` is missing or holds no LiTS case, with the
    expected layout and the demo-data command in the message.

    Returns:
        ``[{"image", "label", "case"}, ...]``.

    Raises:
        FileNotFoundError: no data (see :func:`monai_acs.data.lits.find_lits_cases`).
        ValueError: the split is empty.
    """
    cases = load_lits_datalist(dataset_dir, split, val_fraction=val_fraction, seed=seed)
    if not cases:
        raise ValueError(f"LiTS dataset_dir '{dataset_dir}': the {split!r} split is empty")
    return [{**c, "case": input_stem(str(c["image"]))} for c in cases]


def check_lits_split(
    training: Sequence[Mapping], validation: Sequence[Mapping], batch_size: int | None = None, num_samples: int = 1
) -> int:
    """Log the split sizes; raise if either is empty (validation selects the best checkpoint) or if a training batch
    would hold a single crop (DeepLab's ASPP pooling branch has a BatchNorm over a 1 x 1 x 1 map, which cannot train
    on one sample).

    Args:
        training: the training cases.
        validation: the validation cases.
        batch_size: volumes per batch; None skips the batch check. Default None.
        num_samples: crops per volume. Default 1.

    Returns:
        The number of training cases.
    """
    if not training or not validation:
        raise ValueError(
            f"LiTS training needs training and validation cases, got {len(training)} and {len(validation)}: use at "
            "least 2 cases and --val_fraction > 0 (or a datalist JSON with both keys)"
        )
    if batch_size is not None:
        last = len(training) % batch_size or batch_size
        if min(batch_size, len(training), last) * num_samples < 2:
            raise ValueError(
                f"a training batch would hold 1 crop ({len(training)} training cases, batch_size {batch_size}, "
                f"num_samples {num_samples}); DeepLab's BatchNorm needs at least 2: use --num_samples 2 or more"
            )
    logger.info("LiTS: %d training and %d validation cases", len(training), len(validation))
    print(f"LiTS: {len(training)} training and {len(validation)} validation cases", flush=True)
    return len(training)


# ------------------------------------------------------------------------------------------- CT volume inference


_CSV_FIELDS = [
    "input", "status", "output", "overlay", "shape", "spacing_mm", "voxel_ml", "liver_voxels", "tumour_voxels",
    "liver_ml", "tumour_ml", "tumour_components",
]


class VolumeReport:
    """ignite handler of the LiTS inference evaluator: liver and tumour volumes per input, overlays, ``volumes.csv``.

    The evaluator (MONAI ``SupervisedEvaluator``, sliding-window inferer) runs the network on each input; its
    postprocessing turns the logits into a label map (``AsDiscreted``), keeps the network-space map as ``pred_net``
    (``CopyItemsd``), maps ``pred`` back to the input's voxel grid (``Invertd``), drops its channel (``SqueezeDimd``)
    and writes it (``SaveImaged`` with the ``ITKWriter``, which keeps every axis: a one-slice CT gives a one-slice
    mask; it records the file in ``pred.meta["saved_to"]``). After every iteration this handler adds a row to
    ``<output_dir>/<csv_name>`` (rewritten each time, so it is complete up to the input in progress): the written
    file, liver (labels 1 and 2, tumours included) and tumour volumes in mL, voxel counts, tumour components
    (26-connected), and an overlay PNG ``<name>_overlay.png`` (axial, coronal, sagittal slices through the liver, see
    :func:`write_overlay_png`). Inputs the dataset skipped (:class:`monai_acs.workflows.datasets.SkipFailedDataset`)
    get a row with status ``error: <reason>``. At the end it prints how many inputs were segmented, and raises if
    none was.

    Args:
        output_dir: the output folder.
        dataset: the evaluator's dataset (for the number of inputs and the skipped ones).
        axcodes: the orientation the preprocessing reorients to, before :class:`DepthFirstd`. Default ``"LPS"``.
        csv_name: name of the volume table. Default ``"volumes.csv"``.
        overlay: write the PNGs. Default True.
    """

    def __init__(
        self, output_dir: str, dataset: Any, axcodes: str = "LPS", csv_name: str = "volumes.csv", overlay: bool = True
    ) -> None:
        self.output_dir, self.dataset, self.axcodes = Path(output_dir), dataset, axcodes
        self.csv_path = self.output_dir / csv_name
        self.overlay = overlay
        self.rows: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._add)
        engine.add_event_handler(Events.COMPLETED, self._finish)

    def _reset(self, engine: Engine) -> None:
        self.rows = []

    def _failures(self) -> list[tuple[Any, str]]:
        return list(getattr(self.dataset, "failures", []))

    def _add(self, engine: Engine) -> None:
        total = len(getattr(self.dataset, "data", None) or [])
        for item in engine.state.output:
            row = self._row(item)
            self.rows.append(row)
            print(f"[{len(self.rows) + len(self._failures())}/{total}] {row['input']}: liver {row['liver_ml']} mL, "
                  f"tumour {row['tumour_ml']} mL -> {row['output']}", flush=True)
        self._write_csv()

    def _row(self, item: Mapping[str, Any]) -> dict[str, Any]:
        from scipy import ndimage

        pred, pred_net, image = item["pred"], item["pred_net"], item["image"]
        path = str(pred.meta.get("filename_or_obj", ""))
        label = np.asarray(pred.detach().cpu()).astype(np.uint8)
        label = label[0] if label.ndim == 4 else label  # channel squeezed before SaveImaged (every spatial axis kept)
        label_net = np.asarray(pred_net[0].detach().cpu()).astype(np.uint8)
        affine = np.asarray(pred.affine, dtype=np.float64)
        voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
        liver_voxels, tumour_voxels = int((label >= 1).sum()), int((label == 2).sum())
        row = {
            "input": path,
            "status": "ok",
            "output": str(pred.meta.get("saved_to", "")),
            "overlay": "",
            "shape": "x".join(str(s) for s in label.shape),
            "spacing_mm": "x".join(f"{s:.4g}" for s in np.sqrt((affine[:3, :3] ** 2).sum(0))),
            "voxel_ml": f"{voxel_ml:.6g}",
            "liver_voxels": liver_voxels,
            "tumour_voxels": tumour_voxels,
            "liver_ml": f"{liver_voxels * voxel_ml:.3f}",
            "tumour_ml": f"{tumour_voxels * voxel_ml:.3f}",
            "tumour_components": int(ndimage.label(label_net == 2, structure=np.ones((3, 3, 3)))[1]),
        }
        if self.overlay:
            spacing_zyx = [float(v) for v in image.pixdim]  # DepthFirstd keeps the affine in step with the axes
            display = to_lps(np.asarray(image[0].detach().cpu()), self.axcodes)
            title = f"{Path(path).name}: liver {row['liver_ml']} mL, tumour {row['tumour_ml']} mL"
            row["overlay"] = write_overlay_png(display, to_lps(label_net, self.axcodes),
                                               to_lps_spacing(spacing_zyx, self.axcodes),
                                               self.output_dir / f"{input_stem(path)}_overlay.png", title)
        return row

    def _all_rows(self) -> list[dict[str, Any]]:
        failed = [{"input": str(item.get("image", item) if isinstance(item, Mapping) else item),
                   "status": f"error: {reason}"} for item, reason in self._failures()]
        return self.rows + failed

    def _write_csv(self) -> None:
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=_CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self._all_rows())
        save_atomic(text.getvalue(), self.csv_path)

    def _finish(self, engine: Engine) -> None:
        self._write_csv()
        failed = self._failures()
        print(f"segmented {len(self.rows)} of {len(self.rows) + len(failed)} inputs; volumes in {self.csv_path}"
              + (f"; {len(failed)} skipped (see the status column)" if failed else ""), flush=True)
        if not self.rows:
            raise RuntimeError(f"every input failed; see {self.csv_path}")


