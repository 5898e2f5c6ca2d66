"""torch.fx pass: trace a 2D model and rewrite its functional calls and shape arithmetic for 5-D tensors.

Module swaps cannot see what a ``forward`` does with functions: torchvision's segmentation models take
``x.shape[-2:]`` and call ``F.interpolate(..., mode="bilinear")``, MNASNet reduces with ``x.mean([2, 3])``, ConvNeXt
permutes to channels-last and scales by a (C, 1, 1) parameter, ShuffleNet unpacks ``x.size()`` into four values and
re-views the tensor. This module traces the model (train and eval graphs when they differ) and rewrites those nodes.

The shape rules assume that every tensor whose size is read, reduced, permuted or re-viewed is a 4-D
(N, C, H, W) feature map that has become (N, C, D, H, W); sizes of 2-D / 3-D tensors read with non-negative
indices below 2 or negative indices are unaffected.
"""

from __future__ import annotations

import copy
import operator
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from .rules import ConvertContext, adaptive_output_size, expand_pair, find_rule, map_permutation, upsample_mode

__all__ = [
    "ConvertedGraphModule",
    "conv2d_as_3d",
    "correct_depth",
    "depth_one_modules",
    "leftover_2d_nodes",
    "rewrite_graph",
    "scan_untraced_code",
    "trace_2d",
]


def _pair(value: Any) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[-1]))


