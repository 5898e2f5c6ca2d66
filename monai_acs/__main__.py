"""Command line: ``python -m monai_acs convert ...`` and ``python -m monai_acs operators``."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .convert import convert_to_3d
from .layers import get_operator, list_operators

__all__ = ["build_2d_model", "convert", "operators", "save_atomic", "main"]


def build_2d_model(model: str, model_kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Build a 2D model from a spec.

    Args:
        model: ``torchvision:<name>`` (any name of ``torchvision.models.list_models()``), ``monai:<NetName>`` (a class
            of ``monai.networks.nets``, built with ``spatial_dims=2``), or ``<python.module>:<callable>``.
        model_kwargs: keyword arguments for the builder. Default none.

    Returns:
        The 2D model, randomly initialised.

    Raises:
        ValueError: a malformed spec or unknown name.
    """
    kwargs = dict(model_kwargs or {})
    source, sep, name = model.partition(":")
    if not sep or not name:
        raise ValueError(f"--model must look like 'torchvision:resnet50', 'monai:UNet' or 'pkg.module:fn', got {model!r}")
    if source == "torchvision":
        import torchvision

        if name not in torchvision.models.list_models():
            raise ValueError(f"unknown torchvision model {name!r}; see torchvision.models.list_models()")
        return torchvision.models.get_model(name, weights=None, **kwargs)
    if source == "monai":
        import monai.networks.nets as nets

        if not hasattr(nets, name):
            raise ValueError(f"monai.networks.nets has no {name!r}")
        kwargs.setdefault("spatial_dims", 2)
        return getattr(nets, name)(**kwargs)
    builder = getattr(importlib.import_module(source), name)
    return builder(**kwargs)


def save_atomic(obj: Any, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename: a crash never leaves half a file.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass --overwrite to replace it")
    from .workflows.runs import save_atomic as _save_atomic  # the one atomic writer

    return _save_atomic(obj, target)


def convert(
    model: str,
    operator: str = "acs",
    weights: str | None = None,
    out: str = "model3d.pt",
    keep_depth: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    check_shape: tuple[int, ...] | None = None,
    overwrite: bool = False,
    **operator_options: Any,
) -> str:
    """Convert a 2D model to 3D and save its state dict plus a JSON of how it was built.

    Args:
        model: model spec, see :func:`build_2d_model` (``torchvision:resnet50``).
        operator: fusion operator key (``python -m monai_acs operators`` lists them). Default ``acs``.
        weights: 2D weights: a file or a torchvision weights name (``ResNet50_Weights.IMAGENET1K_V2``). Default none.
        out: output state-dict path; ``<out>.json`` records the build. Default ``model3d.pt``.
        keep_depth: never stride / pool along depth. Default False.
        model_kwargs: builder keyword arguments, e.g. ``'{"num_classes": 2}'``.
        check_shape: optional input shape (N, C, D, H, W) to run one forward pass as a check.
        overwrite: replace existing output files. Default False.
        **operator_options: operator options such as ``--depth 7`` for a3d.

    Returns:
        A one-line summary.
    """
    net2d = build_2d_model(model, model_kwargs)
    net3d = convert_to_3d(net2d, operator, weights=weights, keep_depth=keep_depth, **operator_options)
    info: dict[str, Any] = {
        "model": model,
        "model_kwargs": model_kwargs or {},
        "operator": operator,
        "operator_options": operator_options,
        "keep_depth": keep_depth,
        "weights": weights,
        "parameters": sum(p.numel() for p in net3d.parameters()),
        "monai_acs": __version__,
        "torch": torch.__version__,
    }
    if check_shape is not None:
        net3d.eval()
        with torch.no_grad():
            output = net3d(torch.randn(*[int(s) for s in check_shape]))
        if isinstance(output, dict):
            output = output["out"]
        info["check"] = {"input": list(check_shape), "output": list(output.shape)}
    target = save_atomic(net3d.state_dict(), out, overwrite=overwrite)
    save_atomic(json.dumps(info, indent=2) + "\n", f"{target}.json", overwrite=overwrite)
    return f"saved {info['parameters']:,} parameters of {model} ({operator}) to {target} (+ {target}.json)"


def operators() -> str:
    """List the fusion operators with their parameter / FLOP overhead over no fusion (A3D paper Table 1)."""
    rows = [("operator", "layer", "params", "FLOPs", "what it does")]
    for name in list_operators():
        spec = get_operator(name)
        rows.append((name, spec.layer.__name__, spec.params_overhead, spec.flops_overhead, spec.summary))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4] for row in rows]
    notes = "Overheads are relative to no fusion (Co Ci K^2 parameters, D H W Co Ci K^2 multiply-adds)."
    return "\n".join(lines + ["", notes])


def main() -> None:
    """Entry point of ``python -m monai_acs`` / ``monai-acs``."""
    import fire

    fire.Fire({"convert": convert, "operators": operators})


if __name__ == "__main__":
    main()
