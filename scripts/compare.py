"""Run one bundle under several operator x pretraining settings and tabulate the results (like ACS paper Table IV).

Each setting is a real ``python -m monai.bundle run training`` of the bundle's own train.json with overrides, so the
comparison exercises exactly what users run. Results are read from each run's ``results.json``.

Example (the committed table of the proof-of-concept bundle)::

    python scripts/compare.py bundles/synthetic_poc_acs --out bundles/synthetic_poc_acs/docs/compare

Settings are ``operator:pretraining`` with pretraining ``p`` (2D-pretrained) or ``r`` (random). ``i3d:r`` is the
"3D r." row: the same 3D network (K x K x K kernels) without 2D pretraining, i.e. a randomly initialised Conv3d
network; ``i3d:p`` is "3D p." (I3D-inflated 2D weights).

The table's metrics follow the bundle's ``results.json``: feature mAUC / Dice / mIoU (proof of concept), Dice global
/ Dice per case / IoU (segmentation, e.g. ``bundles/lidc_seg_acs``) or AUC / accuracy (classification,
``bundles/lidc_cls_acs``). ``--keep_going`` records a failed setting (e.g. "p." without the ImageNet file offline) as
a row instead of stopping.

Data-scale experiment (ACS paper Fig. 4)::

    python scripts/compare.py bundles/lidc_cls_acs --settings acs:r,conv2p5d:r,i3d:r --fractions 0.25,0.5,0.75,1.0

trains every setting on each fraction of the training set (the bundle's ``train_fraction`` key) with the epochs (and
``lr_milestones`` and ``val_interval``, if the bundle has those keys) divided by the fraction, so that every run makes
about the same number of iterations and validates after about the same ones, and writes ``fractions.md`` / ``fractions.csv`` / ``fractions.png`` (metric vs data fraction, one line
per setting) beside the table of the full-data runs.
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import fire

DEFAULT_SETTINGS = ("conv2p5d:r", "conv2p5d:p", "i3d:r", "i3d:p", "acs:r", "acs:p", "mean_acs:p", "soft_acs:p")
LABELS = {"conv2p5d": "2.5D", "i3d": "3D", "acs": "ACS", "mean_acs": "Mean-ACS", "soft_acs": "Soft-ACS",
          "a3d": "A3D", "p3d": "P3D", "tsm": "TSM"}


def _parse(setting: str) -> tuple[str, bool]:
    operator, _, pre = setting.partition(":")
    if pre not in ("p", "r"):
        raise ValueError(f"setting {setting!r} must look like 'acs:p' or 'acs:r'")
    return operator, pre == "p"


def _label(operator: str, pretrained: bool, p_mark: str = "p.") -> str:
    name = LABELS.get(operator, operator)
    if operator == "i3d":
        return f"3D {p_mark} (I3D)" if pretrained else "3D r."
    return f"{name} {p_mark if pretrained else 'r.'}"


def _cli_value(value: Any) -> str:
    """A value as ``python -m monai.bundle`` (fire) reads it back: ``True``/``False`` for booleans (fire keeps
    ``true``/``false`` as strings, which are truthy in a config), JSON for the rest."""
    if isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) else json.dumps(value)


def _overrides_to_args(overrides: dict[str, Any] | None) -> list[str]:
    args = []
    for key, value in (overrides or {}).items():
        args += [f"--{key}", _cli_value(value)]
    return args


def run_setting(
    bundle: Path,
    operator: str,
    pretrained: bool,
    run_name: str,
    overrides: dict | None,
    collect_only: bool = False,
    keep_going: bool = False,
) -> dict | None:
    """Train one setting through the real bundle CLI and return its results.json plus wall time.

    A setting whose run folder already holds ``results.json`` (same tag) is not trained again, so an interrupted
    comparison continues where it stopped; with ``collect_only`` missing settings are skipped (None). With
    ``keep_going`` a failed run returns ``{"failed": <last error line>}`` instead of raising.
    """
    runs_dir = Path((overrides or {}).get("runs_dir", bundle / "runs"))
    finished = runs_dir / run_name / "results.json"
    if finished.is_file():
        results = json.loads(finished.read_text())
        timing = runs_dir / run_name / "compare_seconds.txt"
        results["seconds"] = float(timing.read_text()) if timing.is_file() else None
        print(f"reusing {finished}", flush=True)
        return results
    if collect_only:
        print(f"skipping {operator}:{'p' if pretrained else 'r'}: {finished} does not exist", flush=True)
        return None
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "training",
        "--config_file", str(bundle / "configs" / "train.json"), "--bundle_root", str(bundle),
        "--operator", operator, "--pretrained", _cli_value(bool(pretrained)),
        "--run_name", run_name, "--publish", _cli_value(False),
    ] + _overrides_to_args(overrides)
    print("$ " + " ".join(cmd), flush=True)
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.time() - start
    if proc.returncode != 0:
        lines = (proc.stdout + proc.stderr).splitlines()
        if keep_going:
            reason = next((ln for ln in reversed(lines) if "Error" in ln), lines[-1] if lines else "unknown error")
            print(f"setting {operator}:{'p' if pretrained else 'r'} failed (kept going): {reason}", flush=True)
            return {"failed": reason.strip(), "seconds": round(seconds, 1)}
        tail = "\n".join(lines[-30:])
        raise RuntimeError(f"setting {operator}:{'p' if pretrained else 'r'} failed:\n{tail}")
    results = json.loads(finished.read_text())
    results["seconds"] = round(seconds, 1)
    (runs_dir / run_name / "compare_seconds.txt").write_text(f"{seconds:.1f}\n")
    return results


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} s"


#: The metric columns of each kind of results.json: (row key, table header).
METRIC_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "poc": (("feature_mauc", "Feature mAUC w/o training"), ("dice", "Dice"), ("miou", "mIoU")),
    "segmentation": (("dice", "Dice global"), ("dice_per_case", "Dice per case"), ("miou", "IoU")),
    "classification": (("auc", "AUC"), ("accuracy", "Accuracy")),
}


def _result_kind(result: dict) -> str:
    if "auc" in result:
        return "classification"
    return "poc" if "feature_mauc_before_3d_training" in result else "segmentation"


def _metrics_of(result: dict) -> dict[str, float | None]:
    """The table's metric values of one results.json (fractions of 1)."""
    kind = _result_kind(result)
    if kind == "classification":
        return {"auc": result["auc"], "accuracy": result.get("accuracy")}
    mean = result["mean"]
    values = {"dice": mean["dice_global"], "miou": mean["miou"]}
    if kind == "poc":
        return {"feature_mauc": result.get("feature_mauc_before_3d_training"), **values}
    return {**values, "dice_per_case": mean.get("dice_per_case")}


