"""Shape-aware layout analysis of a traced 2D graph: which axis of every value is H, W or flattened H x W.

The 2D graph is run three times on the ``meta`` device (no arithmetic, no memory): on an (N, C, S, S) input, on
(N, C, 2S, S) and on (N, C, S, 2S). An axis of a node's tensor whose size follows the input height is ``"H"``, one
that follows the width is ``"W"``, one that follows both is ``"HW"`` (flattened tokens); the others (batch,
channels, heads, pooled 1 x 1 axes) have no role. Integer values (sizes read from shapes, ``h * w``) get roles the
same way. The graph pass (:mod:`monai_acs.convert.graph`) decides its layout rewrites from these roles, not from
argument patterns: where depth enters each tensor (just before its H axis), which axes a reduction / permute /
transpose / concatenation names, and which operands of a broadcast need a depth axis.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

__all__ = ["GraphShapes", "candidate_in_channels", "input_dtype", "probe_graph_shapes"]


def input_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's first floating parameter / buffer (float32 when it has none)."""
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


_PROBE_EDGES = (64, 128, 224, 32, 256, 160, 192)


@dataclass
class GraphShapes:
    """What the 2D probes found: per node, the base shape (tensors) or value (ints) and the axis roles."""

    edge: int
    shapes: dict[fx.Node, tuple[int, ...]] = field(default_factory=dict)
    roles: dict[fx.Node, tuple[str | None, ...]] = field(default_factory=dict)
    int_roles: dict[fx.Node, str] = field(default_factory=dict)

    def h_axis(self, node: Any) -> int | None:
        """Index of the H axis of ``node``'s 2D tensor, or None."""
        roles = self.roles.get(node) if isinstance(node, fx.Node) else None
        if roles and "H" in roles:
            return roles.index("H")
        return None

    def ndim(self, node: Any) -> int | None:
        shape = self.shapes.get(node) if isinstance(node, fx.Node) else None
        return len(shape) if shape is not None else None


def _meta_root(gm: nn.Module, graph: fx.Graph) -> nn.Module:
    """A meta-device copy of the modules and tensors ``graph`` refers to (the weights are not duplicated)."""
    memo: dict[int, Any] = {}
    for tensor in [*gm.parameters(), *gm.buffers()]:
        meta = torch.empty_like(tensor, device="meta")
        memo[id(tensor)] = nn.Parameter(meta, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else meta
    root = nn.Module()
    for name, child in gm.named_children():
        root.add_module(name, copy.deepcopy(child, memo))
    for node in graph.nodes:
        if node.op != "get_attr":
            continue
        *path, last = str(node.target).split(".")
        owner: Any = gm
        for part in path:
            owner = getattr(owner, part)
        if owner is gm:
            value = getattr(gm, last)
            if isinstance(value, torch.Tensor):
                value = memo.get(id(value), torch.empty_like(value, device="meta"))
            setattr(root, last, value)
    return root.eval()


class _Recorder(fx.Interpreter):
    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module, garbage_collect_values=True)
        self.values: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        if isinstance(result, torch.Tensor):
            self.values[n] = tuple(result.shape)
        elif isinstance(result, (int, torch.SymInt)) and not isinstance(result, bool):
            self.values[n] = int(result)
        elif isinstance(result, (tuple, list)) and all(isinstance(v, int) for v in result):
            self.values[n] = ("size", tuple(int(v) for v in result))
        return result


def candidate_in_channels(model: nn.Module) -> list[int]:
    """Input channel counts to try for a 2D model, first match first: the layers' ``in_channels`` (the first
    layer's first), 3 and 1, the channel sizes of norms / linear layers / kernels, then 4.

    A stem such as TResNet's space-to-depth comes before the first convolution; a block without convolutions
    (channel shuffle, layer scale) is sized by its norms."""
    convs, others = [], []
    for module in model.modules():
        channels = getattr(module, "in_channels", None)
        if isinstance(channels, int) and isinstance(getattr(module, "weight", None), torch.Tensor):
            convs.append(channels)
        for name in ("num_features", "in_features", "num_channels"):
            value = getattr(module, name, None)
            if isinstance(value, int):
                others.append(value)
        shape = getattr(module, "normalized_shape", None)
        if isinstance(shape, tuple) and len(shape) == 1:
            others.append(int(shape[0]))
    kernels = [int(p.shape[1]) for p in model.parameters() if p.dim() == 4]  # functional convolutions' kernels
    ordered = convs[:1] + [3, 1] + convs[1:3] + kernels[:1] + others[:2] + [4]
    return list(dict.fromkeys(ordered))[:8]


