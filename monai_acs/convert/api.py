"""``convert_to_3d``: any 2D CNN, with its 2D weights, as a natively 3D network."""

from __future__ import annotations

import copy
import functools
import inspect
import os
import warnings
from dataclasses import replace
from typing import Any

import torch
from torch import fx, nn

from ..layers import get_operator, keep_channels_last
from .adapters import find_adapter
from .graph import (
    ConvertedGraphModule,
    _where,
    correct_depth,
    depth_one_modules,
    leftover_2d_nodes,
    rewrite_graph,
    scan_untraced_code,
    trace_2d,
    warn_untraced,
)
from .rules import LEFTOVER_2D_MODULES, ConvertContext, find_rule, keep_depth_correction
from .shapes import candidate_in_channels, input_dtype
from .weights import load_2d_weights

__all__ = ["ConversionError", "convert_to_3d", "find_leftover_2d"]


class ConversionError(ValueError):
    """A 2D network that ``convert_to_3d`` cannot turn into a correct 3D network: raised at conversion time with
    what failed and where (graph node, module path, source line of the 2D code)."""


def _replace_child(root: nn.Module, qualified_name: str, new: nn.Module) -> None:
    parent_name, _, child = qualified_name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def _convert_module(module: nn.Module, ctx: ConvertContext, where: str) -> nn.Module:
    try:
        return find_rule(module)(module, ctx)
    except (NotImplementedError, ValueError, TypeError) as error:
        raise type(error)(f"cannot convert '{where}' ({type(module).__name__}): {error}") from error


def _swap_modules(
    root: nn.Module, ctx: ConvertContext, prefix: str = "", depth_one: set[str] | None = None
) -> dict[str, int]:
    """Replace every rule-table module below ``root`` (itself excluded) by its 3D counterpart.

    Modules named in ``depth_one`` see depth-1 maps only: a ``depth`` option becomes 1 for them.

    Returns:
        The ``keep_depth`` depth corrections (see :func:`keep_depth_correction`) by module name, non-zero only.
    """
    depth_one_ctx = replace(ctx, options={**ctx.options, "depth": 1})
    corrections = {}
    for name, module in list(root.named_modules()):
        if name and find_rule(module) is not None:
            local = depth_one_ctx if depth_one and name in depth_one else ctx
            new = _convert_module(module, local, f"{prefix}{name}")
            correction = keep_depth_correction(module, new, ctx)
            if correction > 0 and "depth" in local.options:
                # the graph pads `correction` slices in front of this layer (even kernel height): a fixed-depth
                # layer (A3D) must be built for the padded depth it will see
                padded = replace(local, options={**local.options, "depth": local.options["depth"] + correction})
                new = _convert_module(module, padded, f"{prefix}{name}")
            if correction:
                corrections[name] = correction
            _replace_child(root, name, new)
    return corrections


def _convert_traced(
    model: nn.Module, graphs: tuple[fx.Graph, fx.Graph | None], ctx: ConvertContext, prefix: str
) -> ConvertedGraphModule:
    train_graph, eval_graph = graphs
    live_graphs = [g for g in (train_graph, eval_graph) if g is not None]
    gm = ConvertedGraphModule(model, train_graph, eval_graph, class_name=type(model).__name__)
    gm.restore_containers(model)
    for graph in live_graphs:
        try:
            rewrite_graph(gm, graph, ctx)
        except NotImplementedError as error:
            where = prefix.rstrip(".")
            raise NotImplementedError(f"{where + ': ' if where else ''}{error}") from error
    depth_one = None
    if ctx.keep_depth and "depth" in ctx.options:
        depth_one = depth_one_modules(gm, live_graphs)
    padding_modes = {name: getattr(m, "padding_mode", "zeros") for name, m in gm.named_modules()}
    corrections = _swap_modules(gm, ctx, prefix, depth_one)
    for graph in live_graphs:
        correct_depth(graph, corrections, padding_modes)
    gm.graph = train_graph if model.training or eval_graph is None else eval_graph  # recompiles forward
    _restore_untraced_state(gm, model, ctx, prefix)
    gm.train(model.training)
    return gm


