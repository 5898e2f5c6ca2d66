"""Run folders and checkpoints of the bundles: where a run writes, how it resumes, and atomic saving."""

from __future__ import annotations

import datetime
import json
import logging
import os
import pickle
import random
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.utils import str2bool

from ..errors import BundleError, RunFolderError

try:
    import fcntl
except ImportError:  # Windows: run folders are not locked
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "RUN_INFO",
    "capture_rng_state",
    "check_checkpoint",
    "clean_orphans",
    "default_run_name",
    "load_checkpoint",
    "load_weights",
    "locate_bundle_root",
    "lock_folder",
    "normalize_settings",
    "prepare_run_dir",
    "publish_model",
    "release_folder",
    "require_dataset_dir",
    "restore_rng_state",
    "save_atomic",
]

RUN_INFO = "run.json"
"""The file in each run folder that records its settings, start and resumes (written by :func:`prepare_run_dir`)."""

LOCK_FILE = ".lock"

logger = logging.getLogger(__name__)


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


# -- folder locks ------------------------------------------------------------------------------------------------

_HELD: dict[str, int] = {}


def lock_folder(folder: str | os.PathLike) -> Path:
    """Make this process the owner of ``folder`` until it exits (or :func:`release_folder`).

    An exclusive ``flock`` on ``<folder>/.lock``: the operating system drops it when the process ends, however it
    ends (``kill -9`` included), so a crashed run never leaves its folder stuck. Idempotent within a process.

    Returns:
        The lock file.

    Raises:
        RunFolderError: another live process holds the folder (its pid, host and start time are in the message).
    """
    path = Path(folder) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    key = str(path.resolve())
    if key in _HELD or fcntl is None:
        return path
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise RunFolderError(
            f"{Path(folder)} is in use by {holder}: two commands cannot write one run folder; wait for it to finish "
            f"or pass another --run_name"
        ) from None
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode(), 0)
    _HELD[key] = fd
    return path


