"""Checkpoints of the bundles: the one atomic writer, reading checkpoints and weights with errors that name the file,
cleaning what killed saves left, and the random-generator state a resumed run restores."""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import BundleError

__all__ = [
    "capture_rng_state",
    "check_checkpoint",
    "clean_orphans",
    "load_checkpoint",
    "load_weights",
    "restore_rng_state",
    "save_atomic",
]

logger = logging.getLogger(__name__)

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


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` (or write text for ``str``, the bytes of ``bytes``) into a temporary file in the same folder, then rename it.

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
        elif isinstance(obj, bytes):
            Path(tmp).write_bytes(obj)
        else:
            torch.save(obj, tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; a saved file gets the permissions open() gives
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


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