def _resolve(root: nn.Module, path: str) -> Any:
    value: Any = root
    for part in path.split(".") if path else []:
        value = getattr(value, part, None)
        if value is None:
            return None
    return value


def _holder(root: nn.Module, path: str) -> nn.Module:
    """The module at ``path`` below ``root``, creating plain ``nn.Module`` holders where the path is missing."""
    module = root
    for part in path.split(".") if path else []:
        child = getattr(module, part, None)
        if not isinstance(child, nn.Module):
            child = nn.Module()
            module.add_module(part, child)
        module = child
    return module


def _restore_untraced_state(gm: nn.Module, model: nn.Module, ctx: ConvertContext, prefix: str) -> None:
    """Give the graph module what ``torch.fx`` drops because the forward never reads it, so that the state dict keys
    equal the 2D model's: modules registered under a second name (MONAI ``DynUNet``'s ``skip_layers``) become the
    same converted module under both names; unused modules are converted and attached; unused parameters and
    buffers are attached as they are."""
    canonical = {id(m): name for name, m in model.named_modules()}
    for name, module in model.named_modules(remove_duplicate=False):
        if not name or _resolve(gm, name) is not None:
            continue
        first = canonical.get(id(module), name)
        parent_name, _, child_name = name.rpartition(".")
        if first != name and isinstance(_resolve(gm, first), nn.Module):
            _holder(gm, parent_name).add_module(child_name, _resolve(gm, first))
        else:
            converted = _convert_tree(copy.deepcopy(module), ctx, f"{prefix}{name}.", [])
            _holder(gm, parent_name).add_module(child_name, converted)
    present = set(gm.state_dict(keep_vars=True))
    for key, value in model.state_dict(keep_vars=True).items():
        if key in present:
            continue
        parent_name, _, attribute = key.rpartition(".")
        holder = _holder(gm, parent_name)
        if isinstance(value, nn.Parameter):
            holder.register_parameter(attribute, value)
        else:
            holder.register_buffer(attribute, value)


def _trace_error(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:160]}" if lines else type(error).__name__


def _needs_conversion(module: nn.Module) -> bool:
    """False for a subtree of ``torch.nn`` modules without rule-table modules (``ReLU``, ``Linear``, ...)."""
    return any(find_rule(m) is not None or not type(m).__module__.startswith("torch.nn") for m in module.modules())


def _convert_tree(module: nn.Module, ctx: ConvertContext, prefix: str, untraced: list) -> nn.Module:
    """Convert ``module``: trace it if possible, else keep its forward and convert its children one by one.

    ``untraced`` collects (qualified name, class name, trace error, layout-dependent names) of the modules whose
    forward could not be traced.
    """
    where = prefix.rstrip(".") or "<root>"
    if find_rule(module) is not None:
        new = _convert_module(module, ctx, where)
        if keep_depth_correction(module, new, ctx):
            warnings.warn(
                f"keep_depth: '{where}' ({type(module).__name__}, kernel {module.kernel_size}) has an even kernel "
                f"height and is not inside a traced graph, so its output depth differs from its input depth by "
                f"{keep_depth_correction(module, new, ctx)} slice(s)",
                stacklevel=4,
            )
        return new
    if not _needs_conversion(module):
        return module
    if type(module).forward is not nn.Module.forward:  # ModuleList / ModuleDict have no forward to trace
        try:
            graphs = trace_2d(module)
        except Exception as error:  # noqa: BLE001 - any tracing failure: fall back to the children
            adapter = find_adapter(module)
            if adapter is None:
                untraced.append((where, type(module).__name__, _trace_error(error), scan_untraced_code(module)[1]))
        else:
            return _convert_traced(module, graphs, ctx, prefix)
    else:
        adapter = None
    token_children = adapter.token_children if adapter is not None else ()
    for name, child in list(module.named_children()):
        if name not in token_children:  # an adapter's token-sequence children have no spatial axes
            setattr(module, name, _convert_tree(child, ctx, f"{prefix}{name}.", untraced))
    return adapter(module, ctx) if adapter is not None else module


