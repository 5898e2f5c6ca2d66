"""torch.fx pass: trace a 2D model and rewrite its functional calls and shape arithmetic for 5-D tensors.

Module swaps cannot see what a ``forward`` does with functions: torchvision's segmentation models take
``x.shape[-2:]`` and call ``F.interpolate(..., mode="bilinear")``, MNASNet reduces with ``x.mean([2, 3])``, ConvNeXt
permutes to channels-last and scales by a (C, 1, 1) parameter, ShuffleNet unpacks ``x.size()`` into four values and
re-views the tensor. This module traces the model (train and eval graphs when they differ) and rewrites those nodes.
"""

from __future__ import annotations

import operator
import warnings
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

from .rules import MODULE_RULES, ConvertContext, adaptive_output_size, expand_pair, map_permutation, upsample_mode

__all__ = ["ConvertedGraphModule", "trace_2d", "rewrite_graph", "leftover_2d_nodes"]

_REDUCTIONS = {"mean", "sum", "amax", "amin", "std", "var", "max", "min", "logsumexp", "norm"}
_SHAPE_RESHAPES = {"view", "reshape"}
LEFTOVER_2D_FUNCTIONS: set[Callable] = {
    F.conv2d,
    F.conv_transpose2d,
    F.max_pool2d,
    F.avg_pool2d,
    F.lp_pool2d,
    F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d,
    F.fractional_max_pool2d,
    F.dropout2d,
    F.pixel_shuffle,
    F.pixel_unshuffle,
    torch.conv2d,
    torch.max_pool2d,


}