def conv2d_as_3d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    operator: str = "acs",
    keep_depth: bool = False,
) -> torch.Tensor:
    """What a functional ``F.conv2d`` of a 2D model becomes in 3D: the operator's functional form on the 2D kernel.

    ``acs``: :func:`monai_acs.layers.acs_conv3d`; ``mean_acs`` / ``soft_acs``: :func:`~monai_acs.layers.mean_acs_conv3d`
    (a functional call holds no learnable view weights); ``i3d``: ``F.conv3d`` with the kernel inflated to
    (kh, kh, kw); the others (``conv2p5d``, ``tsm``, ``p3d``, ``a3d``): the 2.5D (1, kh, kw) convolution (their
    shift / depth convolution / slice mix need state a functional call does not have). Geometry as the layers'
    (``params_from_conv2d``): with ``keep_depth`` depth is neither strided nor changed.
    """
    from ..layers import acs_conv3d, inflate_conv_weight, mean_acs_conv3d
    from ..layers._base import params_from_conv2d

    kh, kw = int(weight.shape[-2]), int(weight.shape[-1])
    stride2, dilation2 = _pair(stride), _pair(dilation)
    padding2 = padding if isinstance(padding, str) else _pair(padding)
    stride3, padding3, dilation3 = params_from_conv2d((kh, kw), stride2, padding2, dilation2, keep_depth)
    if operator == "acs":
        return acs_conv3d(input, weight, bias, stride3, padding3, dilation3, groups)
    if operator in ("mean_acs", "soft_acs"):
        return mean_acs_conv3d(input, weight, bias, stride3, padding3, dilation3, groups)
    if operator == "i3d":
        if isinstance(padding2, str):
            pad3: Any = padding2
        else:
            pad3 = (dilation2[0] * (kh - 1) // 2 if keep_depth else padding2[0], padding2[0], padding2[1])
        return F.conv3d(input, inflate_conv_weight(weight, kh), bias, stride3, pad3, (dilation2[0], *dilation2), groups)
    pad_axial: Any = padding2 if isinstance(padding2, str) else (0, padding2[0], padding2[1])
    return F.conv3d(input, weight.unsqueeze(2), bias, stride3, pad_axial, (1, *dilation2), groups)


_REDUCTION_METHODS = {
    "mean",
    "sum",
    "amax",
    "amin",
    "std",
    "var",
    "max",
    "min",
    "logsumexp",
    "norm",
    "nansum",
    "nanmean",
    "prod",
}
_REDUCTION_FUNCTIONS = {
    torch.mean,
    torch.sum,
    torch.amax,
    torch.amin,
    torch.std,
    torch.var,
    torch.logsumexp,
    torch.nansum,
    torch.nanmean,
    torch.prod,
    torch.std_mean,
    torch.var_mean,
}
# Calls whose positional arguments after the tensor are sizes (x.view(b, c, h, w)): a (h, w) pair gets a d.
_SIZE_VARARG_METHODS = {"view", "reshape", "expand", "new_zeros", "new_ones", "new_empty"}
_SIZE_VARARG_FUNCTIONS = {torch.zeros, torch.ones, torch.empty, torch.rand, torch.randn}

# Functions that only exist for 4-D maps: a graph that still calls one after the rewrite is not 3D.
LEFTOVER_2D_FUNCTIONS: dict[Callable, str] = {
    F.conv2d: "F.conv2d",
    F.conv_transpose2d: "F.conv_transpose2d",
    F.max_pool2d: "F.max_pool2d",
    F.max_unpool2d: "F.max_unpool2d",
    F.avg_pool2d: "F.avg_pool2d",
    F.lp_pool2d: "F.lp_pool2d",
    F.adaptive_avg_pool2d: "F.adaptive_avg_pool2d",
    F.adaptive_max_pool2d: "F.adaptive_max_pool2d",
    F.fractional_max_pool2d: "F.fractional_max_pool2d",
    F.dropout2d: "F.dropout2d",
    F.pixel_shuffle: "F.pixel_shuffle",
    F.pixel_unshuffle: "F.pixel_unshuffle",
    F.grid_sample: "F.grid_sample",
    F.affine_grid: "F.affine_grid",
    torch.max_pool2d: "torch.max_pool2d",
}
# Names that mark a forward as 2D-only when it cannot be traced (matched against its code's names).
_UNTRACED_2D_NAMES = {
    "conv2d",
    "conv_transpose2d",
    "max_pool2d",
    "avg_pool2d",
    "lp_pool2d",
    "adaptive_avg_pool2d",
    "adaptive_max_pool2d",
    "fractional_max_pool2d",
    "dropout2d",
    "max_unpool2d",
    "pixel_shuffle",
    "pixel_unshuffle",
    "grid_sample",
    "affine_grid",
}
# Names whose use may assume a 4-D layout (checked, not rewritten, when a forward cannot be traced).
_UNTRACED_LAYOUT_NAMES = {
    "interpolate",
    "pad",
    "permute",
    "transpose",
    "view",
    "reshape",
    "shape",
    "size",
    "mean",
    "sum",
    "amax",
    "amin",
    "einsum",
    "unfold",
    "fold",
    "expand",
    "movedim",
}


class _Tracer(fx.Tracer):
    """Keeps the rule-table modules and all ``torch.nn`` modules as leaves.

    ``torch.jit.isinstance(traced_value, torch.Tensor)`` is False for a tracing proxy, so a forward guarded by it
    (MONAI's ``UpCat`` skip connection) would trace without the guarded branch and still run; while tracing, such a
    call raises instead, so that the module is converted child by child.
    """

    # buffers read by attribute become graph inputs (get_attr), not constants folded at trace time: their in-place
    # updates (``num_batches_tracked.add_(1)``) stay in the graph and the state dict keeps their keys
    # (torchvision's FrozenBatchNorm2d, timm's BatchNormAct2d)
    proxy_buffer_attributes = True
    record_stack_traces = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # a converted graph's own functions stay calls when its code is traced again (unpickling re-traces it)
        kwargs.setdefault("autowrap_functions", (conv2d_as_3d,))
        super().__init__(*args, **kwargs)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return find_rule(m) is not None or super().is_leaf_module(m, module_qualified_name)

    def trace(self, root: nn.Module | Callable[..., Any], concrete_args: dict[str, Any] | None = None) -> fx.Graph:
        original = torch.jit.isinstance

        def guarded_isinstance(obj: Any, target_type: Any) -> bool:
            if isinstance(obj, fx.Proxy):
                raise fx.proxy.TraceError(
                    f"torch.jit.isinstance({obj}, {getattr(target_type, '__name__', target_type)}) on a traced value "
                    f"would always be False"
                )
            return original(obj, target_type)

        torch.jit.isinstance = guarded_isinstance
        try:
            return super().trace(root, concrete_args)
        finally:
            torch.jit.isinstance = original


def _has_target(module: nn.Module, target: str) -> bool:
    value: Any = module
    for part in target.split("."):
        if not hasattr(value, part):
            return False
        value = getattr(value, part)
    return True


class ConvertedGraphModule(fx.GraphModule):
    """A traced, converted model: a real ``nn.Module`` whose forward is the rewritten graph.

    When the model's train and eval forwards differ (GoogLeNet and Inception v3 add auxiliary heads in training),
    both graphs are kept and ``train()`` / ``eval()`` switch between them. Deep copies, ``pickle`` / ``torch.save``
    and ``copy.copy`` keep both graphs; ``torch.jit.script`` compiles the graph of the current mode.

    Args:
        root: module holding the submodules and attributes the graphs refer to.
        graph: the train-mode graph.
        eval_graph: the eval-mode graph, or None when it equals ``graph``. Default None.
        class_name: the class name shown in ``repr`` and error messages. Default ``"ConvertedGraphModule"``.
    """

    def __init__(
        self,
        root: nn.Module,
        graph: fx.Graph,
        eval_graph: fx.Graph | None = None,
        class_name: str = "ConvertedGraphModule",
    ) -> None:
        super().__init__(root, graph, class_name)
        self._train_graph = graph
        self._eval_graph = eval_graph
        if eval_graph is not None:  # eval-only submodules / attributes must exist too
            for node in eval_graph.nodes:
                if node.op in ("call_module", "get_attr") and not _has_target(self, str(node.target)):
                    fx.graph_module._copy_attr(root, self, str(node.target))

    def train(self, mode: bool = True) -> ConvertedGraphModule:
        super().train(mode)
        eval_graph = getattr(self, "_eval_graph", None)
        if eval_graph is not None:
            wanted = self._train_graph if mode else eval_graph
            if self.graph is not wanted:
                self.graph = wanted  # the setter recompiles forward
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> ConvertedGraphModule:
        res = super().__deepcopy__(memo)  # copies every submodule; the graphs' copies are memoised
        res.__class__.__name__ = type(self).__name__
        res._train_graph = copy.deepcopy(self._train_graph, memo)
        res._eval_graph = copy.deepcopy(self._eval_graph, memo)
        res.graph = res._train_graph if res.training or res._eval_graph is None else res._eval_graph
        return res

    def __copy__(self) -> ConvertedGraphModule:
        res = ConvertedGraphModule(self, self._train_graph, self._eval_graph, type(self).__name__)
        res.adopt_children(self)
        res.train(self.training)
        return res

    def adopt_children(self, root: nn.Module) -> None:
        """Take ``root``'s direct children as they are (a ``GraphModule`` rebuilds only the paths its graph names,
        with plain ``nn.Module`` containers); the graphs' targets must resolve the same in ``root``."""
        for name, child in root.named_children():
            setattr(self, name, child)

    def restore_containers(self, original: nn.Module) -> None:
        """Give ``original``'s ``ModuleList`` / ``ModuleDict`` / ``Sequential`` holders back their type (``GraphModule``
        rebuilds them as plain ``nn.Module``), so that ``net.classifier[-1]`` works as on the 2D model.

        Traced-through custom blocks stay plain holders (the graph, not their ``forward``, runs them), and so does a
        ``Sequential`` holding one: its own ``forward`` could not run them (nor be compiled by TorchScript).
        """
        containers = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
        for name, _ in reversed(list(self.named_modules())):  # innermost first
            holder = self.get_submodule(name) if name else self
            if not name or type(holder) is not nn.Module:
                continue
            try:
                source = original.get_submodule(name)
            except AttributeError:
                continue
            present = dict(holder.named_children())
            if type(source) not in containers or (
                type(source) is nn.Sequential and any(type(m) is nn.Module for m in present.values())
            ):
                continue
            restored = type(source)()
            for child_name, _ in source.named_children():
                if child_name in present:
                    restored.add_module(child_name, present[child_name])
            parent_name, _, attribute = name.rpartition(".")
            setattr(self.get_submodule(parent_name) if parent_name else self, attribute, restored)

    def __reduce__(self) -> tuple[Any, ...]:
        # fx pickles a GraphModule as its generated code and re-traces it on load; do that for both graphs.
        body = self.__dict__.copy()
        for key in ("_graph", "_train_graph", "_eval_graph"):
            body.pop(key, None)
        codes = []
        for graph in (self._train_graph, self._eval_graph):
            if graph is None:
                codes.append(None)
                continue
            owner = graph.owning_module
            try:
                _, (graph_body, import_block) = fx.GraphModule(self, graph).__reduce__()
            finally:
                graph.owning_module = owner
            codes.append((graph_body["_code"], import_block))
        return (_rebuild_converted_graph_module, (body, codes[0], codes[1], type(self).__name__))


def _rebuild_converted_graph_module(
    body: dict[str, Any], train_code: tuple[str, str], eval_code: tuple[str, str] | None, class_name: str
) -> ConvertedGraphModule:
    """Unpickle a :class:`ConvertedGraphModule` (see its ``__reduce__``)."""
    train_gm = fx.graph_module.reduce_graph_module({**body, "_code": train_code[0]}, train_code[1])
    eval_graph = None
    if eval_code is not None:
        eval_graph = fx.graph_module.reduce_graph_module({**body, "_code": eval_code[0]}, eval_code[1]).graph
    gm = ConvertedGraphModule(train_gm, train_gm.graph, eval_graph, class_name)
    gm.adopt_children(train_gm)
    for key, value in body.items():
        if not hasattr(gm, key):
            setattr(gm, key, value)
    gm.train(bool(body.get("training", True)))
    return gm


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
    for graph in (train_graph, eval_graph):
        _resolve_string_annotations(graph, model)
        # the return annotation describes the Python forward, not necessarily the traced path (Inception v3 says
        # InceptionOutputs and returns a Tensor in eval mode): let TorchScript infer it
        graph.output_node().type = None
    if _graph_signature(train_graph) == _graph_signature(eval_graph):
        return train_graph, None
    return train_graph, eval_graph


def _resolve_string_annotations(graph: fx.Graph, model: nn.Module) -> None:
    """Postponed annotations (``from __future__ import annotations``) reach the graph as strings, which TorchScript
    cannot resolve once the code is regenerated (after pickling); replace them by the types they name, or drop them."""
    try:
        hints = typing.get_type_hints(type(model).forward)
    except Exception:  # noqa: BLE001 - unresolvable annotations are dropped below
        hints = {}
    for node in graph.nodes:
        if node.op == "placeholder" and isinstance(node.type, str):
            node.type = hints.get(str(node.target).lstrip("*"))


def _graph_signature(graph: fx.Graph) -> list[tuple]:
    return [(n.op, str(n.target), str(n.args), str(n.kwargs)) for n in graph.nodes]


def _where(node: fx.Node, prefix: str = "") -> str:
    """``path (ClassName)`` of the module whose forward created ``node`` (the model itself: ``prefix`` or
    ``<root>``); ``prefix`` is the qualified name of the traced module inside the whole model."""
    stack = node.meta.get("nn_module_stack")
    if stack:
        path, kind = list(stack.values())[-1]
        kind_name = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
        kind_name = kind_name.rsplit(".", 1)[-1]
        return f"{prefix}.{path} ({kind_name})" if prefix else f"{path} ({kind_name})"
    return prefix or "<root>"


def _is_shape_source(node: Any) -> bool:
    """True for ``x.shape`` / ``x.size()`` nodes."""
    if not isinstance(node, fx.Node):
        return False
    if node.op == "call_function" and node.target is getattr and len(node.args) > 1 and node.args[1] == "shape":
        return True
    return node.op == "call_method" and node.target == "size" and len(node.args) == 1 and not node.kwargs


def _remap_int_index(index: int) -> int:
    """Index into a 4-D (N, C, H, W) size -> the same axis of the 5-D size; negative indices already agree."""
    return index + 1 if index >= 2 else index


def _axis_name(index: int) -> str | None:
    """'h' / 'w' for an index into a 4-D size that names H / W."""
    return {2: "h", -2: "h", 3: "w", -1: "w"}.get(index)


@dataclass
class _SpatialSize:
    """A graph value that is the H or W size of a 4-D map, and how to read the matching D size."""

    axis: str
    base: fx.Node
    depth_index: int
    method: bool = False  # D is ``base.size(depth_index)`` rather than ``base[depth_index]``

    def depth_node(self, graph: fx.Graph) -> fx.Node:
        if self.method:
            return graph.call_method("size", (self.base, self.depth_index))
        return graph.call_function(operator.getitem, (self.base, self.depth_index))


def _remap_shape_slice(index: slice) -> tuple[slice, list[int], list[int]] | None:
    """Slice of a 4-D size -> slice of the 5-D size covering the same axes (+ D when H is covered).

    Returns:
        (new_slice, old_axes, new_axes) or None when the slice is not contiguous.
    """
    if index.step not in (None, 1):
        return None
    old_axes = list(range(4))[index]
    if not old_axes:
        return None
    new_axes = []
    for axis in old_axes:
        if axis == 2:
            new_axes.append(2)  # D enters just before H
        new_axes.append(axis + 1 if axis >= 2 else axis)
    start, stop = new_axes[0], new_axes[-1] + 1
    negative = index.start is not None and index.start < 0
    new = slice(start - 5 if negative else start, None if stop == 5 else stop)
    return new, old_axes, new_axes


def rewrite_graph(gm: fx.GraphModule, graph: fx.Graph, ctx: ConvertContext) -> None:
    """Rewrite the functional calls, reductions, permutes and shape arithmetic of ``graph`` in place for 5-D.

    Raises:
        NotImplementedError: a construct with no 3D meaning (a non channels-last permute of a 4-D map, a fixed
            2D interpolation size without ``keep_depth``), naming the module path.
    """
    from .shapes import probe_graph_shapes

    shapes = probe_graph_shapes(gm, graph)
    if shapes is not None:
        _ShapeAwarePass(gm, graph, ctx, shapes).run()
        return
    spatial: dict[fx.Node, _SpatialSize] = {}
    slices: dict[fx.Node, tuple[list[int], list[int]]] = {}
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target is operator.getitem and _is_shape_source(node.args[0]):
            _rewrite_shape_getitem(node, spatial, slices)
        elif node.op == "call_function" and node.target is operator.getitem and node.args[0] in slices:
            _rewrite_slice_getitem(node, spatial, slices)
        elif node.op == "call_function" and node.target is operator.getitem:
            _rewrite_tensor_index(node, ctx)
        elif node.op == "call_method" and node.target == "size" and len(node.args) == 2:
            index = node.args[1]
            if isinstance(index, int):
                node.args = (node.args[0], _remap_int_index(index))
                if _axis_name(index):
                    spatial[node] = _SpatialSize(_axis_name(index), node.args[0], 2, method=True)
        elif (node.op == "call_method" and node.target in _REDUCTION_METHODS) or (
            node.op == "call_function" and node.target in _REDUCTION_FUNCTIONS
        ):
            _rewrite_dims(node)
        elif node.op == "call_method" and node.target == "repeat":
            _rewrite_repeat(node, ctx)
        elif node.op == "call_method" and node.target == "permute":
            dims = node.args[1:] if len(node.args) > 2 else node.args[1]
            if all(isinstance(d, int) for d in dims) and len(dims) == 4:
                node.args = (node.args[0], *map_permutation(dims, _where(node)))
        elif node.op == "call_function" and node.target is torch.permute:
            dims = node.args[1] if len(node.args) > 1 else node.kwargs["dims"]
            if len(dims) == 4:
                node.args, node.kwargs = (node.args[0], map_permutation(dims, _where(node))), {}
        elif node.op == "call_function" and node.target in _COMPARISONS and _rewrite_rank_check(node):
            pass
        elif node.op == "call_function" and node.target is operator.mul and _spatial_pair(node.args, 0, spatial):
            with graph.inserting_before(node):  # h * w -> d * h * w (the number of positions)
                depth_h = graph.call_function(operator.mul, (spatial[node.args[0]].depth_node(graph), node.args[0]))
            node.args = (depth_h, node.args[1])
        elif node.op == "call_function":
            _rewrite_function(graph, node, ctx, spatial)
        elif node.op == "get_attr":
            _rewrite_broadcast_attr(gm, graph, node)
        if node.op in ("call_method", "call_function"):
            _insert_depth_sizes(graph, node, spatial)
            _rewrite_broadcast_view(node)
    graph.lint()


def _rewrite_repeat(node: fx.Node, ctx: ConvertContext) -> None:
    """``x.repeat([1, 16, 1, 1])`` of a 4-D map (MONAI VNet's input block): depth repeated like H (``keep_depth``:
    once)."""
    reps = list(node.args[1:]) if len(node.args) > 2 else node.args[1] if len(node.args) == 2 else None
    if not isinstance(reps, (list, tuple)) or len(reps) != 4 or not all(type(r) is int for r in reps):
        return
    depth = 1 if ctx.keep_depth else reps[2]
    node.args = (node.args[0], [*reps[:2], depth, *reps[2:]])


_COMPARISONS = {operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge}


def _is_rank_source(node: Any) -> bool:
    """``x.ndim``, ``x.dim()``, ``x.ndimension()`` or ``len(x.shape)``."""
    if not isinstance(node, fx.Node):
        return False
    if node.op == "call_function" and node.target is getattr and len(node.args) > 1 and node.args[1] == "ndim":
        return True
    if node.op == "call_method" and node.target in ("dim", "ndimension") and len(node.args) == 1:
        return True
    return node.op == "call_function" and node.target is len and _is_shape_source(node.args[0])


def _rewrite_rank_check(node: fx.Node) -> bool:
    """``x.ndim == 4`` (timm's ``_assert`` in ``BatchNormAct2d``, rank checks of 2D blocks) -> ``x.ndim == 5``: a
    comparison of a rank with 4 asks "is this a feature map", which in 3D has 5 dimensions."""
    first, second = node.args[:2]
    if _is_rank_source(first) and second == 4 and type(second) is int:
        node.args = (first, 5, *node.args[2:])
        return True
    if _is_rank_source(second) and first == 4 and type(first) is int:
        node.args = (5, second, *node.args[2:])
        return True
    return False


def _rewrite_broadcast_view(node: fx.Node) -> None:
    """``w.view(1, -1, 1, 1)`` / ``y.reshape(b, c, 1, 1)``: a per-channel broadcast shape gets a third 1."""
    is_method = node.op == "call_method" and node.target in ("view", "reshape")
    if not (is_method or (node.op == "call_function" and node.target is torch.reshape)):
        return
    first = 1
    args = list(node.args)
    if len(args) == first + 1 and isinstance(args[first], (list, tuple)):
        sizes = list(args[first])
        if len(sizes) == 4 and sizes[2:] == [1, 1]:
            args[first] = type(args[first])([*sizes, 1])
            node.args = tuple(args)
    elif len(args) == first + 4 and list(args[first + 2 :]) == [1, 1]:
        node.args = (*args, 1)


def depth_one_modules(gm: fx.GraphModule, graphs: list[fx.Graph]) -> set[str]:
    """Qualified names of the rule-table modules that only ever see a depth-1 map (with ``keep_depth``).

    Adaptive pools pool depth to 1 (so 2D heads keep their weights) and spatial reductions remove it; what is
    computed from such values alone (a squeeze-excitation branch, GoogLeNet's auxiliary heads) has depth 1 even
    when the rest of the network keeps D slices. Operators with a fixed depth (A3D) build these layers for depth 1.
    """
    collapsing_modules = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
    collapsing_functions = (F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool3d)
    seen_full: set[str] = set()
    seen_one: set[str] = set()
    for graph in graphs:
        state: dict[fx.Node, str] = {}  # "full", "one" (depth 1 / no depth) or "neutral" (sizes, constants)
        for node in graph.nodes:
            inputs = [state.get(n, "neutral") for n in node.all_input_nodes]
            tensors = [s for s in inputs if s != "neutral"]
            if node.op == "placeholder":
                state[node] = "full"
            elif node.op == "get_attr" or _is_shape_source(node) or (tensors == [] and node.op != "call_module"):
                state[node] = "neutral"
            elif (
                node.op == "call_module"
                and isinstance(gm.get_submodule(str(node.target)), collapsing_modules)
                or node.op == "call_function"
                and node.target in collapsing_functions
            ):
                state[node] = "one"
            elif (node.op == "call_method" and node.target in _REDUCTION_METHODS) or (
                node.op == "call_function" and node.target in _REDUCTION_FUNCTIONS
            ):
                dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
                spatial_reduction = isinstance(dims, (list, tuple)) and len(dims) >= 3
                state[node] = "one" if spatial_reduction or "one" in tensors else "full"
            else:
                state[node] = "one" if tensors and all(s == "one" for s in tensors) else "full"
            if node.op == "call_module" and node.all_input_nodes:
                first = state.get(node.all_input_nodes[0], "full")
                (seen_one if first == "one" else seen_full).add(str(node.target))
    return {name for name in seen_one - seen_full if find_rule(gm.get_submodule(name)) is not None}


def correct_depth(graph: fx.Graph, corrections: dict[str, int], padding_modes: dict[str, str]) -> None:
    """Pad (> 0) or crop (< 0) slices at the back of depth around the calls of the modules in ``corrections``.

    See :func:`monai_acs.convert.rules.keep_depth_correction`.
    """
    for node in list(graph.nodes):
        if node.op != "call_module" or corrections.get(str(node.target), 0) == 0:
            continue
        amount = corrections[str(node.target)]
        if amount > 0:
            mode = padding_modes.get(str(node.target), "zeros")
            mode = "constant" if mode == "zeros" else mode
            with graph.inserting_before(node):
                padded = graph.call_function(F.pad, (node.args[0], (0, 0, 0, 0, 0, amount)), {"mode": mode})
            node.args = (padded, *node.args[1:])
        else:
            with graph.inserting_after(node):
                cropped = graph.call_function(operator.getitem, (node, (slice(None), slice(None), slice(None, amount))))
            node.replace_all_uses_with(cropped, delete_user_cb=lambda user, kept=cropped: user is not kept)


def _rewrite_shape_getitem(node: fx.Node, spatial: dict, slices: dict) -> None:
    source, index = node.args
    if isinstance(index, int):
        node.args = (source, _remap_int_index(index))
        if _axis_name(index):
            spatial[node] = _SpatialSize(_axis_name(index), source, 2)
    elif isinstance(index, slice):
        remapped = _remap_shape_slice(index)
        if remapped is not None:
            new, old_axes, new_axes = remapped
            node.args = (source, new)
            slices[node] = (old_axes, new_axes)


def _rewrite_slice_getitem(node: fx.Node, spatial: dict, slices: dict) -> None:
    """``h, w = x.shape[-2:]``: element j of the old slice is element j' of the new one."""
    source, index = node.args
    old_axes, new_axes = slices[source]
    if not isinstance(index, int) or not -len(old_axes) <= index < len(old_axes):
        return
    axis = old_axes[index]
    new_axis = axis + 1 if axis >= 2 else axis
    node.args = (source, new_axes.index(new_axis))
    if axis in (2, 3) and 2 in new_axes:
        spatial[node] = _SpatialSize("h" if axis == 2 else "w", source, new_axes.index(2))


def _rewrite_tensor_index(node: fx.Node, ctx: ConvertContext) -> None:
    """``x[:, :, ::2, ::2]`` on a 4-D map slices H and W: slice D like H (or not at all with ``keep_depth``)."""
    source, index = node.args
    if not (isinstance(index, tuple) and len(index) == 4 and all(isinstance(i, slice) for i in index)):
        return
    if index[0] != slice(None) or index[1] != slice(None) or _is_shape_source(source):
        return
    depth = slice(None) if ctx.keep_depth else index[2]
    node.args = (source, (index[0], index[1], depth, index[2], index[3]))


def _spatial_pair(values: Any, position: int, spatial: dict) -> bool:
    """True when ``values[position], values[position + 1]`` are the H and W sizes of one 4-D map."""
    if position + 1 >= len(values):
        return False
    first, second = values[position], values[position + 1]
    if not (isinstance(first, fx.Node) and isinstance(second, fx.Node)):
        return False
    if first not in spatial or second not in spatial:
        return False
    h, w = spatial[first], spatial[second]
    return h.axis == "h" and w.axis == "w" and h.base is w.base


def _with_depth(graph: fx.Graph, node: fx.Node, values: Any, spatial: dict) -> Any:
    """Insert the D size before every (H, W) size pair of ``values``; None when there is none."""
    values = list(values)
    changed = False
    position = 0
    while position < len(values):
        if _spatial_pair(values, position, spatial):
            with graph.inserting_before(node):
                values.insert(position, spatial[values[position]].depth_node(graph))
            changed = True
            position += 3
        else:
            position += 1
    return values if changed else None


def _insert_depth_sizes(graph: fx.Graph, node: fx.Node, spatial: dict) -> None:
    """(h, w) taken from a 4-D size -> (d, h, w) in size lists and in ``x.view(b, c, h, w)``-style calls."""
    if not spatial:
        return
    args = list(node.args)
    changed = False
    for position, value in enumerate(args):
        if isinstance(value, (list, tuple)):
            new = _with_depth(graph, node, value, spatial)
            if new is not None:
                args[position] = type(value)(new)
                changed = True
    kwargs = dict(node.kwargs)
    for key, value in kwargs.items():
        if isinstance(value, (list, tuple)):
            new = _with_depth(graph, node, value, spatial)
            if new is not None:
                kwargs[key] = type(value)(new)
                changed = True
    varargs = (node.op == "call_method" and node.target in _SIZE_VARARG_METHODS) or (
        node.op == "call_function" and node.target in _SIZE_VARARG_FUNCTIONS | {torch.reshape}
    )
    if varargs:
        first = 1 if node.op == "call_method" or node.target is torch.reshape else 0
        new = _with_depth(graph, node, args[first:], spatial)
        if new is not None:
            args = args[:first] + new
            changed = True
    if changed:
        node.args, node.kwargs = tuple(args), kwargs


def _spatial_dims(dims: Any) -> Any:
    """Reduction dims over (H, W) of a 4-D tensor -> over (D, H, W) of a 5-D tensor."""
    if isinstance(dims, int) or not isinstance(dims, (list, tuple)):
        return dims
    if not all(isinstance(d, int) for d in dims):
        return dims
    key = sorted(dims)
    table = {(2, 3): [2, 3, 4], (-2, -1): [-3, -2, -1], (1, 2, 3): [1, 2, 3, 4], (-3, -2, -1): [-4, -3, -2, -1]}
    return table.get(tuple(key), dims)


def _rewrite_dims(node: fx.Node) -> None:
    if "dim" in node.kwargs:
        node.kwargs = {**node.kwargs, "dim": _spatial_dims(node.kwargs["dim"])}
    elif len(node.args) > 1:
        args = list(node.args)
        args[1] = _spatial_dims(args[1])
        node.args = tuple(args)


def _get_arg(args: list, kwargs: dict, position: int, name: str, default: Any = None) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[position] if len(args) > position else default


def _set_arg(args: list, kwargs: dict, position: int, name: str, value: Any) -> None:
    if name in kwargs or len(args) <= position:
        kwargs[name] = value
    else:
        args[position] = value


def _rewrite_function(graph: fx.Graph, node: fx.Node, ctx: ConvertContext, spatial: dict) -> None:
    target = node.target
    args, kwargs = list(node.args), dict(node.kwargs)
    keep = ctx.keep_depth
    if target is F.interpolate or target is F.upsample:
        mode = _get_arg(args, kwargs, 3, "mode", "nearest")
        if mode in ("bilinear", "bicubic"):
            _set_arg(args, kwargs, 3, "mode", upsample_mode(mode))
        size = _get_arg(args, kwargs, 1, "size")
        if isinstance(size, (list, tuple)) and len(size) == 2 and not _spatial_pair(size, 0, spatial):
            if not keep:
                raise NotImplementedError(
                    f"F.interpolate at '{_where(node)}' has a 2D output size {tuple(size)} that defines no depth "
                    f"(convert with keep_depth=True to keep the input depth)"
                )
            with graph.inserting_before(node):  # keep_depth: the output keeps the input depth
                depth = graph.call_function(operator.getitem, (graph.call_function(getattr, (args[0], "shape")), 2))
            _set_arg(args, kwargs, 1, "size", (depth, *size))
        scale = _get_arg(args, kwargs, 2, "scale_factor")
        if isinstance(scale, (list, tuple)) and len(scale) == 2 or (keep and isinstance(scale, (int, float))):
            _set_arg(args, kwargs, 2, "scale_factor", expand_pair(scale, keep, 1.0))
    elif target in (F.max_pool2d, torch.max_pool2d):
        node.target = F.max_pool3d
        _expand_pool_args(args, kwargs, keep, ["kernel_size", "stride", "padding", "dilation"])
    elif target is F.avg_pool2d:
        node.target = F.avg_pool3d
        _expand_pool_args(args, kwargs, keep, ["kernel_size", "stride", "padding"])
        _pad_before_avg_pool(graph, node, args, kwargs)
    elif target is F.lp_pool2d:
        node.target = F.lp_pool3d
        _expand_pool_args(args, kwargs, keep, ["norm_type", "kernel_size", "stride"])
    elif target in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d):
        node.target = F.adaptive_avg_pool3d if target is F.adaptive_avg_pool2d else F.adaptive_max_pool3d
        size = _get_arg(args, kwargs, 1, "output_size")
        if not isinstance(size, fx.Node):
            _set_arg(args, kwargs, 1, "output_size", adaptive_output_size(size))
    elif target is F.dropout2d:
        node.target = F.dropout3d
    elif target in (F.conv2d, torch.conv2d):
        names = ["input", "weight", "bias", "stride", "padding", "dilation", "groups"]
        call = {name: _get_arg(args, kwargs, i, name) for i, name in enumerate(names)}
        call = {k: v for k, v in call.items() if v is not None or k in ("input", "weight")}
        node.target = conv2d_as_3d
        args, kwargs = [], {**call, "operator": ctx.spec.name, "keep_depth": keep}
    elif target is F.pad:
        pad = _get_arg(args, kwargs, 1, "pad")
        if isinstance(pad, (list, tuple)) and len(pad) in (4, 6, 8):
            # pairs run from the last axis backwards: (W, H[, C[, N]]); depth enters after H, padded like H
            # (keep_depth: not at all); a channel pad (MONAI ChannelPad, 6 / 8 entries) keeps its meaning
            front = (0, 0) if keep else (pad[2], pad[3])
            _set_arg(args, kwargs, 1, "pad", (*pad[:4], *front, *pad[4:]))
    node.args, node.kwargs = tuple(args), kwargs