def _pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def write_outputs(rows: list[dict], out: Path, title: str, kind: str = "poc", note: str | None = None) -> None:
    """Markdown + CSV table and a bar chart PNG."""
    out.mkdir(parents=True, exist_ok=True)
    columns = METRIC_COLUMNS[kind]
    keys = [k for k, _ in columns]
    fields = ["model", "operator", "pretrained", *keys, "size_mb", "parameters", "seconds"]
    if any("failed" in row for row in rows):
        fields.append("failed")
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows({k: row.get(k) for k in fields} for row in rows)
    lines = [f"## {title}", "", "| Model | " + " | ".join(h for _, h in columns) + " | Size | Train time |",
             "|---|" + "---|" * (len(columns) + 2)]
    for row in rows:
        if "failed" in row:
            lines.append(f"| {row['model']} | not run: {row['failed']} |" + " |" * (len(columns) + 1))
            continue
        lines.append(f"| {row['model']} | " + " | ".join(_pct(row[k]) for k in keys) + f" | {row['size_mb']:.2f} MB | "
                     f"{_seconds(row['seconds'])} |")
    if note:
        lines += ["", note]
    (out / "results.md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows)), 4))
    xs = range(len(rows))
    width = 0.8 / len(columns)
    for i, (key, name) in enumerate(columns):
        offset = (i - (len(columns) - 1) / 2) * width
        ax.bar([x + offset for x in xs], [100 * (r.get(key) or 0) for r in rows], width,
               label=name.replace(" w/o training", ""))
    ax.set_xticks(list(xs))
    ax.set_xticklabels([r["model"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(title.replace(" (", "\n("), fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "results.png", dpi=120)
    plt.close(fig)


def compare(
    bundle: str = "bundles/synthetic_poc_acs",
    settings: str | tuple | list = DEFAULT_SETTINGS,
    out: str | None = None,
    overrides: dict | None = None,
    tag: str | None = None,
    collect_only: bool = False,
    keep_going: bool = False,
    fractions: str | float | tuple | list | None = None,
    data: str = "generated data",
    pretrained_note: str | None = None,
) -> str:
    """Train ``bundle`` once per setting and write results.md / results.csv / results.png.

    Args:
        bundle: bundle folder. Default ``bundles/synthetic_poc_acs``.
        settings: ``operator:p|r`` list (comma-separated string or list). Default: 2.5D, 3D, ACS r./p. and
            Mean-/Soft-ACS p. (``a3d:p`` works too: A3D keeps the depth, see the bundle docs).
        out: output folder. Default ``<bundle>/docs/compare``.
        overrides: extra bundle overrides for every run, e.g. ``'{"epochs": 2, "n_3d_train": 4}'``.
        tag: run-name prefix. Default ``compare_<UTC timestamp>``. Reusing a tag continues that comparison.
        collect_only: only tabulate the settings of ``tag`` that already finished. Default False.
        keep_going: record a failed setting as a "not run" row and go on. Default False (raise).
        fractions: training-data fractions for the data-scale experiment (ACS paper Fig. 4), e.g.
            ``0.25,0.5,0.75,1.0``; needs a bundle with a ``train_fraction`` key. Epochs (and ``lr_milestones``,
            ``val_interval``) are divided by the fraction. Default None (full data only).
        data: what the runs were trained and measured on, for the table's title. Default ``"generated data"``.
        pretrained_note: where "p." is not the paper's pretraining (e.g. the LIDC bundles with ``weights_2d`` from
            ``scripts/pretrain_lidc_2d.py`` instead of ImageNet): the "p." rows are labelled "p.*" and this note is
            written under the table. Default None.

    Returns:
        Path of the Markdown table.
    """
    bundle_path = Path(bundle)
    if isinstance(settings, str):
        settings = [s.strip() for s in settings.split(",") if s.strip()]
    parsed = [_parse(s) for s in settings]
    tag = tag or "compare_" + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    scales = _parse_fractions(fractions)
    scaled = {f: _scaled_overrides(bundle_path, overrides, f) for f in scales if f != 1.0}
    rows, fraction_rows, kind = [], [], None
    p_mark = "p.*" if pretrained_note else "p."
    for operator, pretrained in parsed:
        name = f"{operator}_{'p' if pretrained else 'r'}"
        for fraction in sorted(scales, reverse=True):
            run_name = f"{tag}/{name}" if fraction == 1.0 else f"{tag}/{name}_f{fraction:g}"
            result = run_setting(bundle_path, operator, pretrained, run_name, scaled.get(fraction, overrides),
                                 collect_only, keep_going)
            if result is None:
                continue
            row = {"model": _label(operator, pretrained, p_mark), "operator": operator, "pretrained": pretrained,
                   "fraction": fraction, "seconds": result["seconds"]}
            if "failed" in result:
                row["failed"] = result["failed"]
            else:
                kind = kind or _result_kind(result)
                parameters = int(result["parameters"])
                row.update(_metrics_of(result), size_mb=parameters * 4 / 1e6, parameters=parameters,
                           training_cases=result.get("training_cases"), epochs=result.get("epochs"))
                print(f"{row['model']} (data {fraction:g}): " + ", ".join(
                    f"{k} {_pct(v)}" for k, v in _metrics_of(result).items()), flush=True)
            (rows if fraction == 1.0 else fraction_rows).append(row)
            if fraction == 1.0 and scales != [1.0]:
                fraction_rows.append(row)
    kind = kind or "poc"
    out_path = Path(out) if out else bundle_path / "docs" / "compare"
    title = f"{bundle_path.name}: measured on {data} ({len(rows)} settings, run tag {tag})"
    write_outputs(rows, out_path, title, kind, f"\\* {pretrained_note}" if pretrained_note else None)
    if scales != [1.0]:
        write_fraction_outputs(fraction_rows, out_path, f"{bundle_path.name}: metric vs training data (tag {tag})",
                               kind)
    (out_path / "command.txt").write_text(
        "python scripts/compare.py " + shlex.join(sys.argv[1:]) + f"\n# cpu threads: {os.cpu_count()}\n"
    )
    print((out_path / "results.md").read_text())
    return str(out_path / "results.md")


def _parse_fractions(fractions: str | float | tuple | list | None) -> list[float]:
    if fractions is None:
        return [1.0]
    if isinstance(fractions, str):
        fractions = [f for f in fractions.split(",") if f.strip()]
    elif isinstance(fractions, (int, float)):
        fractions = [fractions]
    values = sorted({float(f) for f in fractions})
    if not values or any(not 0.0 < f <= 1.0 for f in values):
        raise ValueError(f"fractions must lie in (0, 1], got {fractions}")
    return values


def _scaled_overrides(bundle: Path, overrides: dict | None, fraction: float) -> dict:
    """Overrides of one data fraction: ``train_fraction``, and the epochs and LR milestones divided by it."""
    config = json.loads((bundle / "configs" / "train.json").read_text())
    if "train_fraction" not in config:
        raise ValueError(f"--fractions needs a bundle with a 'train_fraction' key; {bundle} has none")
    merged = {**config, **(overrides or {})}
    epochs = merged.get("epochs")
    if not isinstance(epochs, int):
        raise TypeError(f"--fractions: cannot scale epochs {epochs!r}; pass --overrides '{{\"epochs\": N}}'")
    scaled = {**(overrides or {}), "train_fraction": fraction, "epochs": max(1, round(epochs / fraction))}
    if isinstance(merged.get("lr_milestones"), list):
        scaled["lr_milestones"] = [max(1, round(m / fraction)) for m in merged["lr_milestones"]]
    if isinstance(merged.get("val_interval"), int):  # validate after about the same numbers of iterations
        scaled["val_interval"] = max(1, round(merged["val_interval"] / fraction))
    return scaled


def write_fraction_outputs(rows: list[dict], out: Path, title: str, kind: str) -> None:
    """fractions.md / fractions.csv and a line plot of the first metric vs the training data fraction."""
    out.mkdir(parents=True, exist_ok=True)
    key, header = METRIC_COLUMNS[kind][0] if kind != "poc" else ("dice", "Dice")
    fields = ["model", "operator", "pretrained", "fraction", "training_cases", "epochs", key, "seconds", "failed"]
    with open(out / "fractions.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows({k: row.get(k) for k in fields} for row in rows)
    models = list(dict.fromkeys(row["model"] for row in rows))
    fracs = sorted({row["fraction"] for row in rows})
    cell = {(row["model"], row["fraction"]): row for row in rows}

    def show(row: dict | None) -> str:
        if row is None:
            return "-"
        if "failed" in row:
            return "not run"
        return f"{_pct(row.get(key))} ({row.get('training_cases')} cases, {row.get('epochs')} ep.)"

    lines = [f"## {title}", "", f"{header} by training data fraction (epochs scaled to keep the iterations).", "",
             "| Model | " + " | ".join(f"{100 * f:g} %" for f in fracs) + " |", "|---|" + "---|" * len(fracs)]
    for model in models:
        lines.append(f"| {model} | " + " | ".join(show(cell.get((model, f))) for f in fracs) + " |")
    (out / "fractions.md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for model in models:
        points = [(f, 100 * cell[(model, f)][key]) for f in fracs
                  if (model, f) in cell and cell[(model, f)].get(key) is not None]
        if points:
            ax.plot([100 * f for f, _ in points], [v for _, v in points], marker="o", label=model)
    ax.set_xlabel("training data (%)")
    ax.set_ylabel(f"{header} (%)")
    ax.set_xticks([100 * f for f in fracs])
    ax.legend()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "fractions.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    fire.Fire(compare)