def _is_foreign(module: nn.Module) -> bool:
    """A module whose code is neither torch's nor this package's (so it may hide 2D functional calls)."""
    name = type(module).__module__
    return not (name.startswith(("torch.", "monai_acs.")) or isinstance(module, fx.GraphModule))


def find_leftover_2d(model: nn.Module) -> list[str]:
    """List what in a model is still 2D, as ``qualified.name (Class): what``.

    It reports 2D module types (``Conv2d``, ``MaxPool2d``, bilinear ``Upsample``, ``LayerNorm2d``, ...), calls of
    2D-only functions (``F.conv2d``, ``F.max_pool2d``, bilinear ``F.interpolate``, ...) in converted graphs, and
    2D-only functions named in the code of modules that could not be traced (these keep their own forward).

    Args:
        model: a converted (or any) model.

    Returns:
        The sorted list of findings; empty for a fully 3D model.

    Examples:
        >>> from torch import nn
        >>> find_leftover_2d(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()))
        ['0 (Conv2d): 2D module']
        >>> find_leftover_2d(convert_to_3d(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())))
        []
    """
    found = []
    for name, module in model.named_modules():
        where = name or "<root>"
        layer_norm_2d = type(module).__name__ == "LayerNorm2d" and not isinstance(module, fx.GraphModule)
        if isinstance(module, LEFTOVER_2D_MODULES) or layer_norm_2d:
            found.append(f"{where} ({type(module).__name__}): 2D module")
        elif isinstance(module, nn.Upsample) and module.mode in ("bilinear", "bicubic"):
            found.append(f"{where} (Upsample): mode={module.mode!r}")
        if isinstance(module, ConvertedGraphModule):
            graphs = [module._train_graph] + ([module._eval_graph] if module._eval_graph is not None else [])
            for graph in graphs:
                found += leftover_2d_nodes(graph, name)
        elif _is_foreign(module):
            only_2d = scan_untraced_code(module)[0]
            if only_2d:
                found.append(f"{where} ({type(module).__name__}): untraceable forward uses {only_2d}")
    return sorted(set(found))


