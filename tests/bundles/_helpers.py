"""Shared helpers of the bundle tests: paths, tiny overrides, and the ``python -m monai.bundle`` command line.

:func:`bundle_command` runs a command in a subprocess exactly as a user types it. On the 2 shared CI cores most of a
command's cost is importing torch and MONAI (about 10 s of CPU each time), so the tests start their subprocesses
together in a small thread pool (:class:`CommandPool`, one torch thread per subprocess) and run the commands that
only have to fail, or only check a file, with :func:`bundle_in_process`: the same argument list parsed by the same
``fire`` entry point as ``python -m monai.bundle``, in the test process.
"""

from __future__ import annotations

import importlib
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO.parent / "shared" / "schemas"
META_SCHEMA = SCHEMAS / "meta_schema_20240725.json"
POC = REPO / "bundles" / "synthetic_poc_acs"

TINY_NET = {"channels": [4, 8], "strides": [2], "size": 16}
"""The smallest PoC network and volume: one down-sampling, 16^3 voxels."""

TINY_TRAIN = {
    **TINY_NET,
    "n_2d": 32,
    "n_3d_train": 2,
    "n_3d_val": 2,
    "epochs": 1,
    "val_interval": 1,
    "pretrain_epochs": 1,
    "batch_size": 2,
}
"""Tiny settings of the PoC train.json (and evaluate.json layered over it)."""

TINY_INFER = {**TINY_NET, "roi_size": [16, 16, 16]}
"""Tiny settings of the PoC inference.json."""

COMMAND_TIMEOUT_S = 600


def cli_args(overrides: dict[str, Any]) -> list[str]:
    """``{"epochs": 1, "channels": [4, 8]}`` -> ``["--epochs", "1", "--channels", "[4,8]"]`` (fire syntax)."""
    args = []
    for key, value in overrides.items():
        if isinstance(value, (list, tuple)):
            text = "[" + ",".join(repr(v) if isinstance(v, str) else str(v) for v in value) + "]"
        elif isinstance(value, bool):
            text = str(value).lower()
        else:
            text = str(value)
        args += [f"--{key}", text]
    return args


def config_list(*files: str | os.PathLike) -> str:
    """The ``--config_file`` value for several layered configs: ``"['a.json','b.json']"``."""
    return "[" + ",".join(f"'{f}'" for f in files) + "]"


@dataclass
class Result:
    """What a command did: its arguments, exit status and combined stdout + stderr."""

    args: list[str]
    returncode: int
    output: str

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.output.splitlines()[-n:])

    def check(self) -> Result:
        """Assert success, showing the end of the output otherwise."""
        assert self.returncode == 0, f"{' '.join(self.args)}\nexited {self.returncode}:\n{self.tail()}"
        return self

    def check_fails(self, *needles: str) -> Result:
        """Assert failure with every one of ``needles`` in the output."""
        assert self.returncode != 0, f"{' '.join(self.args)} should have failed:\n{self.tail()}"
        missing = [n for n in needles if n not in self.output]
        assert not missing, f"{missing} not in the output of {' '.join(self.args)}:\n{self.tail(80)}"
        return self


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of the commands: one thread each, no colour codes, unbuffered output, plus ``extra``."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", NO_COLOR="1")
    env.update(extra or {})
    return env


def run_command(
    args: Sequence[Any],
    cwd: str | os.PathLike = REPO,
    timeout: float = COMMAND_TIMEOUT_S,
    env: dict[str, str] | None = None,
) -> Result:
    """Run a command to completion and capture its output (``env``: variables added to :func:`subprocess_env`)."""
    args = [str(a) for a in args]
    proc = subprocess.run(
        args, check=False, cwd=str(cwd), env=subprocess_env(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, encoding="utf-8", errors="replace", timeout=timeout,
    )
    return Result(args, proc.returncode, proc.stdout)


def bundle_command(*args: Any, cwd: str | os.PathLike = REPO, env: dict[str, str] | None = None,
                   timeout: float = COMMAND_TIMEOUT_S) -> Result:
    """``python -m monai.bundle <args>`` with this interpreter."""
    return run_command([sys.executable, "-m", "monai.bundle", *args], cwd=cwd, timeout=timeout, env=env)


def bundle_in_process(*args: Any, cwd: str | os.PathLike | None = None) -> Any:
    """Run ``python -m monai.bundle <args>`` inside this process and return what the command returns.

    ``sys.argv`` (which ``monai_acs.errors.check_command_line`` reads), the working folder, ``sys.path`` and the
    root logger (which the bundle's logging.conf sets up) are restored afterwards. Exceptions propagate.
    """
    import fire

    cli = importlib.import_module("monai.bundle.__main__")  # the module `python -m monai.bundle` runs
    argv = [str(a) for a in args]
    root = logging.getLogger()
    saved = (sys.argv, list(sys.path), os.getcwd(), root.level, list(root.handlers))
    sys.argv = [cli.__file__, *argv]
    try:
        if cwd is not None:
            os.chdir(cwd)
        return fire.Fire(cli, command=argv, name="monai.bundle")
    finally:
        sys.argv, sys.path[:] = saved[0], saved[1]
        os.chdir(saved[2])
        root.setLevel(saved[3])
        root.handlers[:] = saved[4]


def messages(err: BaseException | None) -> str:
    """The messages of an exception and of every exception it was raised from, one per line."""
    seen, parts = set(), []
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        parts.append(f"{type(err).__name__}: {err}")
        err = err.__cause__ or err.__context__
    return "\n".join(parts)


class CommandPool:
    """Run test commands concurrently (at most ``workers`` at a time) and hand back their futures."""

    def __init__(self, workers: int = 3) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bundle-cli")
        self.futures: dict[str, Future] = {}

    def submit(self, name: str, fn: Callable[[], Any], after: Sequence[str] = ()) -> Future:
        """Start ``fn`` once the jobs named in ``after`` have finished (their errors propagate to this job)."""
        waits = [self.futures[n] for n in after]

        def job() -> Any:
            for w in waits:
                w.result()
            return fn()

        self.futures[name] = self._pool.submit(job)
        return self.futures[name]

    def __getitem__(self, name: str) -> Any:
        return self.futures[name].result(timeout=2 * COMMAND_TIMEOUT_S)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def snapshot(folder: Path, recursive: bool = True) -> set[str]:
    """Relative paths of everything under ``folder`` (only its direct entries when not recursive)."""
    entries = folder.rglob("*") if recursive else folder.iterdir()
    return {p.relative_to(folder).as_posix() for p in entries}


def file_states(folder: Path) -> dict[str, tuple[int, int]]:
    """``{relative path: (size, mtime_ns)}`` of every file under ``folder`` but lock files: equal before and after a
    refused command means it changed nothing there."""
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file() and p.name not in (".lock", ".publish.lock")}
