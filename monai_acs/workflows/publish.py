"""Publishing a run's best weights as the bundle's ``models/model.pt``, atomically, keeping a few backups."""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import BundleError
from .checkpoints import _UMASK, clean_orphans, load_checkpoint, save_atomic
from .locks import flock_blocking, funlock

__all__ = ["publish_best", "publish_model"]

logger = logging.getLogger(__name__)

_BACKUP = re.compile(r"^model_(\d{8}-\d{6}(?:-\d{6})?)(?:-\d+)?\.pt$")


def publish_model(
    src: str | os.PathLike,
    models_dir: str | os.PathLike,
    info: dict | None = None,
    keep_backups: int = 2,
) -> str:
    """Publish a run's best weights as a plain state dict ``<models_dir>/model.pt`` (what inference loads).

    Atomic: ``src`` is read and checked first (a corrupt file raises naming it, with the published model untouched),
    the new file is written beside the target and renamed over it, so ``model.pt`` is at every moment either the old
    or the new model. The old one is kept as ``model_<its UTC time to the microsecond>.pt`` (with its
    ``model_<...>.json``), and only the ``keep_backups`` newest backups stay. Publishers of one folder take turns
    (a lock on ``<models_dir>/.publish.lock``), and files that killed publishes left are removed.

    Args:
        src: a checkpoint holding the weights under ``network``, or a plain state dict.
        models_dir: the bundle's models folder.
        info: written as ``model.json`` beside the model. Default None.
        keep_backups: previous models kept. Default 2; 0 keeps none.

    Returns:
        The path of the published model.

    Raises:
        BundleError: ``src`` cannot be read or holds no state dict.
    """
    models = Path(models_dir)
    models.mkdir(parents=True, exist_ok=True)
    target = models / "model.pt"
    state = load_checkpoint(src, what="best checkpoint")
    weights = state.get("network", state) if isinstance(state, Mapping) else state
    if not isinstance(weights, Mapping) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise BundleError(f"best checkpoint {src} holds no state dict of tensors; nothing was published")
    fd = flock_blocking(models / ".publish.lock")
    tmp_fd, new_tmp = tempfile.mkstemp(prefix=f".model.pt.pid{os.getpid()}.", suffix=".tmp", dir=models)
    os.close(tmp_fd)
    try:
        clean_orphans(models, recursive=False)
        torch.save(dict(weights), new_tmp)  # complete before anything moves
        os.chmod(new_tmp, 0o666 & ~_UMASK)  # as save_atomic: not mkstemp's 0600
        if target.exists():
            stamp = datetime.datetime.fromtimestamp(target.stat().st_mtime, datetime.timezone.utc)
            base = stamp.strftime("%Y%m%d-%H%M%S-%f")
            kept, n = models / f"model_{base}.pt", 1
            while kept.exists():
                kept, n = models / f"model_{base}-{n}.pt", n + 1
            try:
                os.link(target, kept)  # no copy of a large file; model.pt itself is replaced atomically below
            except OSError:
                shutil.copy2(target, kept)
            old_json = models / "model.json"
            if old_json.exists():
                shutil.copy2(old_json, kept.with_suffix(".json"))
            logger.warning("previous %s kept as %s", target, kept)
        os.replace(new_tmp, target)
        run_settings = state.get("run_settings") if isinstance(state, Mapping) else None
        if info is not None or run_settings:
            recorded = {**(info or {}), **({"run_settings": run_settings} if run_settings else {})}
            save_atomic(json.dumps(recorded, indent=2, default=str) + "\n", models / "model.json")
        backups = sorted((p for p in models.iterdir() if _BACKUP.match(p.name)), key=lambda p: p.stat().st_mtime_ns)
        for old in backups[: max(0, len(backups) - max(0, int(keep_backups)))]:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)
            logger.info("removed old backup %s (keep_backups=%d)", old, keep_backups)
    finally:
        if os.path.exists(new_tmp):
            os.remove(new_tmp)
        funlock(fd)
    return str(target)


def publish_best(
    run_dir: str | os.PathLike, models_dir: str | os.PathLike, info: Mapping[str, Any] | None = None,
    publish: Any = True,
) -> str | None:
    """The last step of a training: publish the run's ``model_best.pt`` as ``<models_dir>/model.pt`` (with ``info``,
    e.g. the report, as ``model.json``; :func:`publish_model`), or with ``publish=false`` (as ``scripts/compare.py``
    runs) only say where the run is.

    Returns:
        The published model's path, or None when not published.

    Raises:
        FileNotFoundError: the run wrote no ``model_best.pt`` (validation never ran, or its metric was undefined).
    """
    from monai.utils import str2bool

    best = Path(run_dir) / "model_best.pt"
    if not best.is_file():
        raise FileNotFoundError(
            f"{best} was not written: did validation run (val_interval <= epochs), and does the validation set give a "
            f"defined key metric?"
        )
    if not (str2bool(publish) if isinstance(publish, str) else bool(publish)):
        print(f"logs and checkpoints in {run_dir} (not published: publish=false)", flush=True)
        return None
    published = publish_model(best, models_dir, info=dict(info or {}))
    print(f"best model published to {published}; logs and checkpoints in {run_dir}", flush=True)
    return published