def probe_graph_shapes(gm: nn.Module, graph: fx.Graph) -> GraphShapes | None:
    """Run ``graph`` (of the 2D module ``gm``) on meta inputs of three sizes and infer every node's axis roles.

    Returns:
        The roles, or None when the graph does not take one (N, C, H, W) input, the input channels are unknown, or
        the 2D forward does not run at any probe size (a fixed input size: learned position embeddings and the
        like) — the graph pass then falls back to its pattern rules.
    """
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    required = [n for n in placeholders if not n.args]  # args hold a default value
    if len(required) != 1 or placeholders[0] is not required[0]:
        return None
    copied = fx.Graph()
    mapping: dict[fx.Node, fx.Node] = {}
    output = copied.graph_copy(graph, mapping)
    copied.output(output)
    try:
        runner = fx.GraphModule(_meta_root(gm, graph), copied)
    except Exception:  # noqa: BLE001 - nothing to probe with
        return None
    back = {new: old for old, new in mapping.items()}
    channels, dtype = None, input_dtype(gm)
    for candidate in candidate_in_channels(gm):
        try:
            with torch.no_grad():
                runner(torch.empty(2, candidate, _PROBE_EDGES[0], _PROBE_EDGES[0], device="meta", dtype=dtype))
        except Exception:  # noqa: BLE001, S112 - not this channel count (or not this size: tried below)
            continue
        channels = candidate
        break
    if channels is None:
        channels = candidate_in_channels(gm)[0] if candidate_in_channels(gm) else None
    if channels is None:
        return None
    fixed_sizes = []
    for edge in _PROBE_EDGES:
        runs = []
        for h, w in ((edge, edge), (2 * edge, edge), (edge, 2 * edge)):
            recorder = _Recorder(runner)
            try:
                with torch.no_grad():
                    recorder.run(torch.empty(2, channels, h, w, device="meta", dtype=dtype))
            except Exception:  # noqa: BLE001 - try the next probe size
                break
            runs.append(recorder.values)
        if len(runs) == 3:
            return _roles(edge, runs, back)
        if len(runs) == 1 and not _runs(runner, channels, 2 * edge, 2 * edge, dtype):
            fixed_sizes.append(edge)
    if fixed_sizes and len(fixed_sizes) == 1:
        raise FixedSizeError(
            f"the 2D forward runs at {fixed_sizes[0]} x {fixed_sizes[0]} but at no other probed size "
            f"({', '.join(f'{2 * e} x {e}' for e in _PROBE_EDGES[:3])}, ...): it is tied to a fixed 2D grid (learned "
            f"position embeddings or attention biases indexed by (H, W)), which has no 3D counterpart"
        )
    return None


class FixedSizeError(NotImplementedError):
    """A 2D graph that runs at one input size only (position embeddings / attention biases over a fixed grid)."""


def _runs(runner: nn.Module, channels: int, h: int, w: int, dtype: torch.dtype) -> bool:
    try:
        with torch.no_grad():
            runner(torch.empty(2, channels, h, w, device="meta", dtype=dtype))
    except Exception:  # noqa: BLE001
        return False
    return True


def _roles(edge: int, runs: list[dict], back: dict[fx.Node, fx.Node]) -> GraphShapes:
    base, taller, wider = runs
    result = GraphShapes(edge)
    for new_node, value in base.items():
        node = back.get(new_node)
        if node is None:
            continue
        tall, wide = taller.get(new_node), wider.get(new_node)
        if isinstance(value, tuple) and value and value[0] == "size":
            continue
        if isinstance(value, int):
            if isinstance(tall, int) and isinstance(wide, int):
                role = _role(value != tall, value != wide)
                if role:
                    result.int_roles[node] = role
            continue
        if not (isinstance(tall, tuple) and isinstance(wide, tuple) and len(tall) == len(wide) == len(value)):
            continue
        result.shapes[node] = value
        result.roles[node] = tuple(_role(a != b, a != c) for a, b, c in zip(value, tall, wide))
    return result


def _role(follows_h: bool, follows_w: bool) -> str | None:
    if follows_h and follows_w:
        return "HW"
    if follows_h:
        return "H"
    if follows_w:
        return "W"
    return None
