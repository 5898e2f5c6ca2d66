"""What the bundles' configs need around MONAI's engines: run-folder paths resolved without touching the disk, and a
TensorBoard writer that creates its folder only when the run writes its first event.

Building a bundle workflow (``ConfigWorkflow(...).initialize()`` + ``check_properties()``, which instantiates the
trainer with its handlers) must have no side effects; creating and locking the run folder is a run step
(``monai_acs.workflows.prepare_run_dir``), so the handlers get the folder's path and write there only once the
engine runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["LazySummaryWriter", "publish_best", "run_dir_path"]


def run_dir_path(
    runs_dir: str | os.PathLike, run_name: str, resume: Any = False, settings: Mapping[str, Any] | None = None
) -> str:
    """The folder a run writes into, resolved without touching the disk: ``<runs_dir>/<run_name>``; with ``resume``
    and ``run_name == "latest"``, the run last started with the same ``settings`` (as
    :func:`monai_acs.workflows.prepare_run_dir` picks it, which then creates, locks and checks the folder in the first
    run step).

    Raises:
        BundleError: ``latest`` names no resumable run (as :func:`monai_acs.workflows.prepare_run_dir`).

    Examples:
        >>> run_dir_path("/tmp/runs", "acs_p")
        '/tmp/runs/acs_p'
    """
    from monai.utils import str2bool

    from .runs import _find_latest, normalize_settings

    resume = str2bool(resume) if isinstance(resume, str) else bool(resume)
    if resume and run_name == "latest":
        return str(_find_latest(Path(runs_dir), normalize_settings(settings) if settings is not None else None))
    return str(Path(runs_dir) / str(run_name))


class LazySummaryWriter:
    """``torch.utils.tensorboard.SummaryWriter(log_dir)`` created on first use, for MONAI's ``TensorBoardStatsHandler
    (summary_writer=...)``: the handler can be built (and a workflow checked) without creating ``log_dir``.

    Args:
        log_dir: the event folder.
        **kwargs: further ``SummaryWriter`` arguments.
    """

    def __init__(self, log_dir: str | os.PathLike, **kwargs: Any) -> None:
        self.log_dir, self._kwargs, self._writer = str(log_dir), kwargs, None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._writer is None:
            import atexit

            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=self.log_dir, **self._kwargs)
            atexit.register(self._writer.close)  # MONAI leaves a writer it was given open: flush at exit
        return getattr(self._writer, name)

    def close(self) -> None:
        """Close the writer if one was created (nothing to do otherwise)."""
        if self._writer is not None:
            self._writer.close()


def publish_best(
    run_dir: str | os.PathLike, models_dir: str | os.PathLike, info: Mapping[str, Any] | None = None,
    publish: Any = True,
) -> str | None:
    """The last run step of a training: publish the run's ``model_best.pt`` as ``<models_dir>/model.pt`` (with
    ``info``, e.g. the report, as ``model.json``; :func:`monai_acs.workflows.publish_model`), or with
    ``publish=false`` (as ``scripts/compare.py`` runs) only say where the run is.

    Returns:
        The published model's path, or None when not published.

    Raises:
        FileNotFoundError: the run wrote no ``model_best.pt`` (validation never ran, or its metric was undefined).
    """
    from monai.utils import str2bool

    from .runs import publish_model

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