class _Tracer(fx.Tracer):
    """Keeps the rule-table modules and all ``torch.nn`` modules as leaves."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return type(m) in MODULE_RULES or super().is_leaf_module(m, module_qualified_name)


class ConvertedGraphModule(fx.GraphModule):
    """A traced, converted model: a real ``nn.Module`` whose forward is the rewritten graph.

    When the model's train and eval forwards differ (GoogLeNet and Inception v3 add auxiliary heads in training),
    both graphs are kept and ``train()`` / ``eval()`` switch between them.
    """

    def __init__(self, root: nn.Module, graph: fx.Graph, eval_graph: fx.Graph | None = None,
                 class_name: str = "ConvertedGraphModule") -> None:
        super().__init__(root, graph, class_name)
        self._train_graph = graph
        self._eval_graph = eval_graph
        if eval_graph is not None:
            for node in eval_graph.nodes:  # make sure the eval-only submodules / attributes exist too
                if node.op in ("call_module", "get_attr"):
                    try:
                        self.get_submodule(node.target) if node.op == "call_module" else None
                    except AttributeError:
                        fx.graph_module._copy_attr(root, self, node.target)

    def train(self, mode: bool = True) -> "ConvertedGraphModule":
        super().train(mode)
        if getattr(self, "_eval_graph", None) is not None:
            wanted = self._train_graph if mode else self._eval_graph
            if self.graph is not wanted:
                self.graph = wanted  # the setter recompiles forward
        return self


def trace_2d(model: nn.Module) -> tuple[fx.Graph, fx.Graph | None]:
    """Symbolically trace ``model`` in train and eval mode.

    Returns:
        (train_graph, eval_graph) where eval_graph is None when both modes trace to the same code.

    Raises:
        torch.fx.proxy.TraceError / TypeError / others raised by torch.fx when the forward is not traceable.
    """
    was_training = model.training
    try:
        model.train(True)
        train_graph = _Tracer().trace(model)
        model.train(False)
        eval_graph = _Tracer().trace(model)
    finally:
        model.train(was_training)
    same = _graph_signature(train_graph) == _graph_signature(eval_graph)
    return train_graph, (None if same else eval_graph)


def _graph_signature(graph: fx.Graph) -> list[tuple]:
    return [(n.op, str(n.target), str(n.args), str(n.kwargs)) for n in graph.nodes]


def _where(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack")
    if stack:
        path = list(stack.values())[-1]
        path = path[0] if isinstance(path, tuple) else path
        return f"{path} ({node.name})"
    return node.name


def _is_shape_source(node: Any) -> bool:
    """True for ``x.shape`` / ``x.size()`` nodes."""
    if not isinstance(node, fx.Node):
        return False
    if node.op == "call_function" and node.target is getattr and len(node.args) > 1 and node.args[1] == "shape":
        return True
    return node.op == "call_method" and node.target == "size" and len(node.args) == 1 and not node.kwargs


def _remap_index(index: Any) -> Any:
    """Index of a 4-D (N, C, H, W) size into the 5-D (N, C, D, H, W) size: H and W keep their meaning."""
    if isinstance(index, int):
        return index + 1 if index >= 2 else index
    if isinstance(index, slice):
        start = index.start
        if start is not None and start < 0 and index.stop is None:
            return slice(start - 1, None, index.step)  # [-2:] -> [-3:]
        if start is not None and start >= 2:
            return slice(start, index.stop if index.stop is None else index.stop + 1, index.step)
        return index
    return index


def _spatial_dims(dims: Any) -> Any:
    """Reduction dims over (H, W) of a 4-D tensor -> over (D, H, W) of a 5-D tensor."""
    seq = [dims] if isinstance(dims, int) else list(dims)
    if sorted(seq) == [2, 3]:
        return [2, 3, 4]
    if sorted(seq) == [-2, -1]:
        return [-3, -2, -1]
    if sorted(seq) == [1, 2, 3]:
        return [1, 2, 3, 4]
    return dims


def _size_getitem_info(node: Any) -> tuple[fx.Node, int] | None:
    if isinstance(node, fx.Node) and node.op == "call_function" and node.target is operator.getitem:
        src, index = node.args
        if _is_shape_source(src) and isinstance(index, int):
            return src, index
    return None


def rewrite_graph(gm: fx.GraphModule, graph: fx.Graph, ctx: ConvertContext) -> None:
    """Rewrite the functional calls, reductions, permutes and shape arithmetic of ``graph`` in place for 5-D."""
    original_index: dict[fx.Node, int] = {}
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target is operator.getitem and _is_shape_source(node.args[0]):
            index = node.args[1]
            if isinstance(index, int):
                original_index[node] = index
            node.args = (node.args[0], _remap_index(index))
        elif node.op == "call_method" and node.target == "size" and len(node.args) == 2:
            index = node.args[1]
            node.args = (node.args[0], _remap_index(index))
        elif node.op == "call_method" and node.target in _REDUCTIONS:
            _rewrite_dims(node, positional=1)
        elif node.op == "call_function" and getattr(node.target, "__name__", "") in _REDUCTIONS and node.target in (
            torch.mean, torch.sum, torch.amax, torch.amin, torch.std, torch.var, torch.logsumexp
        ):
            _rewrite_dims(node, positional=1)
        elif node.op == "call_method" and node.target == "permute":
            dims = node.args[1:] if len(node.args) > 2 else node.args[1]
            if all(isinstance(d, int) for d in dims) and len(dims) == 4:
                node.args = (node.args[0], *map_permutation(dims, _where(node)))
        elif node.op == "call_function" and node.target is torch.permute:
            dims = node.args[1] if len(node.args) > 1 else node.kwargs["dims"]
            if len(dims) == 4:
                node.args, node.kwargs = (node.args[0], map_permutation(dims, _where(node))), {}
        elif (node.op == "call_method" and node.target in _SHAPE_RESHAPES) or (
            node.op == "call_function" and node.target is torch.reshape
        ):
            _rewrite_reshape(graph, node, original_index)
        elif node.op == "call_function":
            _rewrite_function(node, ctx)
        elif node.op == "get_attr":
            _rewrite_broadcast_attr(gm, graph, node)
    graph.lint()


def _rewrite_dims(node: fx.Node, positional: int) -> None:
    if "dim" in node.kwargs:
        node.kwargs = {**node.kwargs, "dim": _spatial_dims(node.kwargs["dim"])}
    elif len(node.args) > positional and isinstance(node.args[positional], (int, list, tuple)):
        args = list(node.args)
        args[positional] = _spatial_dims(args[positional])
        node.args = tuple(args)


def _rewrite_reshape(graph: fx.Graph, node: fx.Node, original_index: dict[fx.Node, int]) -> None:
    """``x.view(b, g, c, h, w)`` where h, w come from a 4-D size -> ``x.view(b, g, c, *x.shape[-3:])``."""
    source = node.args[0]
    sizes = list(node.args[1:])
    if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)):
        sizes = list(sizes[0])
    if len(sizes) < 2:
        return
    tail = [original_index.get(s) if isinstance(s, fx.Node) else None for s in sizes[-2:]]
    if tail[0] not in (2, -2) or tail[1] not in (3, -1):
        return
    with graph.inserting_before(node):
        shape = graph.call_function(getattr, (source, "shape"))
        spatial = [graph.call_function(operator.getitem, (shape, i)) for i in (-3, -2, -1)]
    new_sizes = tuple(sizes[:-2]) + tuple(spatial)
    node.args = (source, new_sizes) if node.op == "call_function" else (source, *new_sizes)


def _rewrite_function(node: fx.Node, ctx: ConvertContext) -> None:
    target = node.target
    args, kwargs = list(node.args), dict(node.kwargs)
    keep = ctx.keep_depth
    if target is F.interpolate or target is F.upsample:
        if kwargs.get("mode", "nearest") in ("bilinear", "bicubic"):
            kwargs["mode"] = upsample_mode(kwargs["mode"])
        elif len(args) > 3 and args[3] in ("bilinear", "bicubic"):
            args[3] = upsample_mode(args[3])
        size = kwargs.get("size", args[1] if len(args) > 1 else None)
        if isinstance(size, (list, tuple)) and all(isinstance(s, int) for s in size) and len(size) == 2:
            raise NotImplementedError(
                f"F.interpolate at '{_where(node)}' has a fixed 2D output size {tuple(size)} that defines no depth"
            )
        scale = kwargs.get("scale_factor", args[2] if len(args) > 2 else None)
        if isinstance(scale, (list, tuple)) and len(scale) == 2:
            scale3 = expand_pair(scale, keep, 1.0)
            if "scale_factor" in kwargs:
                kwargs["scale_factor"] = scale3
            else:
                args[2] = scale3
    elif target in (F.max_pool2d, torch.max_pool2d):
        node.target = F.max_pool3d
        _expand_pool_args(args, kwargs, keep, ["kernel_size", "stride", "padding", "dilation"])
    elif target is F.avg_pool2d:
        node.target = F.avg_pool3d
        _expand_pool_args(args, kwargs, keep, ["kernel_size", "stride", "padding"])
    elif target in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d):
        node.target = F.adaptive_avg_pool3d if target is not F.adaptive_max_pool2d else F.adaptive_max_pool3d
        if "output_size" in kwargs:
            kwargs["output_size"] = adaptive_output_size(kwargs["output_size"])
        else:
            args[1] = adaptive_output_size(args[1])
    elif target is F.dropout2d:
        node.target = F.dropout3d
    elif target is F.pad:
        pad = kwargs.get("pad", args[1] if len(args) > 1 else None)
        if isinstance(pad, (list, tuple)) and len(pad) == 4:
            front = (0, 0) if keep else (pad[2], pad[3])
            new = tuple(pad) + front
            if "pad" in kwargs:
                kwargs["pad"] = new
            else:
                args[1] = new
    elif target is torch.flatten or target is torch.squeeze:
        pass
    node.args, node.kwargs = tuple(args), kwargs


_POOL_DEPTH_DEFAULT = {"kernel_size": 1, "stride": 1, "padding": 0, "dilation": 1}


def _expand_pool_args(args: list, kwargs: dict, keep: bool, names: list[str]) -> None:
    for position, name in enumerate(names, start=1):
        if name in kwargs and kwargs[name] is not None and not isinstance(kwargs[name], fx.Node):
            kwargs[name] = expand_pair(kwargs[name], keep, _POOL_DEPTH_DEFAULT[name])
        elif len(args) > position and args[position] is not None and not isinstance(args[position], fx.Node):
            args[position] = expand_pair(args[position], keep, _POOL_DEPTH_DEFAULT[name])
    if keep and "stride" in names and "stride" not in kwargs and (len(args) <= 2 or args[2] is None):
        kernel = kwargs.get("kernel_size", args[1] if len(args) > 1 else None)
        if kernel is not None:
            kwargs["stride"] = expand_pair(kernel, keep, 1)  # default stride = kernel, never along depth


def _rewrite_broadcast_attr(gm: fx.GraphModule, graph: fx.Graph, node: fx.Node) -> None:
    """A (C, 1, 1) or (1, C, 1, 1) parameter broadcast against a 4-D map gets a trailing depth-free axis."""
    value: Any = gm
    for part in str(node.target).split("."):
        value = getattr(value, part, None)
    if not isinstance(value, torch.Tensor) or value.dim() not in (3, 4) or tuple(value.shape[-2:]) != (1, 1):
        return
    users = [u for u in node.users if u.op in ("call_function", "call_method") and u.target in (
        operator.mul, operator.add, operator.sub, operator.truediv, torch.mul, torch.add, "mul", "add", "__mul__")]
    if not users:
        return
    with graph.inserting_after(node):
        expanded = graph.call_method("unsqueeze", (node, -1))
    for user in users:
        user.replace_input_with(node, expanded)


def leftover_2d_nodes(graph: fx.Graph) -> list[str]:
    """Describe the graph nodes that still call a 2D-only function (with the module path that calls them)."""
    found = []
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        if node.target in LEFTOVER_2D_FUNCTIONS:
            found.append(f"{_where(node)}: {getattr(node.target, '__name__', node.target)}")
        elif node.target in (F.interpolate, F.upsample):
            mode = node.kwargs.get("mode", node.args[3] if len(node.args) > 3 else "nearest")
            if mode in ("bilinear", "bicubic"):
                found.append(f"{_where(node)}: interpolate(mode={mode!r})")
    return found


def warn_untraced(names: list[str]) -> None:
    """Warn that functional calls inside some modules were not checked (their forward is not traceable)."""
    if names:
        warnings.warn(
            "these modules could not be traced with torch.fx, so only their submodules were converted and their own "
            f"functional calls were not checked: {names}",
            stacklevel=3,
        )