def release_folder(folder: str | os.PathLike) -> None:
    """Give up this process's ownership of ``folder`` (see :func:`lock_folder`); no-op when not held."""
    fd = _HELD.pop(str((Path(folder) / LOCK_FILE).resolve()), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor drops the flock


_OWNER = re.compile(r"pid(\d+)")


def _owner_alive(path: Path, max_age_s: float) -> bool:
    match = _OWNER.search(path.name)
    if match is None:  # written by an older version: an orphan once it is old
        try:
            return time.time() - path.lstat().st_mtime < max_age_s
        except FileNotFoundError:
            return False
    pid = int(match.group(1))
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_orphans(folder: str | os.PathLike, recursive: bool = True, max_age_s: float = 3600.0) -> list[str]:
    """Remove what killed saves left in ``folder``: ``.*.tmp`` files and ``.*.partial-*`` folders.

    Each such name carries its writer's pid (:func:`save_atomic`, ``monai_acs.data.write_dataset``); it is removed
    when that process no longer exists, or, for names without a pid, when older than ``max_age_s``.

    Returns:
        The removed paths (also logged).
    """
    root = Path(folder)
    if not root.is_dir():
        return []
    removed = []
    tmps = root.rglob(".*.tmp") if recursive else root.glob(".*.tmp")
    for path in [*tmps, *root.glob(".*.partial-*")]:
        if _owner_alive(path, max_age_s):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(str(path))
    if removed:
        logger.warning("removed %d file(s) left by an interrupted save: %s", len(removed), ", ".join(removed))
    return removed


# -- run folders -------------------------------------------------------------------------------------------------


def _read_run_info(run_dir: Path) -> dict[str, Any] | None:
    try:
        info = json.loads((run_dir / RUN_INFO).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _last_started(info: Mapping[str, Any]) -> float:
    return max([float(info.get("started_ns", 0))] + [float(r.get("started_ns", 0)) for r in info.get("resumed", [])])


def _find_latest(runs: Path, settings: dict[str, Any] | None) -> Path:
    """The run folder the user last started (or resumed) with ``settings``; refuses when that run cannot resume."""
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
      older one; any resume refuses a run whose recorded settings differ from ``settings``.
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
        run_dir = _find_latest(runs, current)
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
        now = {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds"),
               "started_ns": time.time_ns(), "pid": os.getpid(), "host": socket.gethostname(), "argv": sys.argv}
        if resume:
            if info is not None and current is not None:
                diff = _settings_difference(info.get("settings", {}), current)
                if diff:
                    raise BundleError(
                        f"resume refused: the run in {run_dir} was made with {'; '.join(diff)}; resume it with its own "
                        f"settings, or drop --resume to start a new run with these"
                    )
            # a resume that cannot read its checkpoint is refused here, before run.json records it (a recorded
            # resume that never ran would also change which run "latest" means)
            load_checkpoint(run_dir / "checkpoint_latest.pt", what="checkpoint to resume")
            info = info or {"run_name": run_dir.name, "settings": current}
            info["resumed"] = [*info.get("resumed", []), now]
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


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` (or write text for ``str``) into a temporary file in the same folder, then rename it.

    The temporary file is ``.<name>.pid<pid>.<random>.tmp``: a reader never sees a half-written file, and a save
    killed half-way leaves a file that :func:`clean_orphans` recognises as its dead writer's.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.pid{os.getpid()}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        if isinstance(obj, str):
            Path(tmp).write_text(obj)
        else:
            torch.save(obj, tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; a saved file gets the permissions open() gives
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


_BACKUP = re.compile(r"^model_(\d{8}-\d{6}(?:-\d{6})?)(?:-\d+)?\.pt$")


def _flock_blocking(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


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
    fd = _flock_blocking(models / ".publish.lock")
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
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    return str(target)


# -- checkpoints ---------------------------------------------------------------------------------------------------


def load_checkpoint(path: str | os.PathLike, what: str = "checkpoint", map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` whose errors name the file and say what to do.

    Raises:
        FileNotFoundError: no such file.
        BundleError: the file is corrupt or truncated, or holds objects other than tensors and containers (refused:
            loading it could run code).
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{what} {file} does not exist")
    try:
        return torch.load(file, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            raise BundleError(
                f"{what} {file} holds Python objects besides tensors and was refused, because loading it could run "
                f"code; re-save it from a trusted source as a plain state dict (torch.save(model.state_dict(), path))"
            ) from None
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise BundleError(
            f"cannot read {what} {file}: {reason}; the file is corrupt or truncated (an interrupted copy or save?): "
            f"replace it with an intact copy"
        ) from None
    except Exception as err:  # noqa: BLE001 - zip reader, EOF, OS errors ...
        # the first sentence: PyTorch's zip-reader error goes on for four more about what may have happened
        reason = (str(err).splitlines() or [type(err).__name__])[0].split(". ")[0]
        raise BundleError(
            f"cannot read {what} {file}: {type(err).__name__}: {reason}; the file is corrupt or truncated (an "
            f"interrupted copy or save?): replace it with an intact copy"
        ) from None


def _origin(path: Path, state: Any) -> str:
    """What a checkpoint says it was made with: its recorded run settings, or the ``model.json`` beside it."""
    settings = state.get("run_settings") if isinstance(state, Mapping) else None
    if not settings:
        try:
            info = json.loads(path.with_name("model.json").read_text())
            settings = (info.get("run_settings") or info.get("settings", info)) if isinstance(info, dict) else None
        except (OSError, ValueError):
            settings = None
    if not isinstance(settings, Mapping):
        return "settings it was made with are not recorded"
    keys = ("task", "operator", "backbone", "width", "channels", "strides", "num_res_units", "num_slices", "pretraining",
            "pretrained", "num_classes", "in_channels")
    shown = [f"{k}={settings[k]!r}" for k in keys if k in settings]
    return "it was made with " + (", ".join(shown) if shown else "unrecorded network settings")


def load_weights(network: torch.nn.Module, state: Any, source: str | os.PathLike, strict: bool = True) -> None:
    """``network.load_state_dict`` (of a state dict or a checkpoint holding one) whose mismatch error names the file
    and the settings the checkpoint was made with.

    Raises:
        BundleError: the weights do not fit the network.
    """
    weights = state
    if isinstance(state, Mapping):
        for key in ("network", "model", "state_dict"):
            if isinstance(state.get(key), Mapping):
                weights = state[key]
                break
    wrapped = (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)
    module = network.module if isinstance(network, wrapped) else network
    try:
        module.load_state_dict(weights, strict=strict)
    except (RuntimeError, KeyError, TypeError, AttributeError) as err:
        own = module.state_dict()
        theirs = weights if isinstance(weights, Mapping) else {}
        missing = [k for k in own if k not in theirs]
        unexpected = [k for k in theirs if k not in own]
        shapes = [k for k in own if k in theirs and hasattr(theirs[k], "shape") and theirs[k].shape != own[k].shape]
        detail = f"{len(missing)} missing, {len(unexpected)} unexpected, {len(shapes)} differently shaped tensors"
        example = (missing or unexpected or shapes or [""])[0]
        raise BundleError(
            f"{source} does not fit this {type(module).__name__} ({detail}{', e.g. ' + example if example else ''}); "
            f"{_origin(Path(source), state)}: build the network with those settings (--operator, ...) or pass the "
            f"checkpoint made for this one (--ckpt_path)"
        ) from err


def check_checkpoint(path: str | os.PathLike, network: torch.nn.Module | None = None, what: str = "model") -> str:
    """Read ``path`` (and load it into ``network`` when given) before an engine starts, so that a missing, corrupt
    or mismatched file fails with its name (MONAI's ``CheckpointLoader`` reports neither).

    Returns:
        ``path`` as a string.
    """
    file = Path(path)
    if not file.is_file():
        raise BundleError(
            f"{what} {file} does not exist: train one (python -m monai.bundle run training --config_file "
            f"configs/train.json publishes models/model.pt) or pass --ckpt_path <file>"
        )
    state = load_checkpoint(file, what=what)
    if network is not None:
        load_weights(network, state, file)
    return str(file)


# -- random number generators ---------------------------------------------------------------------------------------


def _randomizables(engine: Any) -> list[Any]:
    from monai.transforms import Randomizable

    loader = getattr(engine, "data_loader", None)
    root = getattr(getattr(loader, "dataset", None), "transform", None)
    found, stack, seen = [], [root], set()
    while stack:
        node = stack.pop(0)
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, Randomizable) and isinstance(getattr(node, "R", None), np.random.RandomState):
            found.append(node)
        stack.extend(getattr(node, "transforms", None) or [])
    return found


def _np_state(state: tuple) -> dict[str, Any]:
    return {"name": state[0], "keys": torch.from_numpy(np.asarray(state[1], dtype=np.int64)), "pos": int(state[2]),
            "has_gauss": int(state[3]), "cached": float(state[4])}


def _np_tuple(d: Mapping[str, Any]) -> tuple:
    return (d["name"], d["keys"].numpy().astype(np.uint32), d["pos"], d["has_gauss"], d["cached"])


def capture_rng_state(engine: Any = None) -> dict[str, Any]:
    """Every random generator a training run draws from, as tensors and plain values (``weights_only`` loads it).

    Python ``random``, NumPy's global generator, torch's CPU generator (which also seeds the ``DataLoader``
    shuffling and its workers), every CUDA device's generator, and the ``R`` generator of each randomised MONAI
    transform in ``engine.data_loader.dataset.transform``.
    """
    py = random.getstate()
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": _np_state(np.random.get_state()),
        "torch": torch.get_rng_state(),
        "transforms": [_np_state(t.R.get_state()) for t in _randomizables(engine)] if engine is not None else [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any] | None, engine: Any = None) -> bool:
    """Put back what :func:`capture_rng_state` saved; the transforms must be the same (same config).

    Returns:
        False when ``state`` is None or the transforms differ in number (nothing or only the global generators are
        restored, with a warning), True otherwise.
    """
    if not state:
        return False
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np.random.set_state(_np_tuple(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = list(state["cuda"])
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            logger.warning("CUDA generators not restored: %d saved, %d devices now", len(cuda), torch.cuda.device_count())
    transforms = _randomizables(engine) if engine is not None else []
    saved = list(state.get("transforms", []))
    if len(saved) != len(transforms):
        logger.warning("random transform states not restored: %d saved, %d now", len(saved), len(transforms))
        return False
    for transform, t_state in zip(transforms, saved):
        transform.R.set_state(_np_tuple(t_state))
    return True


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
