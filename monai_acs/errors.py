"""The project's user-facing error and the early checks of a bundle command line.

MONAI's config parser wraps every error raised inside a ``$`` expression in ``RuntimeError("Failed to evaluate
...")``, so a user sees the project's message 20-35 lines into a long traceback and the wrapper as the last line.
:func:`install_excepthook` makes the project's message the last line printed; :func:`check_command_line` and
:func:`check_schedule` run in a bundle's ``initialize`` step, before any data is generated or network pretrained.
"""

from __future__ import annotations

import difflib
import json
import math
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["BundleError", "RunFolderError", "check_command_line", "check_schedule", "format_exception_line", "install_excepthook", "user_message"]

_PACKAGE_DIR = str(Path(__file__).resolve().parent)

# the arguments of ``python -m monai.bundle run`` itself (monai.bundle.scripts.run), not config keys
_RUN_ARGUMENTS = frozenset(
    {"run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking", "args_file"}
)
_WRAPPERS = ("Failed to evaluate", "applying transform")


class BundleError(ValueError):
    """A bad input, setting or file, said in one line: what was wrong, where, what was expected, how to fix it.

    Raised by the bundles' checks (:mod:`monai_acs.workflows.checks`, :mod:`monai_acs.workflows.runs`). Its message
    is the last line a ``python -m monai.bundle`` command prints once :func:`install_excepthook` is active.

    Examples:
        >>> str(BundleError("image a.nii.gz holds NaN values; expected finite intensities"))
        'image a.nii.gz holds NaN values; expected finite intensities'
    """


class RunFolderError(BundleError, FileExistsError):
    """A run folder that belongs to another run or another process (also a ``FileExistsError``)."""


def _chain(exc: BaseException) -> list[BaseException]:
    seen, out = set(), []
    err: BaseException | None = exc
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        out.append(err)
        err = err.__cause__ or err.__context__
    return out


def _raised_in_package(err: BaseException) -> bool:
    tb = err.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    return last is not None and str(Path(last.tb_frame.f_code.co_filename).resolve()).startswith(_PACKAGE_DIR)


def user_message(exc: BaseException) -> str | None:
    """The one-line message to show for ``exc``: the innermost :class:`BundleError` in its chain, else the innermost
    error raised by this package's code (not MONAI's "Failed to evaluate" / "applying transform" wrappers).

    Returns:
        ``"<Type>: <message on one line>"``, or None when no error of the chain comes from this package.

    Examples:
        >>> try:
        ...     try:
        ...         raise BundleError("bad\\n  thing")
        ...     except BundleError as err:
        ...         raise RuntimeError("Failed to evaluate ...") from err
        ... except RuntimeError as outer:
        ...     print(user_message(outer))
        BundleError: bad thing
    """
    chain = _chain(exc)
    ours = [e for e in chain if isinstance(e, BundleError)]
    if not ours:
        ours = [e for e in chain if _raised_in_package(e) and not str(e).startswith(_WRAPPERS)]
    if not ours:
        return None
    err = ours[-1]
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


_previous_hook = None


def _excepthook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    hook = _previous_hook if _previous_hook is not None else sys.__excepthook__
    hook(kind, value, tb)
    try:
        line = user_message(value)
    except Exception:  # noqa: BLE001 - never hide the original error behind a failure of this hook
        line = None
    if line is not None:
        sys.stderr.flush()
        print(f"\nerror: {line}", file=sys.stderr, flush=True)


def install_excepthook() -> None:
    """Print, after the usual traceback of an uncaught error, the project's own message as the last line.

    Idempotent. The traceback itself is printed unchanged (by the previous hook), so nothing is lost for debugging.
    """
    global _previous_hook
    if sys.excepthook is not _excepthook:
        _previous_hook = sys.excepthook
        sys.excepthook = _excepthook


def _is_bundle_run(argv: Sequence[str]) -> bool:
    return len(argv) >= 2 and Path(argv[0]).parts[-2:] == ("bundle", "__main__.py") and argv[1] == "run"