def _pad_before_avg_pool(graph: fx.Graph, node: fx.Node, args: list, kwargs: dict) -> None:
    """``avg_pool3d`` rejects maps smaller than the kernel even when padded (``avg_pool2d`` accepts them, e.g.
    Inception v3's 3x3 / padding 1 pool on 1x1 maps). With zero padding counted in the average (the default) and
    ``ceil_mode=False``, zero-padding first and pooling without padding is the same operation."""
    padding = _get_arg(args, kwargs, 3, "padding", 0)
    ceil_mode = _get_arg(args, kwargs, 4, "ceil_mode", False)
    count_include_pad = _get_arg(args, kwargs, 5, "count_include_pad", True)
    if isinstance(padding, int):
        padding = (padding, padding, padding)
    if not (isinstance(padding, tuple) and all(isinstance(p, int) for p in padding) and any(padding)):
        return
    if ceil_mode is not False or count_include_pad is not True:
        return
    pad_d, pad_h, pad_w = padding
    with graph.inserting_before(node):
        padded = graph.call_function(F.pad, (args[0], (pad_w, pad_w, pad_h, pad_h, pad_d, pad_d)))
    args[0] = padded
    _set_arg(args, kwargs, 3, "padding", 0)


_POOL_DEPTH_DEFAULT = {"kernel_size": 1, "stride": 1, "padding": 0, "dilation": 1}