def convert_to_3d(
    model: nn.Module,
    operator: str = "acs",
    *,
    weights: Any = None,
    inplace: bool = False,
    strict: bool = True,
    keep_depth: bool = False,
    verify: bool = True,
    **operator_options: Any,
) -> nn.Module:
    """Convert a 2D CNN, with its 2D weights, into a natively 3D network.

    Modules are swapped through an exact-type rule table (convolutions by the chosen fusion operator, norms,
    pools, upsampling, dropout, padding), and the forward is traced with ``torch.fx`` so that functional calls and
    shape arithmetic (``x.shape[-2:]``, bilinear ``F.interpolate``, ``x.mean([2, 3])``, channels-last permutes,
    ``x.size()`` unpacking) are rewritten for (N, C, D, H, W) tensors. A module whose forward cannot be traced keeps
    its forward and has its children converted one by one; a warning names it when its code uses layout-dependent
    names (``shape``, ``view``, ``pad``, ...), and 2D-only functions in it count as 2D leftovers. The rules are listed
    in ``docs/converter.md``.

    Args:
        model: the 2D network (torchvision, MONAI ``spatial_dims=2``, or your own).
        operator: registry key: ``"acs"`` (default), ``"mean_acs"``, ``"soft_acs"``, ``"conv2p5d"``, ``"i3d"``,
            ``"p3d"``, ``"tsm"``, ``"a3d"`` (see :func:`monai_acs.list_operators`).
        weights: 2D weights loaded into the 2D model before conversion: a state dict, a file, a torchvision
            weights enum or its name (``"ResNet18_Weights.IMAGENET1K_V1"``, read from torchvision's cache, downloaded into it once when missing).
            The converted model's parameters keep the 2D names (and, except I3D/P3D/A3D extras, shapes).
        inplace: skip the deep copy. ``model`` is then consumed: weights are loaded into it, a traced model is
            returned as a new graph module that reuses ``model``'s unconverted submodules (``Linear``, activations:
            the same parameters), an untraceable one has its children replaced in place. Use the returned module.
            Default False.
        strict: raise if any 2D op is left after conversion; False only warns. Default True.
        verify: end by running the 2D model and the converted network once on the meta device (no arithmetic, no
            memory) and checking every output shape; a failure raises :class:`ConversionError` naming the graph
            node, module path and 2D source line. Default True.
        keep_depth: strides and pooling never act along depth, and convolutions keep the depth
            (few-slice inputs, A3D paper Sec. 2.3). Default False. Required for ``"a3d"``.
        **operator_options: passed to every layer's ``from_conv2d``, e.g. ``depth=7`` for ``"a3d"``.

    Returns:
        The converted ``nn.Module``: a :class:`~monai_acs.convert.graph.ConvertedGraphModule` (picklable,
        deep-copyable, scriptable, class name of the 2D model) when the model could be traced. Its
        ``nn.InstanceNorm3d`` and 1-deep ``nn.AvgPool3d`` modules keep channels-last CPU inputs channels-last
        (:func:`monai_acs.layers.keep_channels_last`).

    Raises:
        ValueError: unknown operator (naming the closest key), weights that do not fit (missing / unexpected keys,
            shape mismatches named with both shapes), ``a3d`` without ``keep_depth``/``depth``, or 2D operations left
            with ``strict=True`` (listed by qualified name).
        FileNotFoundError: a weights file or a torchvision weights file missing from the cache.
        NotImplementedError: a construct that has no 3D meaning (e.g. a fixed 2D interpolation size).
        ConversionError: (a ``ValueError``) the converted network fails the meta-device check (``verify``).

    Examples:
        >>> import torch, torchvision
        >>> net = convert_to_3d(torchvision.models.resnet18(num_classes=2), "acs").eval()
        >>> net(torch.randn(1, 3, 16, 32, 32)).shape
        torch.Size([1, 2])
    """
    spec = get_operator(operator)
    if spec.needs_depth:
        if not keep_depth:
            raise ValueError(
                f"operator {spec.name!r} needs a fixed depth at every layer: pass keep_depth=True (and depth=D)"
            )
        if "depth" not in operator_options:
            raise ValueError(
                f"operator {spec.name!r} needs the input depth: pass depth=D, e.g. depth=7 for 7-slice inputs"
            )
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert_to_3d expects an nn.Module, got {type(model).__name__}")
    model2d = model if inplace else copy.deepcopy(model)
    if weights is not None:
        load_2d_weights(model2d, weights)
    model2d_reference = _meta_copy(model2d) if verify else None  # before an in-place conversion consumes it
    ctx = ConvertContext(spec=spec, keep_depth=keep_depth, options=dict(operator_options))
    untraced: list[tuple[str, str, str, list[str]]] = []
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
    # InstanceNorm3d / 1-deep AvgPool3d keep a channels-last CPU input channels-last (same keys and results), so an
    # ACS network does not flip layouts at every norm; nothing changes for other inputs
    keep_channels_last(converted)
    if verify:
        real = None if inplace else model  # the caller's 2D model, untouched by a copying conversion
        verify_conversion(model2d_reference, converted, keep_depth, operator_options.get("depth"), real)
    return converted


_CHECK_EDGES = (64, 128, 224, 32, 256, 96, 160, 192)