def _overrides_from_argv(argv: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """``--key value`` / ``--key=value`` / ``--flag`` pairs after the command, and the positional arguments."""
    overrides: dict[str, Any] = {}
    positional: list[str] = []
    i = 2
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--") and len(arg) > 2:
            key, eq, value = arg[2:].partition("=")
            if not eq:
                if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                    value, i = argv[i + 1], i + 1
                else:
                    value = "true"
            overrides[key] = value
        else:
            positional.append(arg)
        i += 1
    return overrides, positional


def _config_files(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    text = str(value).strip()
    if text.startswith("["):  # fire passes lists as "['a.json', 'b.json']"
        return [v.strip(" '\"") for v in text.strip("[]").split(",") if v.strip(" '\"")]
    return [text]


def _has_path(config: Any, path: list[str]) -> bool:
    node = config
    for part in path:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def check_command_line(argv: Sequence[str] | None = None) -> None:
    """Refuse ``python -m monai.bundle run`` overrides that name no key of the configs, with a "did you mean".

    ``--epoch 7`` (for ``--epochs``) would otherwise add an unused key and silently train the default. A new key is
    accepted when it is an expression or reference (``$...``, ``@...``, ``%...``: a user adding a component) or is
    named by ``--run_id`` / ``--init_id`` / ``--final_id``. Also installs :func:`install_excepthook`. Does nothing
    outside a ``monai.bundle run`` command line (a config parsed from Python, other ``monai.bundle`` commands).

    Args:
        argv: the command line. Default ``sys.argv``.

    Raises:
        BundleError: an unknown key, naming the config files, the closest keys and how to list them.
    """
    install_excepthook()
    argv = list(sys.argv if argv is None else argv)
    if not _is_bundle_run(argv):
        return
    overrides, positional = _overrides_from_argv(argv)
    if "args_file" in overrides:
        try:
            extra = json.loads(Path(overrides["args_file"]).read_text())
        except (OSError, ValueError):
            extra = {}  # MONAI reads YAML too and reports unreadable files itself
        overrides = {**{k: v for k, v in extra.items()}, **overrides} if isinstance(extra, dict) else overrides
    files = _config_files(overrides.get("config_file", []))
    if not files:
        return
    from monai.bundle import ConfigParser

    config = ConfigParser.load_config_files(files)
    named = {str(overrides.get(k)) for k in ("run_id", "init_id", "final_id") if k in overrides} | set(positional)
    named |= _tracking_keys(overrides.get("tracking"))
    top = [str(k) for k in config]
    for key, value in overrides.items():
        if key in _RUN_ARGUMENTS or key in named or _has_path(config, key.split("#")):
            continue
        if str(value).lstrip().startswith(("$", "@", "%")):
            continue
        close = difflib.get_close_matches(key.split("#")[0], top, n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join('--' + c for c in close)}? " if close else ""
        names = ", ".join(Path(f).name for f in files)
        raise BundleError(
            f"unknown setting --{key} {value}: no key {key!r} in {names}; {hint}the keys are the top-level entries of "
            f"the config files (e.g. --epochs, --learning_rate); fix the spelling or drop the option"
        )


def _tracking_keys(tracking: Any) -> set[str]:
    """The config keys that ``--tracking`` adds (``tracking_uri``, ``experiment_name``, ``output_dir`` ...), which a
    command line may override: MONAI's settings for a name such as ``mlflow``, or the ``configs`` of a settings file."""
    if tracking is None:
        return set()
    from monai.bundle.utils import DEFAULT_EXP_MGMT_SETTINGS

    settings = tracking if isinstance(tracking, Mapping) else DEFAULT_EXP_MGMT_SETTINGS.get(str(tracking))
    if settings is None:
        try:
            from monai.bundle import ConfigParser

            settings = ConfigParser.load_config_file(str(tracking))
        except Exception:  # noqa: BLE001 - MONAI reports an unreadable tracking file itself
            return set()
    configs = settings.get("configs", {}) if isinstance(settings, Mapping) else {}
    return {str(k) for k in configs} if isinstance(configs, Mapping) else set()


def _whole_number(value: Any, name: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not math.isfinite(number) or number != int(number):
        raise BundleError(f"--{name} must be a whole number, got {value!r}")
    return int(number)


def check_schedule(epochs: Any, val_interval: Any = None) -> int:
    """Refuse a training length that cannot produce a model, before any data or pretraining is made.

    Args:
        epochs: ``--epochs``: at least 1.
        val_interval: ``--val_interval``: at least 1 and at most ``epochs`` (else validation never runs and no
            best model is written). Default None (not checked).

    Returns:
        ``epochs`` as an int.

    Raises:
        BundleError: naming the setting, the value and what is allowed.

    Examples:
        >>> check_schedule(10, 2)
        10
        >>> try:
        ...     check_schedule(2, 5)
        ... except BundleError as err:
        ...     print(err)
        --val_interval 5 is larger than --epochs 2: validation would never run and no model_best.pt would be written; use --val_interval 2 or less
    """
    n = _whole_number(epochs, "epochs")
    if n < 1:
        raise BundleError(f"--epochs must be 1 or more, got {epochs!r}; pass the number of training epochs")
    if val_interval is not None:
        v = _whole_number(val_interval, "val_interval")
        if v < 1:
            raise BundleError(f"--val_interval must be 1 or more, got {val_interval!r}")
        if v > n:
            raise BundleError(
                f"--val_interval {v} is larger than --epochs {n}: validation would never run and no model_best.pt "
                f"would be written; use --val_interval {n} or less"
            )
    return n


def format_exception_line(exc: BaseException) -> str:
    """``Type: message`` of ``exc`` on one line (for logs and CSV status columns)."""
    return user_message(exc) or "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()[-1]
