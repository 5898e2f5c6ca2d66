"""``convert_to_3d``: any 2D CNN, with its 2D weights, as a natively 3D network."""

from __future__ import annotations

import copy
import warnings
from typing import Any

from torch import fx, nn

from ..layers import get_operator
from .graph import ConvertedGraphModule, leftover_2d_nodes, rewrite_graph, trace_2d, warn_untraced
from .rules import LEFTOVER_2D_MODULES, MODULE_RULES, ConvertContext
from .weights import load_2d_weights

__all__ = ["convert_to_3d", "find_leftover_2d"]


def _replace_child(root: nn.Module, qualified_name: str, new: nn.Module) -> None:
    parent_name, _, child = qualified_name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def _swap_modules(root: nn.Module, ctx: ConvertContext, prefix: str = "") -> None:
    """Replace every rule-table module below ``root`` (itself excluded) by its 3D counterpart."""
    for name, module in list(root.named_modules()):
        if name and type(module) in MODULE_RULES:
            where = f"{prefix}{name}"
            try:
                new = MODULE_RULES[type(module)](module, ctx)
            except (NotImplementedError, ValueError, TypeError) as error:
                raise type(error)(f"cannot convert '{where}' ({type(module).__name__}): {error}") from error
            _replace_child(root, name, new)


def _convert_traced(model: nn.Module, ctx: ConvertContext) -> ConvertedGraphModule:
    train_graph, eval_graph = trace_2d(model)
    gm = ConvertedGraphModule(model, train_graph, eval_graph, class_name=type(model).__name__)
    for graph in (train_graph, eval_graph):
        if graph is not None:
            rewrite_graph(gm, graph, ctx)
    _swap_modules(gm, ctx)
    gm.train(model.training)
    gm.graph = gm._train_graph if model.training or eval_graph is None else eval_graph
    return gm


def _convert_tree(module: nn.Module, ctx: ConvertContext, prefix: str, untraced: list[str]) -> nn.Module:
    """Convert ``module``: trace it if possible, else convert its children one by one."""
    if type(module) in MODULE_RULES:
        return MODULE_RULES[type(module)](module, ctx)
    try:
        return _convert_traced(module, ctx)
    except NotImplementedError:
        raise
    except Exception:  # noqa: BLE001 - any tracing failure: fall back to the children
        untraced.append(prefix.rstrip(".") or type(module).__name__)
    for name, child in list(module.named_children()):
        setattr(module, name, _convert_tree(child, ctx, f"{prefix}{name}.", untraced))
    return module


def find_leftover_2d(model: nn.Module) -> list[str]:
    """List what in a converted model is still 2D: modules by qualified name and traced functional calls."""
    found = []
    for name, module in model.named_modules():
        if isinstance(module, LEFTOVER_2D_MODULES):
            found.append(f"{name or '<root>'}: {type(module).__name__}")
        elif isinstance(module, nn.Upsample) and module.mode in ("bilinear", "bicubic"):
            found.append(f"{name or '<root>'}: Upsample(mode={module.mode!r})")
        if isinstance(module, ConvertedGraphModule):
            graphs = [module._train_graph] + ([module._eval_graph] if module._eval_graph is not None else [])
            for graph in graphs:
                found += [f"{name + '.' if name else ''}{item}" for item in leftover_2d_nodes(graph)]
        elif type(module).__name__ == "LayerNorm2d":
            found.append(f"{name or '<root>'}: {type(module).__name__}")
    return sorted(set(found))


def convert_to_3d(
    model: nn.Module,
    operator: str = "acs",
    *,
    weights: Any = None,
    inplace: bool = False,
    strict: bool = True,
    keep_depth: bool = False,
    **operator_options: Any,
) -> nn.Module:
    """Convert a 2D CNN, with its 2D weights, into a natively 3D network.

    Modules are swapped through an exact-type rule table (convolutions by the chosen fusion operator, norms,
    pools, upsampling, dropout, padding), and the forward is traced with ``torch.fx`` so that functional calls and
    shape arithmetic (``x.shape[-2:]``, bilinear ``F.interpolate``, ``x.mean([2, 3])``, channels-last permutes,
    ``x.size()`` unpacking) are rewritten for (N, C, D, H, W) tensors. Models whose forward cannot be traced are
    converted child by child (with a warning naming them).

    Args:
        model: the 2D network (torchvision, MONAI ``spatial_dims=2``, or your own).
        operator: registry key: ``"acs"`` (default), ``"mean_acs"``, ``"soft_acs"``, ``"conv2p5d"``, ``"i3d"``,
            ``"p3d"``, ``"tsm"``, ``"a3d"`` (see :func:`monai_acs.list_operators`).
        weights: 2D weights loaded into the 2D model before conversion: a state dict, a file, a torchvision
            weights enum or its name (``"ResNet18_Weights.IMAGENET1K_V1"``, read from torchvision's cache).
            The converted model's parameters keep the 2D names (and, except I3D/P3D/A3D extras, shapes).
        inplace: convert ``model`` itself instead of a deep copy. Default False.
        strict: raise if any 2D op is left after conversion; False only warns. Default True.
        keep_depth: strides and pooling never act along depth, and convolutions keep the depth
            (few-slice inputs, A3D paper Sec. 2.3). Default False. Required for ``"a3d"``.
        **operator_options: passed to every layer's ``from_conv2d``, e.g. ``depth=7`` for ``"a3d"``.

    Returns:
        The converted ``nn.Module`` (a ``torch.fx`` graph module when the model could be traced).

    Raises:
        ValueError: unknown operator (naming the closest key), bad weights, ``a3d`` without ``keep_depth``/``depth``,
            or 2D ops left with ``strict=True`` (listed by qualified name).
        NotImplementedError: a construct that has no 3D meaning (e.g. a fixed 2D interpolation size).

    Examples:
        >>> import torch, torchvision
        >>> net = convert_to_3d(torchvision.models.resnet18(num_classes=2), "acs")
        >>> net(torch.randn(1, 3, 16, 32, 32)).shape
        torch.Size([1, 2])
    """
    spec = get_operator(operator)
    if spec.name == "a3d":
        if not keep_depth:
            raise ValueError("operator 'a3d' needs a fixed depth at every layer: pass keep_depth=True (and depth=D)")
        if "depth" not in operator_options:
            raise ValueError("operator 'a3d' needs the input depth: pass depth=D, e.g. depth=7 for 7-slice inputs")
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert_to_3d expects an nn.Module, got {type(model).__name__}")
    model2d = model if inplace else copy.deepcopy(model)
    if weights is not None:
        load_2d_weights(model2d, weights)
    ctx = ConvertContext(spec=spec, keep_depth=keep_depth, options=dict(operator_options))
    untraced: list[str] = []
    converted = _convert_tree(model2d, ctx, "", untraced)
    warn_untraced(untraced)
    for name, module in converted.named_modules():
        if hasattr(module, "source_name"):
            module.source_name = name
    leftovers = find_leftover_2d(converted)
    if leftovers:
        message = f"2D operations left after converting {type(model).__name__} to 3D: {leftovers}"
        if strict:
            raise ValueError(message + " (pass strict=False to keep them with a warning)")
        warnings.warn(message, stacklevel=2)
    return converted
