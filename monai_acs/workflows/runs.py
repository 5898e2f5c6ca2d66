"""Run folders of the bundles: the :class:`Run` component a ``train.json`` declares, which names, locks, resumes and
publishes a training run, and the functions under it."""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.utils import str2bool

from ..errors import BundleError, RunFolderError
from .checkpoints import clean_orphans, load_checkpoint, save_atomic
from .locks import LOCK_FILE, lock_folder, release_folder
from .publish import publish_best

__all__ = [
    "RUN_INFO",
    "Run",
    "check_bundle_root",
    "default_run_name",
    "find_latest_run",
    "lock_folder",
    "normalize_settings",
    "prepare_run_dir",
    "record_resume",
    "release_folder",
]

RUN_INFO = "run.json"
"""The file in each run folder that records its settings, start and resumes (written by :func:`prepare_run_dir`)."""

logger = logging.getLogger(__name__)


def default_run_name(*parts: Any) -> str:
    """``<parts joined by _>_<UTC timestamp to the microsecond>``, e.g. ``acs_p_20261122-031502-123456``.

    Two runs started in the same second get different names; under ``torch.distributed`` every rank gets rank 0's
    name. :func:`prepare_run_dir` refuses a folder that another run owns, so even a collision cannot mix two runs.
    """
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    name = "_".join([str(p) for p in parts if p not in (None, "")] + [stamp])
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        holder = [name]
        dist.broadcast_object_list(holder, src=0)
        name = holder[0]
    return name


