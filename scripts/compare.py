"""Run one bundle under several operator x pretraining settings and tabulate the results (like ACS paper Table IV).

Each setting is a real ``python -m monai.bundle run training`` of the bundle's own train.json with overrides, so the
comparison exercises exactly what users run. Results are read from each run's ``results.json``.

Example (the committed table of the proof-of-concept bundle)::

    python scripts/compare.py bundles/synthetic_poc_acs --out bundles/synthetic_poc_acs/docs/compare

Settings are ``operator:pretraining`` with pretraining ``p`` (2D-pretrained) or ``r`` (random). ``i3d:r`` is the
"3D r." row: the same 3D network (K x K x K kernels) without 2D pretraining, i.e. a randomly initialised Conv3d
network; ``i3d:p`` is "3D p." (I3D-inflated 2D weights).
"""

from __future__ import annotations

import csv
import datetime
import json
import os
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


def _label(operator: str, pretrained: bool) -> str:
    name = LABELS.get(operator, operator)
    if operator == "i3d":
        return "3D p. (I3D)" if pretrained else "3D r."
    return f"{name} {'p.' if pretrained else 'r.'}"


def _overrides_to_args(overrides: dict[str, Any] | None) -> list[str]:
    args = []
    for key, value in (overrides or {}).items():
        args += [f"--{key}", json.dumps(value) if not isinstance(value, str) else value]
    return args


def run_setting(
    bundle: Path, operator: str, pretrained: bool, run_name: str, overrides: dict | None, collect_only: bool = False
) -> dict | None:
    """Train one setting through the real bundle CLI and return its results.json plus wall time.

    A setting whose run folder already holds ``results.json`` (same tag) is not trained again, so an interrupted
    comparison continues where it stopped; with ``collect_only`` missing settings are skipped (None).
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
        "--config_file", str(bundle / "configs" / "train.json"),
        "--operator", operator, "--pretrained", str(pretrained).lower(),
        "--run_name", run_name, "--publish", "false",
    ] + _overrides_to_args(overrides)
    print("$ " + " ".join(cmd), flush=True)
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.time() - start
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise RuntimeError(f"setting {operator}:{'p' if pretrained else 'r'} failed:\n{tail}")
    results = json.loads(finished.read_text())
    results["seconds"] = round(seconds, 1)
    (runs_dir / run_name / "compare_seconds.txt").write_text(f"{seconds:.1f}\n")
    return results


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} s"


def write_outputs(rows: list[dict], out: Path, title: str) -> None:
    """Markdown + CSV table and a bar chart PNG."""
    out.mkdir(parents=True, exist_ok=True)
    fields = ["model", "operator", "pretrained", "feature_mauc", "dice", "miou", "size_mb", "parameters", "seconds"]
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows({k: row[k] for k in fields} for row in rows)
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}"  # noqa: E731
    lines = [f"## {title}", "", "| Model | Feature mAUC w/o training | Dice | mIoU | Size | Train time |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['model']} | {pct(row['feature_mauc'])} | {pct(row['dice'])} | {pct(row['miou'])} | "
                     f"{row['size_mb']:.2f} MB | {_seconds(row['seconds'])} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows)), 4))
    xs = range(len(rows))
    width = 0.27
    for i, (key, name) in enumerate((("feature_mauc", "feature mAUC"), ("dice", "Dice"), ("miou", "mIoU"))):
        ax.bar([x + (i - 1) * width for x in xs], [100 * (r[key] or 0) for r in rows], width, label=name)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([r["model"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.legend(loc="lower right")
    ax.set_title(title)
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

    Returns:
        Path of the Markdown table.
    """
    bundle_path = Path(bundle)
    if isinstance(settings, str):
        settings = [s.strip() for s in settings.split(",") if s.strip()]
    parsed = [_parse(s) for s in settings]
    tag = tag or "compare_" + datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    rows = []
    for operator, pretrained in parsed:
        run_name = f"{tag}/{operator}_{'p' if pretrained else 'r'}"
        result = run_setting(bundle_path, operator, pretrained, run_name, overrides, collect_only)
        if result is None:
            continue
        parameters = int(result["parameters"])
        rows.append({
            "model": _label(operator, pretrained),
            "operator": operator,
            "pretrained": pretrained,
            "feature_mauc": result.get("feature_mauc_before_3d_training"),
            "dice": result["mean"]["dice_global"],
            "miou": result["mean"]["miou"],
            "size_mb": parameters * 4 / 1e6,
            "parameters": parameters,
            "seconds": result["seconds"],
        })
        print(f"{rows[-1]['model']}: Dice {rows[-1]['dice']:.4f}, mIoU {rows[-1]['miou']:.4f}, feature mAUC "
              f"{rows[-1]['feature_mauc']}", flush=True)
    out_path = Path(out) if out else bundle_path / "docs" / "compare"
    title = f"{bundle_path.name}: measured on generated data ({len(rows)} settings, run tag {tag})"
    write_outputs(rows, out_path, title)
    (out_path / "command.txt").write_text(
        "python scripts/compare.py " + " ".join(sys.argv[1:]) + f"\n# cpu threads: {os.cpu_count()}\n"
    )
    print((out_path / "results.md").read_text())
    return str(out_path / "results.md")


if __name__ == "__main__":
    fire.Fire(compare)