def _expand_pool_args(args: list, kwargs: dict, keep: bool, names: list[str]) -> None:
    for position, name in enumerate(names, start=1):
        if name not in _POOL_DEPTH_DEFAULT:
            continue
        value = _get_arg(args, kwargs, position, name)
        if (
            value is not None
            and not isinstance(value, fx.Node)
            and not (isinstance(value, (list, tuple)) and any(isinstance(v, fx.Node) for v in value))
        ):
            _set_arg(args, kwargs, position, name, expand_pair(value, keep, _POOL_DEPTH_DEFAULT[name]))
    stride_position = names.index("stride") + 1
    if keep and _get_arg(args, kwargs, stride_position, "stride") in (None, []):
        kernel = _get_arg(args, kwargs, names.index("kernel_size") + 1, "kernel_size")
        if kernel is not None and not isinstance(kernel, fx.Node):
            kwargs["stride"] = expand_pair(kernel, keep, 1)  # default stride = kernel, never along depth
            if len(args) > stride_position:
                args[stride_position] = kwargs.pop("stride")


def _rewrite_broadcast_attr(gm: fx.GraphModule, graph: fx.Graph, node: fx.Node) -> None:
    """A (C, 1, 1) or (1, C, 1, 1) parameter broadcast against a 4-D map gets a trailing depth-free axis."""
    value: Any = gm
    for part in str(node.target).split("."):
        value = getattr(value, part, None)
    if not isinstance(value, torch.Tensor) or value.dim() not in (3, 4) or tuple(value.shape[-2:]) != (1, 1):
        return
    arithmetic = (
        operator.mul,
        operator.add,
        operator.sub,
        operator.truediv,
        torch.mul,
        torch.add,
        torch.sub,
        torch.div,
        "mul",
        "add",
        "sub",
        "div",
        "mul_",
        "add_",
        "__mul__",
        "__add__",
    )
    users = [u for u in node.users if u.op in ("call_function", "call_method") and u.target in arithmetic]
    if not users:
        return
    with graph.inserting_after(node):
        expanded = graph.call_method("unsqueeze", (node, -1))
    for user in users:
        user.replace_input_with(node, expanded)


