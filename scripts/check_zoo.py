"""Convert the 74 torchvision CNNs to 3D with every fusion operator and print ``converted N/74`` per operator.

Each model (68 classification CNNs of ``torchvision.models.list_models`` without ViT / Swin / MaxViT, plus the 6
segmentation models; randomly initialised, nothing downloaded) is converted, run forward and backward in train mode
on a batch of 2 cubes (``monai_acs.convert.zoo.ZOO_INPUT_SIZE``: the smallest that survives the model's strides,
torchvision's declared ``min_size`` but at least 16 voxels), and
must give a (N, classes) or 5-D segmentation output and a gradient for every parameter. ``a3d`` is converted with
``keep_depth=True, depth=D`` and fed D slices.

Usage (from the repository root; the full sweep takes hours on 2 cores):

    python scripts/check_zoo.py                                   # every operator, every model
    python scripts/check_zoo.py --operators acs,i3d --models resnet18,mnasnet0_5
    python scripts/check_zoo.py --operators a3d --depth 7 --size 48
    python scripts/check_zoo.py --sweep timm,monai,torchvision    # the registry sweeps (monai_acs.convert.sweeps)
    python scripts/check_zoo.py --sweep timm --operators acs --models convnext,resnest

``--sweep`` checks the timm CNN families (smallest model each), MONAI's 2D CNNs and torchvision's segmentation
models and FPN backbones with ``monai_acs.convert.sweeps.check_named``: forward + backward, gradients, state-dict
keys and strict round trip, and the 2.5D invariant oracle; it prints one Markdown table row per entry
(``| source | entry | model | operator | result | reason |``) and a summary per source.
"""

from __future__ import annotations

import gc
import multiprocessing
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import fire
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from monai_acs.convert.zoo import ZooResult, check_torchvision_model, torchvision_cnn_names
from monai_acs.layers import list_operators


def _child(connection: Any, check: Any, args: tuple, kwargs: dict[str, Any]) -> None:
    torch.manual_seed(0)
    connection.send(check(*args, **kwargs))
    connection.close()


def _in_fork(check: Any, *args: Any, **kwargs: Any) -> tuple[Any, int | None]:
    """``check(*args, **kwargs)`` in a forked process, so that a model killed for memory (P3D on RegNetY-128GF adds
    1.1 billion parameters) is reported instead of ending the sweep. The parent never runs torch ops, so forking is
    safe. Returns the result (None when the child died first) and the child's exit code."""
    receiver, sender = multiprocessing.Pipe(duplex=False)
    process = multiprocessing.get_context("fork").Process(target=_child, args=(sender, check, args, kwargs))
    process.start()
    sender.close()
    try:
        result = receiver.recv()
    except EOFError:
        result = None
    process.join()
    return result, process.exitcode


def _run_isolated(name: str, operator: str, options: dict[str, Any]) -> ZooResult:
    start = time.perf_counter()
    result, exitcode = _in_fork(check_torchvision_model, name, operator, **options)
    if result is None:
        signal_note = f"killed by signal {-exitcode}" if (exitcode or 0) < 0 else "no result"
        hint = " (out of memory?)" if exitcode == -9 else ""
        return ZooResult(name, operator, False, seconds=time.perf_counter() - start, error=f"{signal_note}{hint}")
    return result


def _sweep_isolated(source: str, name: str, operator: str) -> Any:
    from monai_acs.convert.sweeps import SweepResult, check_named

    start = time.perf_counter()
    result, _ = _in_fork(check_named, source, name, operator)
    if result is None:
        result = SweepResult(source, name, operator, "fail", time.perf_counter() - start, "no result (out of memory?)")
    return result


def run_sweeps(sources: list[str], operators: list[str], models: list[str] | None) -> None:
    """Print the registry sweeps as a Markdown table, then ``<source> <operator>: pass P, refused R, fail F / N``."""
    from monai_acs.convert.sweeps import TIMM_FAMILIES, sweep_names

    print("| source | entry | model | operator | result | reason |\n|---|---|---|---|---|---|", flush=True)
    summary = []
    for source in sources:
        names = [n for n in sweep_names(source) if models is None or n in models]
        for operator in operators:
            counts = {"pass": 0, "refused": 0, "fail": 0}
            for name in names:
                result = _sweep_isolated(source, name, operator)
                counts[result.status] += 1
                model = TIMM_FAMILIES[name][0] if source == "timm" else name
                reason = result.reason.replace("|", "/")[:220]
                print(f"| {source} | {name} | {model} | {operator} | {result.status} | {reason} |", flush=True)
            summary.append(
                f"{source} {operator}: pass {counts['pass']}, refused {counts['refused']}, fail {counts['fail']} "
                f"/ {len(names)}"
            )
    print("\n".join(["summary:", *summary]), flush=True)


def _as_list(value: str | list | tuple | None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def main(
    operators: str | list[str] = "all",
    models: str | list[str] | None = None,
    size: int | None = None,
    depth: int = 3,
    batch: int = 2,
    threads: int = 2,
    quiet: bool = False,
    isolate: bool = True,
    sweep: str | list[str] | None = None,
) -> None:
    """Run the sweep and print one line per model, then ``<operator>: converted N/M`` and the failures.

    Args:
        operators: ``"all"`` (every registered operator) or a comma-separated list. Default ``"all"``.
        models: comma-separated torchvision names (default: all 74).
        size: cube edge for every model instead of the per-model sizes. Default None.
        depth: slices for ``a3d`` (converted with ``keep_depth=True``). Default 3.
        batch: batch size (>= 2 so train-mode BatchNorm sees 2 values on 1x1x1 maps). Default 2.
        threads: torch CPU threads. Default 2.
        quiet: print only the summary. Default False.
        isolate: run every check in a forked process (a model killed for memory is reported, not fatal). Default True.
        sweep: run the registry sweeps instead: comma-separated ``timm``, ``monai``, ``torchvision``
            (``--operators`` default there: ``acs``; ``--models``: entry names). Default None.
    """
    torch.set_num_threads(threads)
    warnings.simplefilter("ignore")
    if sweep is not None:
        ops = ["acs"] if operators == "all" else _as_list(operators)
        run_sweeps(_as_list(sweep), ops, _as_list(models))
        return
    names = torchvision_cnn_names()
    chosen = _as_list(models)
    if chosen is not None:
        unknown = sorted(set(chosen) - set(names))
        if unknown:
            raise ValueError(f"not zoo models: {unknown}; the zoo is {names}")
        names = [n for n in names if n in chosen]
    ops = list_operators() if operators == "all" else _as_list(operators)
    summary = []
    for operator in ops:
        failures = []
        for name in names:
            options = {"batch": batch, "depth": depth, "size": size}
            if isolate:
                result = _run_isolated(name, operator, options)
            else:
                torch.manual_seed(0)
                result = check_torchvision_model(name, operator, **options)
            if not quiet:
                status = f"ok {result.output_shape}" if result.ok else f"FAIL {result.error}"
                print(f"{operator} {name} {status} {result.seconds:.1f}s", flush=True)
            if not result.ok:
                failures.append(result)
            gc.collect()
        line = f"{operator}: converted {len(names) - len(failures)}/{len(names)}"
        summary.append(line)
        print(line, flush=True)
        for failure in failures:
            print(f"  {failure.name}: {failure.error}", flush=True)
    print("\n".join(["summary:", *summary]), flush=True)


if __name__ == "__main__":
    fire.Fire(main)
