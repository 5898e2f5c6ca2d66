"""Folder ownership: a run folder belongs to one live process (an ``flock`` the operating system drops when the process
ends, however it ends), and publishers of one models folder take turns."""

from __future__ import annotations

import datetime
import os
import socket
from pathlib import Path

from ..errors import RunFolderError

try:
    import fcntl
except ImportError:  # Windows: folders are not locked
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILE", "flock_blocking", "funlock", "lock_folder", "release_folder"]

LOCK_FILE = ".lock"

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


def flock_blocking(path: Path) -> int:
    """Open ``path`` and wait for an exclusive ``flock`` on it; returns the descriptor (give it to :func:`funlock`)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def funlock(fd: int) -> None:
    """Release and close a descriptor from :func:`flock_blocking`."""
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