def leftover_2d_nodes(graph: fx.Graph, prefix: str = "") -> list[str]:
    """Describe the graph nodes that still call a 2D-only function, as ``path (Class): function``.

    Args:
        graph: a converted graph.
        prefix: qualified name of the graph's module inside the whole model. Default ``""`` (the model).
    """
    found = []
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        if node.target in LEFTOVER_2D_FUNCTIONS:
            found.append(f"{_where(node, prefix)}: {LEFTOVER_2D_FUNCTIONS[node.target]}")
        elif node.target in (F.interpolate, F.upsample):
            mode = node.kwargs.get("mode", node.args[3] if len(node.args) > 3 else "nearest")
            if mode in ("bilinear", "bicubic"):
                found.append(f"{_where(node, prefix)}: F.interpolate(mode={mode!r})")
    return found


def _code_names(cls: type) -> set[str]:
    """Global and attribute names used by the methods ``cls`` defines (nested functions included)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass in (nn.Module, object) or klass.__module__.startswith("torch.nn"):
            continue
        for value in vars(klass).values():
            code = getattr(value, "__code__", None)
            stack = [code] if code is not None else []
            while stack:
                current = stack.pop()
                names.update(current.co_names)
                stack.extend(c for c in current.co_consts if hasattr(c, "co_names"))
    return names


def scan_untraced_code(module: nn.Module) -> tuple[list[str], list[str]]:
    """What an untraceable module's own code uses: (2D-only functions, layout-dependent names), each sorted.

    The first list is certain trouble in 3D (``F.conv2d`` and friends); the second only may be (``x.shape``,
    ``F.pad``, ``view`` ... are fine when written dimension-agnostic, as MONAI writes them).
    """
    names = _code_names(type(module))
    return sorted(names & _UNTRACED_2D_NAMES), sorted(names & _UNTRACED_LAYOUT_NAMES)


def warn_untraced(untraced: list[tuple[str, str, str, list[str]]]) -> None:
    """Warn about modules whose forward could not be traced and whose own code may assume 4-D tensors.

    Args:
        untraced: (qualified name, class name, trace error, layout-dependent names) per module; modules whose code
            uses no layout-dependent name are not reported.
    """
    grouped: dict[tuple[str, str, tuple[str, ...]], list[str]] = {}
    for name, class_name, error, names in untraced:
        if names:
            grouped.setdefault((class_name, error, tuple(names)), []).append(name)
    if not grouped:
        return
    lines = []
    for (class_name, error, names), paths in grouped.items():
        lines.append(
            f"{', '.join(paths)} ({class_name}): torch.fx cannot trace its forward ({error}); its submodules were "
            f"converted to 3D, but its own forward runs unchanged and uses {list(names)}, which is only correct if "
            f"written for any number of spatial dimensions"
        )
    warnings.warn(
        "converted child by child, without a graph rewrite:\n  "
        + "\n  ".join(lines)
        + "\nCheck those forwards, or make them torch.fx-traceable so the converter can rewrite them.",
        stacklevel=3,
    )


# ---------------------------------------------------------------------------------------------------------------------
# shape-aware pass: layout decisions from the axis roles the 2D probes found (monai_acs.convert.shapes)
# ---------------------------------------------------------------------------------------------------------------------
_BINARY_FUNCTIONS = {
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    operator.floordiv,
    operator.pow,
    operator.iadd,
    operator.imul,
    operator.isub,
    operator.itruediv,
    torch.add,
    torch.sub,
    torch.mul,
    torch.div,
    torch.maximum,
    torch.minimum,
    torch.where,
    torch.lerp,
    torch.addcmul,
    torch.addcdiv,
    torch.pow,
}
_BINARY_METHODS = {
    "add", "sub", "mul", "div", "add_", "sub_", "mul_", "div_", "__add__", "__mul__", "__sub__", "__truediv__",
    "__radd__", "__rmul__", "maximum", "minimum", "lerp", "addcmul", "addcmul_", "pow", "masked_fill", "expand_as",
}  # fmt: skip
# ops with one axis argument: (position of the axis among the positional arguments, kind)
_AXIS_METHODS: dict[str, tuple[int, str]] = {
    "softmax": (1, "same"),
    "log_softmax": (1, "same"),
    "cumsum": (1, "same"),
    "cumprod": (1, "same"),
    "split": (2, "same"),
    "chunk": (2, "same"),
    "narrow": (1, "same"),
    "unsqueeze": (1, "insert"),
    "squeeze": (1, "remove"),
    "select": (1, "remove"),
    "unbind": (1, "remove"),
    "argmax": (1, "remove"),
    "argmin": (1, "remove"),
    "flip": (1, "same"),
    "roll": (2, "same"),
}
_AXIS_FUNCTIONS: dict[Callable, tuple[int, str]] = {
    torch.softmax: (1, "same"),
    torch.log_softmax: (1, "same"),
    F.softmax: (1, "same"),
    F.log_softmax: (1, "same"),
    F.normalize: (2, "same"),
    F.glu: (1, "same"),
    torch.cumsum: (1, "same"),
    torch.split: (2, "same"),
    torch.chunk: (2, "same"),
    torch.narrow: (1, "same"),
    torch.unsqueeze: (1, "insert"),
    torch.squeeze: (1, "remove"),
    torch.select: (1, "remove"),
    torch.unbind: (1, "remove"),
    torch.cat: (1, "same"),
    torch.concat: (1, "same"),
    torch.stack: (1, "insert"),
    torch.flip: (1, "same"),
    torch.roll: (2, "same"),
}
_AXIS_KWARGS = ("dim", "dims", "axis")


def _map_axis(index: int, ndim: int, depth_at: int) -> int:
    """Axis ``index`` of a 2D tensor of rank ``ndim`` whose 3D twin has depth inserted before axis ``depth_at``."""
    negative = index < 0
    position = index + ndim if negative else index
    mapped = position if position < depth_at else position + 1
    return mapped - (ndim + 1) if negative else mapped


def _map_axes(value: Any, ndim: int, depth_at: int, with_depth: bool) -> Any:
    """Map an int or a sequence of ints; with ``with_depth`` an axis naming H also names D (reductions)."""
    if type(value) is int:
        mapped = _map_axis(value, ndim, depth_at)
        if with_depth and (value + ndim if value < 0 else value) == depth_at:
            return [mapped - 1, mapped]  # D sits just before H
        return mapped
    if isinstance(value, (list, tuple)) and all(type(v) is int for v in value):
        out: list[int] = []
        for v in value:
            mapped = _map_axes(v, ndim, depth_at, with_depth)
            out += mapped if isinstance(mapped, list) else [mapped]
        return type(value)(out) if isinstance(value, tuple) else out
    return value


class _ShapeAwarePass:
    """Rewrite ``graph`` for 5-D tensors using the axis roles of the 2D probes.

    ``depth_at[node]`` records, for each value whose 3D twin has a depth axis, the 2D axis it sits before (the H
    axis of a map; the pooled 1-axis of a (N, C, 1, 1) map that became (N, C, 1, 1, 1)).
    """

    def __init__(self, gm: fx.GraphModule, graph: fx.Graph, ctx: ConvertContext, shapes: Any) -> None:
        self.gm, self.graph, self.ctx, self.shapes = gm, graph, ctx, shapes
        self.depth_at: dict[fx.Node, int] = {}
        self.spatial: dict[fx.Node, _SpatialSize] = {}
        self.slices: dict[fx.Node, tuple[list[int], list[int]]] = {}

    def ndim(self, node: Any) -> int | None:
        return self.shapes.ndim(node)

    def run(self) -> None:
        for node in list(self.graph.nodes):
            self.visit(node)
            if node.op in ("call_method", "call_function"):
                before = (node.args, dict(node.kwargs))
                _insert_depth_sizes(self.graph, node, self.spatial)
                if before == (node.args, dict(node.kwargs)):
                    self.view_depth(node)
            self.record(node)
        self.graph.lint()

    def record(self, node: fx.Node) -> None:
        """Where the node's 3D value has its depth axis (after its rewrite)."""
        h_axis = self.shapes.h_axis(node)
        if h_axis is not None:
            self.depth_at[node] = h_axis
            return
        if node in self.depth_at or node.op in ("placeholder", "get_attr", "output"):
            return
        ndim = self.ndim(node)
        if ndim is not None and ndim >= 3 and self._rank_agnostic(node):
            # view([b, c] + [1] * (x.ndim - 2)): written for any rank, it already has a trailing 1 for depth
            self.depth_at[node] = ndim - 2
            return
        if node.op == "call_module":
            module = self.gm.get_submodule(str(node.target))
            if find_rule(module) is not None and ndim == 4:
                self.depth_at[node] = 2  # a converted layer returns (N, C, D, H, W), pooled or not
                return
        relayout = node.target in ("view", "reshape", "flatten", "unflatten", "movedim", "view_as", "reshape_as") or (
            node.target in (torch.reshape, torch.flatten, torch.unflatten, torch.movedim)
        )
        for source in [] if relayout else node.all_input_nodes:
            if source in self.depth_at and self.ndim(source) == ndim and ndim is not None:
                self.depth_at[node] = self.depth_at[source]  # same-rank ops keep the layout
                return
        if node.op == "call_function" and node.target is operator.getitem:
            source = node.args[0]
            if isinstance(source, fx.Node) and source in self.depth_at and self.ndim(source) is None:
                self.depth_at[node] = self.depth_at[source]  # an element of split / chunk / unbind
        if node.op == "call_method" and node.target in ("split", "chunk") and node.args[0] in self.depth_at:
            self.depth_at[node] = self.depth_at[node.args[0]]
        if node.op == "call_function" and node.target in (torch.split, torch.chunk) and node.args[0] in self.depth_at:
            self.depth_at[node] = self.depth_at[node.args[0]]

    def view_depth(self, node: fx.Node) -> None:
        """A view / reshape whose output has an H axis gets the input's depth before it when no (h, w) size pair
        gave it one (TResNet's space-to-depth ``x.view(n, c, h // 4, 4, w // 4, 4)``: depth is carried along)."""
        is_method = node.op == "call_method" and node.target in ("view", "reshape")
        if not (is_method or node.op == "call_function" and node.target is torch.reshape):
            return
        source = node.args[0]
        h_out = self.shapes.h_axis(node)
        if h_out is None or source not in self.depth_at or self._rank_agnostic(node):
            return
        rest = list(node.args[1:])
        sizes = list(rest[0]) if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else rest
        if len(sizes) != self.ndim(node) or any(isinstance(v, fx.Node) and v in self.shapes.shapes for v in sizes):
            return
        with self.graph.inserting_before(node):
            depth = self.graph.call_method("size", (source, self.depth_at[source]))
        sizes.insert(h_out, depth)
        node.args = (source, sizes) if len(rest) == 1 else (source, *sizes)

    def _rank_agnostic(self, node: fx.Node) -> bool:
        """A view / reshape / expand whose sizes are computed from the rank of a map (``x.ndim``, ``x.dim()``)."""
        is_view = (
            node.op == "call_method"
            and node.target in ("view", "reshape", "expand")
            or (node.op == "call_function" and node.target is torch.reshape)
        )
        if not is_view:
            return False
        stack, seen = list(node.all_input_nodes[1:] if node.op == "call_method" else node.all_input_nodes), set()
        while stack:
            current = stack.pop()
            if current in seen or current in self.shapes.shapes:
                continue
            seen.add(current)
            if _is_rank_source(current) and current.args[0] in self.depth_at:
                return True
            stack.extend(current.all_input_nodes)
        return False

    def visit(self, node: fx.Node) -> None:
        op, target = node.op, node.target
        if op == "call_function" and target is operator.getitem and _is_shape_source(node.args[0]):
            self.shape_item(node)
        elif op == "call_function" and target is operator.getitem and node.args[0] in self.slices:
            self.slice_item(node)
        elif op == "call_function" and target is operator.getitem:
            self.tensor_index(node)
        elif op == "call_method" and target == "size" and len(node.args) == 2 and type(node.args[1]) is int:
            source, index = node.args
            depth_at = self.depth_at.get(source)
            ndim = self.ndim(source)
            if depth_at is not None and ndim is not None:
                node.args = (source, _map_axis(index, ndim, depth_at))
                axis = self._spatial_axis(source, index)
                if axis:
                    self.spatial[node] = _SpatialSize(axis, source, depth_at, method=True)
        elif op == "call_function" and target in _COMPARISONS:
            first, second = node.args[:2]
            rank_of = first if _is_rank_source(first) else second
            if _is_rank_source(rank_of) and rank_of.args[0] in self.depth_at:
                _rewrite_rank_check(node)
        elif (op == "call_method" and target in _REDUCTION_METHODS) or (
            op == "call_function" and target in _REDUCTION_FUNCTIONS
        ):
            self.reduction(node)
        elif op == "call_method" and target == "permute" or op == "call_function" and target is torch.permute:
            self.permute(node)
        elif (
            op == "call_method"
            and target in ("transpose", "swapaxes", "swapdims")
            or (op == "call_function" and target in (torch.transpose, torch.swapaxes))
        ):
            self.transpose(node)
        elif op == "call_method" and target == "flatten" or op == "call_function" and target is torch.flatten:
            self.flatten(node)
        elif op == "call_method" and target == "repeat":
            if self.depth_at.get(node.args[0]) == 2 and self.ndim(node.args[0]) == 4:
                _rewrite_repeat(node, self.ctx)
        elif op == "call_function" and target is operator.mul and _spatial_pair(node.args, 0, self.spatial):
            with self.graph.inserting_before(node):  # h * w -> d * h * w (the number of positions)
                depth_h = self.graph.call_function(
                    operator.mul, (self.spatial[node.args[0]].depth_node(self.graph), node.args[0])
                )
            node.args = (depth_h, node.args[1])
        elif (op == "call_method" and target in _AXIS_METHODS) or (op == "call_function" and target in _AXIS_FUNCTIONS):
            self.axis_op(node)
        elif op == "call_function" and target is F.pad:
            self.pad(node)
        elif op == "call_function":
            _rewrite_function(self.graph, node, self.ctx, self.spatial)
        if (op == "call_function" and target in _BINARY_FUNCTIONS) or (
            op == "call_method" and target in _BINARY_METHODS
        ):
            self.broadcast(node)

    def _spatial_axis(self, source: fx.Node, index: int) -> str | None:
        roles = self.shapes.roles.get(source)
        if not roles or not -len(roles) <= index < len(roles):
            return None
        return {"H": "h", "W": "w"}.get(roles[index])

    def shape_item(self, node: fx.Node) -> None:
        shape_node, index = node.args
        source = shape_node.args[0]
        depth_at, ndim = self.depth_at.get(source), self.ndim(source)
        if depth_at is None or ndim is None:
            return
        if type(index) is int:
            node.args = (shape_node, _map_axis(index, ndim, depth_at))
            axis = self._spatial_axis(source, index)
            if axis:
                self.spatial[node] = _SpatialSize(axis, shape_node, depth_at)
        elif isinstance(index, slice) and index.step in (None, 1):
            old_axes = list(range(ndim))[index]
            if not old_axes:
                return
            new_axes = []
            for axis in old_axes:
                if axis == depth_at:
                    new_axes.append(depth_at)
                new_axes.append(axis if axis < depth_at else axis + 1)
            start, stop = new_axes[0], new_axes[-1] + 1
            negative = index.start is not None and index.start < 0
            node.args = (
                shape_node,
                slice(start - (ndim + 1) if negative else start, None if stop == ndim + 1 else stop),
            )
            self.slices[node] = (old_axes, new_axes, source, depth_at)

    def slice_item(self, node: fx.Node) -> None:
        """``h, w = x.shape[-2:]``: element j of the old slice is element j' of the new one."""
        slice_node, index = node.args
        old_axes, new_axes, source, depth_at = self.slices[slice_node]
        if type(index) is not int or not -len(old_axes) <= index < len(old_axes):
            return
        axis = old_axes[index]
        node.args = (slice_node, new_axes.index(axis if axis < depth_at else axis + 1))
        role = self._spatial_axis(source, axis)
        if role and depth_at in new_axes:
            self.spatial[node] = _SpatialSize(role, slice_node, new_axes.index(depth_at))

    def tensor_index(self, node: fx.Node) -> None:
        source, index = node.args
        depth_at = self.depth_at.get(source)
        if depth_at is None or not isinstance(index, tuple) or Ellipsis in index:
            return
        if len(index) <= depth_at or not all(isinstance(i, (slice, int)) or i is None for i in index):
            return
        if any(i is None for i in index[: depth_at + 1]):
            return
        h_index = index[depth_at]
        depth = slice(None) if self.ctx.keep_depth or not isinstance(h_index, slice) else h_index
        node.args = (source, (*index[:depth_at], depth, *index[depth_at:]))

    def reduction(self, node: fx.Node) -> None:
        source = node.args[0] if node.args else None
        depth_at, ndim = self.depth_at.get(source), self.ndim(source)
        if depth_at is None or ndim is None:
            return
        if "dim" in node.kwargs:
            dims = node.kwargs["dim"]
            node.kwargs = {**node.kwargs, "dim": _map_axes(dims, ndim, depth_at, True)}
        elif len(node.args) > 1 and (type(node.args[1]) is int or isinstance(node.args[1], (list, tuple))):
            dims = node.args[1]
            node.args = (source, _map_axes(dims, ndim, depth_at, True), *node.args[2:])
        else:
            return
        if not (type(dims) is int or all(type(d) is int for d in dims)):
            return
        reduced = {d % ndim for d in ([dims] if type(dims) is int else dims)}
        keepdim = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)
        if keepdim is True:
            self.depth_at[node] = depth_at
        elif depth_at not in reduced:
            self.depth_at[node] = depth_at - sum(1 for d in reduced if d < depth_at)

    def pad(self, node: fx.Node) -> None:
        """``F.pad``: pairs run from the last axis backwards; depth's pair enters after H's, padded like H
        (``keep_depth``: not at all). Channel pads (MONAI ChannelPad) and channels-last pads keep their meaning."""
        args, kwargs = list(node.args), dict(node.kwargs)
        source = args[0]
        depth_at, ndim = self.depth_at.get(source), self.ndim(source)
        pad = _get_arg(args, kwargs, 1, "pad")
        if depth_at is None or ndim is None or not isinstance(pad, (list, tuple)):
            return
        after = 2 * (ndim - depth_at)  # entries up to and including H's pair
        if len(pad) < after:
            return  # H is not padded: depth is not either
        front = (0, 0) if self.ctx.keep_depth else (pad[after - 2], pad[after - 1])
        _set_arg(args, kwargs, 1, "pad", (*pad[:after], *front, *pad[after:]))
        node.args, node.kwargs = tuple(args), kwargs

    def permute(self, node: fx.Node) -> None:
        source = node.args[0]
        depth_at, ndim = self.depth_at.get(source), self.ndim(source)
        if node.op == "call_method":
            dims = list(node.args[1:]) if len(node.args) > 2 else node.args[1]
        else:
            dims = node.args[1] if len(node.args) > 1 else node.kwargs["dims"]
        if depth_at is None or ndim is None or not all(type(d) is int for d in dims) or len(dims) != ndim:
            return
        dims = [d + ndim if d < 0 else d for d in dims]
        self._refuse_hw_swap(
            node, source, dims, f"permute{tuple(node.args[1:]) if len(node.args) > 2 else tuple(dims)}"
        )
        new = _map_axes(dims, ndim, depth_at, True)
        node.args, node.kwargs = (source, list(new)), {}
        self.depth_at[node] = dims.index(depth_at)

    def _refuse_hw_swap(self, node: fx.Node, source: fx.Node, order: list[int], what: str) -> None:
        """A permutation that puts a map's W axis before its H axis has no unique 3D counterpart (where would
        depth go?); channels-last and attention-style permutes keep H before W."""
        roles = self.shapes.roles.get(source) or ()
        if "H" in roles and "W" in roles and order.index(roles.index("H")) > order.index(roles.index("W")):
            raise NotImplementedError(
                f"{what} at '{_where(node)}' swaps the H and W axes of a {len(roles)}-D map: no unique 3D "
                f"counterpart (depth sits before H in 3D)"
            )

    def transpose(self, node: fx.Node) -> None:
        source = node.args[0]
        depth_at, ndim = self.depth_at.get(source), self.ndim(source)
        if depth_at is None or ndim is None or len(node.args) < 3:
            return
        first, second = node.args[1], node.args[2]
        if type(first) is not int or type(second) is not int:
            return
        first, second = first % ndim, second % ndim
        order = list(range(ndim))
        order[first], order[second] = order[second], order[first]
        self._refuse_hw_swap(node, source, order, f"transpose({node.args[1]}, {node.args[2]})")
        new = _map_axes(order, ndim, depth_at, True)
        node.op, node.target = "call_method", "permute"  # depth travels with H
        node.args, node.kwargs = (source, list(new)), {}
        self.depth_at[node] = order.index(depth_at)

    def flatten(self, node: fx.Node) -> None:
        source = node.args[0]
        depth_at, ndim = self.depth_at.get(source), self.ndim(source)
        if depth_at is None or ndim is None:
            return
        args, kwargs = list(node.args), dict(node.kwargs)
        start = _get_arg(args, kwargs, 1, "start_dim", 0)
        end = _get_arg(args, kwargs, 2, "end_dim", -1)
        if type(start) is not int or type(end) is not int:
            return
        start, end = start % ndim, end % ndim
        new_start = start if start <= depth_at else start + 1
        new_end = end if end < depth_at else end + 1
        if "start_dim" in kwargs or len(args) > 1:
            _set_arg(args, kwargs, 1, "start_dim", new_start)
        if "end_dim" in kwargs or len(args) > 2:
            _set_arg(args, kwargs, 2, "end_dim", new_end)
        node.args, node.kwargs = tuple(args), kwargs

    def axis_op(self, node: fx.Node) -> None:
        kind_table = _AXIS_METHODS if node.op == "call_method" else _AXIS_FUNCTIONS
        position, kind = kind_table[node.target]
        source = node.args[0] if node.args else None
        if node.op == "call_function" and node.target in (torch.cat, torch.concat, torch.stack):
            tensors = source if isinstance(source, (list, tuple)) else []
            source = next((t for t in tensors if t in self.depth_at), None)
        depth_at, ndim = self.depth_at.get(source), self.ndim(source)
        if depth_at is None or ndim is None:
            return
        args, kwargs = list(node.args), dict(node.kwargs)
        key = next((k for k in _AXIS_KWARGS if k in kwargs), None)
        value = kwargs[key] if key else (args[position] if len(args) > position else None)
        if value is None:
            return
        rank = ndim + 1 if kind == "insert" else ndim
        if type(value) is int:
            axis = value + rank if value < 0 else value
            if kind == "insert":
                new = axis if axis <= depth_at else axis + 1
                self.depth_at[node] = depth_at + 1 if axis <= depth_at else depth_at
                new = new - (rank + 1) if value < 0 else new
            else:
                new = _map_axis(value, ndim, depth_at)
                if kind == "remove" and axis != depth_at:
                    self.depth_at[node] = depth_at - 1 if axis < depth_at else depth_at
        elif isinstance(value, (list, tuple)) and all(type(v) is int for v in value):
            new = _map_axes(value, ndim, depth_at, False)
        else:
            return
        if key:
            kwargs[key] = new
        else:
            args[position] = new
        node.args, node.kwargs = tuple(args), kwargs

    def broadcast(self, node: fx.Node) -> None:
        """Give a depth axis to the operands of an elementwise op that broadcast against a map without one:
        a (C, 1, 1) parameter, a (N, C, 1, 1) gate re-viewed from pooled values, a ``view(C, 1, 1)``."""
        out_ndim = self.ndim(node)
        out_at = self.shapes.h_axis(node)
        if out_at is None:
            for source in node.all_input_nodes:
                if source in self.depth_at and self.ndim(source) is not None and out_ndim is not None:
                    out_at = self.depth_at[source] + out_ndim - self.ndim(source)
                    break
        if out_at is None or out_ndim is None:
            return
        for source in list(node.all_input_nodes):
            ndim = self.ndim(source)
            if ndim is None or source in self.depth_at:
                continue
            aligned = out_at - (out_ndim - ndim)
            if aligned < 0:
                continue  # the operand does not reach the depth position: broadcasting is unchanged
            with self.graph.inserting_before(node):
                expanded = self.graph.call_method("unsqueeze", (source, aligned))
            node.replace_input_with(source, expanded)
            self.depth_at[expanded] = aligned
            self.shapes.shapes[expanded] = self.shapes.shapes[source]
        self.depth_at[node] = out_at
