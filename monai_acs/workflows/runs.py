"""Run folders and checkpoints of the bundles: where a run writes, how it resumes, and atomic saving."""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "as_bool",
    "locate_bundle_root",
    "default_run_name",
    "prepare_run_dir",
    "save_atomic",
    "publish_model",
    "require_dataset_dir",
]

logger = logging.getLogger(__name__)


def as_bool(value: Any) -> bool:
    """Command-line booleans: ``--flag false`` reaches a bundle as the string "false" (fire), which is truthy.

    Raises:
        ValueError: a string that is not a recognised boolean.
    """
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes", "y", "on"):
            return True
        if lowered in ("false", "0", "no", "n", "off", "none", ""):
            return False
        raise ValueError(f"expected a boolean (true/false), got {value!r}")
    return bool(value)


def _config_files_from_argv(argv: list[str]) -> list[str]:
    for i, arg in enumerate(argv):
        value = None
        if arg == "--config_file" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--config_file="):
            value = arg.split("=", 1)[1]
        if value is not None:
            value = value.strip()
            if value.startswith("["):  # fire passes lists as "['a.json', 'b.json']"
                return [v.strip(" '\"") for v in value.strip("[]").split(",") if v.strip(" '\"")]
            return [value]
    return []


def locate_bundle_root(name: str) -> str:
    """Find the bundle folder, wherever the ``monai.bundle`` command is run from.

    Order: the folder above ``configs/`` of the ``--config_file`` on the command line; the current folder if it is
    the bundle; ``./bundles/<name>``; ``./<name>``.

    Args:
        name: the bundle folder name, e.g. ``"synthetic_poc_acs"``.

    Returns:
        The absolute bundle root.

    Raises:
        FileNotFoundError: none of the candidates holds ``configs/metadata.json``.
    """
    candidates = [Path(f).resolve().parent.parent for f in _config_files_from_argv(sys.argv)]
    cwd = Path.cwd()
    candidates += [cwd, cwd / "bundles" / name, cwd / name]
    for candidate in candidates:
        if (candidate / "configs" / "metadata.json").is_file():
            return str(candidate)
    raise FileNotFoundError(
        f"cannot find the bundle {name!r}: none of {[str(c) for c in candidates]} holds configs/metadata.json; "
        f"pass --bundle_root <path to the bundle folder>"
    )


def default_run_name(*parts: Any) -> str:
    """``<parts joined by _>_<UTC timestamp>``, e.g. ``acs_p_20261122-031502``."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return "_".join([str(p) for p in parts if p not in (None, "")] + [stamp])


def prepare_run_dir(runs_dir: str | os.PathLike, run_name: str, resume: bool = False) -> str:
    """Create the run folder, refusing to reuse another run's folder unless resuming.

    Args:
        runs_dir: parent folder of all runs (``<bundle_root>/runs``).
        run_name: this run's name; with ``resume`` and the name ``"latest"``, the newest run folder.
        resume: continue the run in that folder (it must exist and hold ``checkpoint_latest.pt``).

    Returns:
        The run folder.

    Raises:
        FileExistsError: the folder holds checkpoints and ``resume`` is False.
        FileNotFoundError: ``resume`` is True and there is nothing to resume.
    """
    runs = Path(runs_dir)
    resume = as_bool(resume)
    if resume and run_name == "latest":
        found = sorted((p for p in runs.glob("*/checkpoint_latest.pt")), key=lambda p: p.stat().st_mtime)
        if not found:
            raise FileNotFoundError(f"--resume: no run with checkpoint_latest.pt under {runs}")
        return str(found[-1].parent)
    run_dir = runs / run_name
    has_ckpt = run_dir.is_dir() and any(run_dir.glob("*.pt"))
    if resume:
        if not (run_dir / "checkpoint_latest.pt").is_file():
            raise FileNotFoundError(f"--resume: {run_dir / 'checkpoint_latest.pt'} does not exist")
    elif has_ckpt:
        raise FileExistsError(
            f"{run_dir} already holds checkpoints of another run; pass --resume true to continue it or choose "
            f"another --run_name"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return str(run_dir)


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` (or write text for ``str``) into a temporary file in the same folder, then rename it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        if isinstance(obj, str):
            Path(tmp).write_text(obj)
        else:
            torch.save(obj, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


def publish_model(src: str | os.PathLike, models_dir: str | os.PathLike, info: dict | None = None) -> str:
    """Publish a run's best weights as a plain state dict ``<models_dir>/model.pt`` (what inference loads).

    An existing ``model.pt`` is kept as ``model_<timestamp>.pt`` (logged), never silently overwritten.

    Returns:
        The path of the published model.
    """
    models = Path(models_dir)
    models.mkdir(parents=True, exist_ok=True)
    target = models / "model.pt"
    if target.exists():
        stamp = datetime.datetime.fromtimestamp(target.stat().st_mtime, datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
        kept = models / f"model_{stamp}.pt"
        os.replace(target, kept)
        logger.warning("previous %s kept as %s", target, kept)
    state = torch.load(src, map_location="cpu", weights_only=True)
    save_atomic(state.get("network", state) if isinstance(state, dict) else state, target)
    if info is not None:
        save_atomic(json.dumps(info, indent=2) + "\n", models / "model.json")
    return str(target)


def require_dataset_dir(dataset_dir: str | os.PathLike, expected: str, how_to_make: str) -> str:
    """Fail fast with a clear message when ``dataset_dir`` is missing or empty.

    Args:
        dataset_dir: the configured data folder.
        expected: a description of the layout the bundle reads.
        how_to_make: the command that makes demo data.

    Returns:
        ``dataset_dir`` as a string.

    Raises:
        FileNotFoundError: the folder does not exist or is empty.
    """
    path = Path(dataset_dir)
    if not path.is_dir() or not any(path.iterdir()):
        state = "does not exist" if not path.exists() else ("is not a folder" if not path.is_dir() else "is empty")
        raise FileNotFoundError(
            f"dataset_dir {str(path)!r} {state}. Expected: {expected}. To make a small demo data set: {how_to_make}"
        )
    return str(path)