def _is_writer() -> bool:
    """False on every ``torch.distributed`` rank but 0 (also before the process group exists, from ``RANK``)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0") or 0) == 0


def _normal(value: Any) -> Any:
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        if lowered in ("none", "null"):
            return None
        return value
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value) if isinstance(value, float) and not value.is_integer() else int(value)
    if isinstance(value, Mapping):
        return {str(k): _normal(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    if isinstance(value, os.PathLike):
        return str(value)
    return str(value)


def normalize_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """The settings that define a run, as plain JSON values that compare equal across command lines.

    ``"false"`` (fire) and ``False`` are the same, ``2.0`` and ``2`` too, tuples become lists, paths become absolute
    strings when the key ends in ``_dir`` / ``_path`` (so a relative and an absolute ``--dataset_dir`` match).

    Examples:
        >>> normalize_settings({"pretrained": "false", "lr": 2.0, "channels": (4, 8)})
        {'pretrained': False, 'lr': 2, 'channels': [4, 8]}
    """
    out = {}
    for key, value in (settings or {}).items():
        value = _normal(value)
        if isinstance(value, str) and str(key).endswith(("_dir", "_path")):
            value = str(Path(value).expanduser().resolve())
        out[str(key)] = value
    return out


def _settings_difference(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    keys = [k for k in current if k in recorded]
    return [f"{k}={recorded[k]!r} (this command: {current[k]!r})" for k in keys if recorded[k] != current[k]]


# -- run folders -------------------------------------------------------------------------------------------------


def _read_run_info(run_dir: Path) -> dict[str, Any] | None:
    try:
        info = json.loads((run_dir / RUN_INFO).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _start_record() -> dict[str, Any]:
    """When, where and how this process started a run (a ``run.json`` entry)."""
    return {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds"),
            "started_ns": time.time_ns(), "pid": os.getpid(), "host": socket.gethostname(), "argv": sys.argv}


def _last_started(info: Mapping[str, Any]) -> float:
    return max([float(info.get("started_ns", 0))] + [float(r.get("started_ns", 0)) for r in info.get("resumed", [])])


def find_latest_run(runs_dir: str | os.PathLike, settings: Mapping[str, Any] | None = None) -> Path:
    """The run folder under ``runs_dir`` last started (or resumed) with ``settings`` (``--run_name latest``).

    Read-only: it reads the ``run.json`` files and creates, locks or writes nothing.

    Raises:
        BundleError: no run there was started with these settings, or that run has no ``checkpoint_latest.pt``.
    """
    runs = Path(runs_dir)
    settings = normalize_settings(settings) if settings is not None else None
    infos = [(p.parent, _read_run_info(p.parent)) for p in runs.glob(f"*/{RUN_INFO}")]
    infos = [(d, i) for d, i in infos if i is not None]
    if settings is None:
        # no settings to match: only a run folder that records none can be picked, the newest by start time
        candidates = infos
    else:
        candidates = [(d, i) for d, i in infos if not _settings_difference(i.get("settings", {}), settings)]
    if not candidates:
        legacy = sorted((p for p in runs.glob("*/checkpoint_latest.pt") if not (p.parent / RUN_INFO).is_file()),
                        key=lambda p: p.stat().st_mtime)
        others = ", ".join(
            f"{d.name} ({'; '.join(_settings_difference(i.get('settings', {}), settings or {})) or 'no settings'})"
            for d, i in infos[:5]
        )
        raise BundleError(
            f"--resume true --run_name latest: no run under {runs} was started with this command's settings"
            + (f" (runs there: {others})" if others else "")
            + (f"; folders without {RUN_INFO}: {', '.join(p.parent.name for p in legacy[-3:])}" if legacy else "")
            + "; pass --run_name <folder> to resume a given run, or drop --resume to start a new one"
        )
    run_dir, _ = max(candidates, key=lambda c: _last_started(c[1]))
    if not (run_dir / "checkpoint_latest.pt").is_file():
        raise BundleError(
            f"--resume true --run_name latest: the run last started with these settings, {run_dir}, has no "
            f"checkpoint_latest.pt (it stopped before its first epoch ended), so there is nothing to resume; drop "
            f"--resume to start again, or pass --run_name <folder> to resume an older run"
        )
    return run_dir


def prepare_run_dir(
    runs_dir: str | os.PathLike,
    run_name: str,
    resume: bool = False,
    settings: Mapping[str, Any] | None = None,
) -> str:
    """Create (or reopen, to resume) a run folder owned by this process.

    - The folder is locked (:func:`lock_folder`) for the life of the process: a second command on the same folder is
      refused while the first runs; a killed run leaves no stale lock.
    - A new run refuses a folder that holds another run's files (a folder holding only the ``run.json`` of a run that
      stopped before training is reused); it records ``settings``, its start time and command line in ``run.json``.
    - ``resume=True`` with ``run_name="latest"`` means the run last started (or resumed) with the same ``settings``,
      and refuses when that run has no checkpoint (it did not get to the end of an epoch) rather than resuming an
      older one; any resume refuses a run whose recorded settings differ from ``settings``. A resume is not recorded
      here: :func:`record_resume` does it once the checkpoint has loaded.
    - Files that killed saves left in the folder (``.*.tmp``) are removed (:func:`clean_orphans`).
    - Under ``torch.distributed`` only rank 0 locks, checks and writes; the other ranks get the same path.

    Args:
        runs_dir: parent folder of all runs (``<bundle_root>/runs``).
        run_name: this run's name; with ``resume``, ``"latest"`` picks the folder as said above.
        resume: continue the run in that folder (it must hold ``checkpoint_latest.pt``).
        settings: what defines the run (operator, network, data, seed, ...: not ``epochs``); compared on resume.
            Default None (nothing recorded or compared).

    Returns:
        The run folder.

    Raises:
        RunFolderError: the folder holds another run's files and ``resume`` is False, or another process uses it.
        BundleError: resume with different settings, or ``latest`` names no resumable run.
        FileNotFoundError: ``resume`` is True and the named run has no ``checkpoint_latest.pt``.
    """
    runs = Path(runs_dir)
    resume = str2bool(resume)
    current = normalize_settings(settings) if settings is not None else None
    if resume and run_name == "latest":
        run_dir = find_latest_run(runs, current)
    else:
        run_dir = runs / str(run_name)
        if resume and not (run_dir / "checkpoint_latest.pt").is_file():
            raise FileNotFoundError(
                f"--resume: {run_dir / 'checkpoint_latest.pt'} does not exist; list {runs} for the runs that can "
                f"resume, or drop --resume to start a new run"
            )
    if not _is_writer():
        run_dir.mkdir(parents=True, exist_ok=True)
        return str(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock_folder(run_dir)
    try:
        clean_orphans(run_dir)
        info = _read_run_info(run_dir)
        now = _start_record()
        if resume:
            if info is not None and current is not None:
                diff = _settings_difference(info.get("settings", {}), current)
                if diff:
                    raise BundleError(
                        f"resume refused: the run in {run_dir} was made with {'; '.join(diff)}; resume it with its own "
                        f"settings, or drop --resume to start a new run with these"
                    )
            # recorded by record_resume once the checkpoint has loaded (Run.start reads it once, RunCheckpointer loads
            # that state): a recorded resume that never ran would also change which run "latest" means
            if info is not None:
                return str(run_dir)
            info = {"run_name": run_dir.name, "settings": current}
        else:
            leftovers = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_FILE)
            if any(name.endswith(".pt") for name in leftovers):
                raise RunFolderError(
                    f"{run_dir} already holds checkpoints of another run; pass --resume true to continue it or choose "
                    f"another --run_name"
                )
            if leftovers == [RUN_INFO]:  # a run that stopped before building its engines (bad data, bad setting)
                logger.warning("%s: reusing the folder of a run that stopped before training (%s)", run_dir,
                               (info or {}).get("started", "start unknown"))
            elif leftovers:
                raise RunFolderError(
                    f"{run_dir} already holds another run's files ({', '.join(leftovers[:5])}); choose another "
                    f"--run_name, or remove that folder if it is not needed"
                )
            info = {"run_name": run_dir.name, "settings": current, **now}
        save_atomic(json.dumps(info, indent=2, default=str) + "\n", run_dir / RUN_INFO)
    except BaseException:
        release_folder(run_dir)
        raise
    return str(run_dir)


def record_resume(run_dir: str | os.PathLike) -> None:
    """Add this process's start to the ``resumed`` list of ``<run_dir>/run.json``.

    Called once the run's ``checkpoint_latest.pt`` has loaded (:class:`monai_acs.workflows.RunCheckpointer`), so a
    resume that failed to read its checkpoint is never recorded (it would change which run ``latest`` means).
    Only rank 0 writes under ``torch.distributed``.
    """
    if not _is_writer():
        return
    folder = Path(run_dir)
    info = _read_run_info(folder) or {"run_name": folder.name}
    now = _start_record()
    info["resumed"] = [*info.get("resumed", []), now]
    save_atomic(json.dumps(info, indent=2, default=str) + "\n", folder / RUN_INFO)


def check_bundle_root(bundle_root: str | os.PathLike) -> str:
    """Refuse a ``bundle_root`` that is not a bundle folder (one holding ``configs/metadata.json``).

    The configs set ``bundle_root`` to ``.`` when run from inside the bundle folder and to ``bundles/<name>`` when run
    from the repository root; from anywhere else it must be passed.

    Returns:
        ``bundle_root`` as an absolute path.

    Raises:
        BundleError: no ``configs/metadata.json`` under ``bundle_root``.
    """
    root = Path(bundle_root).expanduser().resolve()
    if not (root / "configs" / "metadata.json").is_file():
        raise BundleError(
            f"bundle_root {root} is not a bundle folder (it holds no configs/metadata.json); run from the bundle "
            f"folder or from the repository root, or pass --bundle_root <path>"
        )
    return str(root)


class Run:
    """A training run of a bundle, as one config component: its name, its folder, its resume and its publication.

    Declared once in ``train.json``::

        "training_run": {"_target_": "monai_acs.workflows.Run", "bundle_root": "@bundle_root", "runs_dir": "@runs_dir",
                         "models_dir": "@models_dir", "name": "@run_name", "tags": ["@operator"], "resume": "@resume",
                         "settings": "@run_settings", "publish": "@publish", "epochs": "@epochs",
                         "val_interval": "@val_interval"},
        "run_dir": "$@training_run.dir"

    and used by the run steps ``$@training_run.start()`` (first) and ``$@training_run.publish(@report)`` (last), and
    by :class:`monai_acs.workflows.RunCheckpointer` (``run=@training_run``). On resume :meth:`start` reads
    ``checkpoint_latest.pt`` (once: a corrupt one is refused before any other step), the checkpointer loads that
    state into the network, optimizer and trainer, and only then is the resume recorded (:func:`record_resume`).

    ``initialize`` builds it (``"@training_run"``), so a bad ``bundle_root`` or schedule is refused before any
    data is read or generated. Building it has no side effects: :attr:`dir` is resolved without creating anything
    (with ``resume`` and ``name="latest"`` it reads the ``run.json`` files, :func:`find_latest_run`); :meth:`start`
    creates and locks the folder (:func:`prepare_run_dir`).

    Args:
        bundle_root: the bundle folder (must hold ``configs/metadata.json``).
        runs_dir: parent of the run folders. Default ``<bundle_root>/runs``.
        models_dir: where :meth:`publish` puts ``model.pt``. Default ``<bundle_root>/models``.
        name: the run folder's name; None names it from ``tags`` and the UTC time (:func:`default_run_name`);
            ``"latest"`` with ``resume`` picks the run last started with the same settings. Default None.
        tags: parts of a generated name, e.g. the operator. Default ().
        resume: continue the named run from its ``checkpoint_latest.pt``. Default False.
        settings: what defines the run (compared on resume; recorded in ``run.json`` and the checkpoints).
            Default None.
        publish: whether :meth:`publish` publishes the best model. Default True.
        epochs: the training length, checked with ``val_interval`` (:func:`monai_acs.errors.check_schedule`) when
            given. Default None.
        val_interval: epochs between validations. Default None.

    Raises:
        BundleError: ``bundle_root`` is not a bundle folder, or the schedule cannot produce a model.
    """

    def __init__(
        self,
        bundle_root: str | os.PathLike,
        runs_dir: str | os.PathLike | None = None,
        models_dir: str | os.PathLike | None = None,
        name: str | None = None,
        tags: Sequence[Any] = (),
        resume: Any = False,
        settings: Mapping[str, Any] | None = None,
        publish: Any = True,
        epochs: Any = None,
        val_interval: Any = None,
    ) -> None:
        from ..errors import check_schedule

        self.bundle_root = check_bundle_root(bundle_root)
        self.runs_dir = str(runs_dir) if runs_dir is not None else os.path.join(self.bundle_root, "runs")
        self.models_dir = str(models_dir) if models_dir is not None else os.path.join(self.bundle_root, "models")
        self.name = None if name in (None, "", "None", "none", "null") else str(name)
        self.tags, self.resume = [t for t in tags if t not in (None, "")], str2bool(resume)
        self.settings = normalize_settings(settings) if settings is not None else None
        self.publish_model = str2bool(publish)
        if epochs is not None:
            check_schedule(epochs, val_interval)
        self._dir: str | None = None
        self._resume_state: Any = None

    @property
    def dir(self) -> str:
        """The run folder (resolved once, without touching the disk but to find ``latest``)."""
        if self._dir is None:
            if self.resume and self.name == "latest":
                self._dir = str(find_latest_run(self.runs_dir, self.settings))
            else:
                self._dir = os.path.join(self.runs_dir, self.name or default_run_name(*self.tags))
        return self._dir

    def start(self) -> str:
        """The first run step: create (or, to resume, reopen) the run folder, lock it for this process, check the
        recorded settings and record a new run's (:func:`prepare_run_dir`).

        Returns:
            The run folder.
        """
        run_dir = Path(self.dir)
        started = prepare_run_dir(run_dir.parent, run_dir.name, resume=self.resume, settings=self.settings)
        if self.resume:
            try:  # read here, once, so that a corrupt checkpoint is refused before any other run step works
                self._resume_state = load_checkpoint(run_dir / "checkpoint_latest.pt", what="checkpoint to resume")
            except BaseException:
                release_folder(run_dir)
                raise
        return started

    def take_resume_state(self) -> Any:
        """The ``checkpoint_latest.pt`` that :meth:`start` read to resume (handed over once, then dropped), or None."""
        state, self._resume_state = self._resume_state, None
        return state

    def publish(self, report: Any = None) -> str | None:
        """The last run step: publish the run's ``model_best.pt`` as ``<models_dir>/model.pt``, with the report's best
        results (``report.write_best()``, or a mapping) as ``model.json`` (:func:`monai_acs.workflows.publish_best`).
        Does nothing on ranks other than 0.

        Returns:
            The published model's path, or None (not published, or not rank 0).
        """
        if not _is_writer():
            return None
        info = report.write_best() if hasattr(report, "write_best") else report
        return publish_best(self.dir, self.models_dir, info=info, publish=self.publish_model)