def _meta_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` on the meta device; the weights are not duplicated."""
    memo: dict[int, Any] = {}
    for tensor in [*module.parameters(), *module.buffers()]:
        meta = torch.empty_like(tensor, device="meta")
        memo[id(tensor)] = nn.Parameter(meta, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else meta
    return copy.deepcopy(module, memo)


def _output_shapes(output: Any) -> list[tuple[int, ...]]:
    if isinstance(output, torch.Tensor):
        return [tuple(output.shape)]
    if isinstance(output, dict):
        return [s for key in output for s in _output_shapes(output[key])]
    if isinstance(output, (list, tuple)):
        return [s for value in output for s in _output_shapes(value)]
    return []


def _source_line(node: fx.Node) -> str:
    """``file:line: code`` of the 2D model's code that created ``node`` (its innermost frame outside torch)."""
    lines = [line.strip() for line in (node.stack_trace or "").strip().splitlines() if line.strip()]
    frames = [
        (line, lines[i + 1] if i + 1 < len(lines) else "") for i, line in enumerate(lines) if line.startswith("File ")
    ]
    torch_dir = os.path.dirname(torch.__file__)
    user = [f for f in frames if torch_dir not in f[0]]
    if not user:
        return "source line unknown"
    header, code = user[-1]
    parts = header.split('"')
    location = f"{parts[1]}:{header.split('line ')[-1].split(',')[0]}" if len(parts) > 2 else header
    return f"{location} `{code}`"


_SDPA = (torch.nn.functional.scaled_dot_product_attention, torch._C._nn.scaled_dot_product_attention)


def _check_attention_mask(args: tuple, kwargs: dict) -> None:
    """The meta kernel of ``scaled_dot_product_attention`` does not check that the mask (relative position biases
    of a fixed 2D window, ...) fits the (..., L, S) attention: check it here."""
    query, key = args[0], args[1]
    mask = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
    if isinstance(mask, torch.Tensor):
        torch.broadcast_shapes(tuple(mask.shape), (*query.shape[:-1], key.shape[-2]))


def _first_line(error: BaseException) -> str:
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[0][:300] if lines else ""


class _Locator(fx.Interpreter):
    """Runs a converted graph node by node and names the node that fails."""

    def run_node(self, n: fx.Node) -> Any:
        try:
            if n.op == "call_function" and n.target in _SDPA:
                _check_attention_mask(*self.fetch_args_kwargs_from_env(n))
            return super().run_node(n)
        except ConversionError:
            raise
        except Exception as error:
            raise ConversionError(
                f"node '{n.name}' ({n.op} {getattr(n.target, '__name__', n.target)}) at {_where(n)}, "
                f"{_source_line(n)}: {type(error).__name__}: {_first_line(error)}"
            ) from error


def _run_located(net: nn.Module, x: torch.Tensor) -> Any:
    """Run ``net`` on ``x``; a failure raises :class:`ConversionError` naming the graph node / module that failed."""
    graphs = [m for m in net.modules() if isinstance(m, ConvertedGraphModule)]
    for graph_module in graphs:  # every traced part runs node by node (an instance attribute shadows forward)
        graph_module.forward = functools.partial(_run_graph, graph_module)
    try:
        return _run_hooked(net, x)
    finally:
        for graph_module in graphs:
            del graph_module.forward


def _run_graph(graph_module: fx.GraphModule, *args: Any) -> Any:
    return _mutable(_Locator(graph_module).run(*args))


def _mutable(value: Any) -> Any:
    """The interpreter returns fx's immutable containers; the caller's code may mutate what the forward returns."""
    if isinstance(value, list):
        return [_mutable(v) for v in value]
    if isinstance(value, dict):
        return {k: _mutable(v) for k, v in value.items()}
    if type(value) is tuple or type(value).__name__ == "immutable_list":
        return tuple(_mutable(v) for v in value)
    return value


def _run_hooked(net: nn.Module, x: torch.Tensor) -> Any:
    stack: list[str] = []
    names = {id(m): n for n, m in net.named_modules()}
    handles = []

    def enter(module: nn.Module, args: Any) -> None:
        stack.append(names.get(id(module), "?"))

    def leave(module: nn.Module, args: Any, output: Any) -> None:
        if stack:
            stack.pop()

    for module in net.modules():
        handles.append(module.register_forward_pre_hook(enter))
        handles.append(module.register_forward_hook(leave))
    try:
        return net(x)
    except ConversionError:
        raise
    except Exception as error:
        where = stack[-1] if stack else "<root>"
        module = net.get_submodule(where) if where not in ("", "?", "<root>") else net
        try:
            source = f"{inspect.getsourcefile(type(module).forward)}:{inspect.getsourcelines(type(module).forward)[1]}"
        except (OSError, TypeError):
            source = "source unknown"
        raise ConversionError(
            f"module '{where or '<root>'}' ({type(module).__name__}, forward at {source}): "
            f"{type(error).__name__}: {_first_line(error)}"
        ) from error
    finally:
        for handle in handles:
            handle.remove()


def _first_run(model: nn.Module, device: str, edges: tuple[int, ...], batch: int) -> tuple[int, int, list] | None:
    """(edge, channels, output shapes) of the first (batch, C, S, S) input the 2D model accepts, or None."""
    generator = torch.Generator().manual_seed(0)
    dtype = input_dtype(model)
    for edge in edges:
        for channels in candidate_in_channels(model):
            shape = (batch, channels, edge, edge)
            if device == "meta":
                x = torch.empty(shape, device="meta", dtype=dtype)
            else:
                x = torch.randn(shape, generator=generator).to(dtype)
            try:
                with torch.no_grad():
                    return edge, channels, _output_shapes(model(x))
            except Exception:  # noqa: BLE001, S112 - try the next channel count / size
                continue
    return None


def verify_conversion(
    model2d: nn.Module,
    net: nn.Module,
    keep_depth: bool,
    depth: int | None,
    model2d_real: nn.Module | None = None,
) -> None:
    """Run the 2D model and the converted network once and compare every output's shape.

    Both run on the meta device (no arithmetic, no memory): the 2D model on (2, C, S, S) for the first edge S and
    channel count C it accepts, the 3D network on (2, C, S, S, S), or (2, C, D, S, S) with ``keep_depth``. A 2D
    forward that cannot run on meta (data-dependent control flow) is run on CPU instead, on one small input, and so
    is the 3D network. A 4-D output (N, C, H, W) must come back as (N, C, D', H, W) with D' = H (``keep_depth``: the
    input depth); other outputs unchanged.

    Args:
        model2d: the 2D model on the meta device (see ``_meta_copy``).
        net: the converted network.
        keep_depth, depth: as given to :func:`convert_to_3d`.
        model2d_real: the 2D model itself, for the CPU fallback (None: no fallback).

    Raises:
        ConversionError: the 3D run fails (naming the graph node, module path and 2D source line, or the module
            whose kept forward failed) or an output shape does not hold.
    """
    meta2d = model2d.eval()
    found = _first_run(meta2d, "meta", _CHECK_EDGES, 2)
    device, batch = "meta", 2
    if found is None and model2d_real is not None:
        was_training = model2d_real.training
        try:
            found = _first_run(model2d_real.eval(), "cpu", (32, 64, 128), 1)
        finally:
            model2d_real.train(was_training)
        device, batch = "cpu", 1
    if found is None:
        warnings.warn(
            f"{type(model2d).__name__}: its 2D forward did not run on one (N, C, S, S) input for S in "
            f"{_CHECK_EDGES}; the conversion check was skipped",
            stacklevel=3,
        )
        return
    edge, channels, shapes_2d = found
    if keep_depth:  # the depth the network is built for; else a few (a model may need sizes divisible by 8)
        depths = [depth] if depth is not None else list(dict.fromkeys([3, 8, 16, edge]))
    else:
        depths = [edge]
    runner = _meta_copy(net) if device == "meta" else net
    was_training = runner.training
    first_error = None
    try:
        for d in depths:
            shape = (batch, channels, d, edge, edge)
            if device == "meta":
                x = torch.empty(shape, device="meta", dtype=input_dtype(runner))
            else:
                x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(input_dtype(runner))
            try:
                with torch.no_grad():
                    shapes_3d = _output_shapes(_run_located(runner.eval(), x))
            except ConversionError as error:
                first_error = first_error or error
                continue
            break
        else:
            raise first_error
    finally:
        runner.train(was_training)
    if len(shapes_3d) != len(shapes_2d):
        raise ConversionError(f"the 3D network returns {len(shapes_3d)} tensors, the 2D model {len(shapes_2d)}")
    for index, (s2, s3) in enumerate(zip(shapes_2d, shapes_3d)):
        expected = (*s2[:-2], d if keep_depth else s2[-2], *s2[-2:]) if len(s2) >= 4 else s2
        if s3 != expected:
            raise ConversionError(
                f"output {index} of the 3D network has shape {s3} on a {shape} input; the 2D output {s2} on "
                f"{(batch, channels, edge, edge)} means {expected}"
            )
