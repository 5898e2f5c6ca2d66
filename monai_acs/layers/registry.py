"""Operator registry: every 3D context-fusion operator registers under a lower-case key."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

__all__ = ["OperatorSpec", "register_operator", "get_operator", "list_operators"]


@dataclass(frozen=True)
class OperatorSpec:
    """What the registry knows about one operator.

    Attributes:
        name: registry key, lower case.
        layer: the module class; it offers ``from_conv2d(conv2d, **opts)``.
        summary: one line describing the operator.
        params_overhead: parameter overhead over no fusion (A3D paper Table 1 notation).
        flops_overhead: FLOP overhead over no fusion (A3D paper Table 1 notation).
        transposed: how ``ConvTranspose2d`` layers are converted under this operator.
        needs_depth: the layer is built for one input depth (A3D's D x D slice mix): networks are converted with
            ``keep_depth=True`` and ``depth=D`` (see :meth:`depth_options`).
    """

    name: str
    layer: type[nn.Module]
    summary: str
    params_overhead: str
    flops_overhead: str
    transposed: str = "conv2p5d"
    needs_depth: bool = False

    def depth_options(self, depth: int) -> dict[str, Any]:
        """The ``convert_to_3d`` options this operator needs for inputs of ``depth`` slices.

        Examples:
            >>> get_operator("a3d").depth_options(7)
            {'keep_depth': True, 'depth': 7}
            >>> get_operator("acs").depth_options(7)
            {}
        """
        return {"keep_depth": True, "depth": int(depth)} if self.needs_depth else {}


_REGISTRY: dict[str, OperatorSpec] = {}


def register_operator(
    name: str,
    *,
    summary: str,
    params_overhead: str,
    flops_overhead: str,
    transposed: str = "conv2p5d",
    needs_depth: bool = False,
) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator that registers a fusion layer under ``name``.

    Args:
        name: lower-case registry key.
        summary: one-line description shown by ``python -m monai_acs operators``.
        params_overhead: parameter overhead over no fusion.
        flops_overhead: FLOP overhead over no fusion.
        transposed: how transposed convolutions convert: ``"acs"``, ``"mean_acs"``, ``"i3d"`` or ``"conv2p5d"``.
        needs_depth: the layer needs a fixed input depth (``keep_depth=True`` and ``depth=D`` at conversion).

    Returns:
        The decorator; it returns the class unchanged.

    Raises:
        ValueError: if the key is not lower case or is already registered.
    """
    if name != name.lower() or not name:
        raise ValueError(f"operator keys are lower case and non-empty, got {name!r}")

    def decorator(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"operator {name!r} is already registered by {_REGISTRY[name].layer.__qualname__}")
        if not hasattr(cls, "from_conv2d"):
            raise TypeError(f"{cls.__qualname__} must define a from_conv2d(conv2d, **opts) classmethod")
        _REGISTRY[name] = OperatorSpec(name, cls, summary, params_overhead, flops_overhead, transposed, needs_depth)
        return cls

    return decorator


def get_operator(name: str) -> OperatorSpec:
    """Look up an operator by key.

    Args:
        name: registry key such as ``"acs"`` or ``"a3d"``.

    Returns:
        The operator's :class:`OperatorSpec`.

    Raises:
        ValueError: for an unknown key; the message names the closest registered key.
    """
    key = str(name).lower()
    if key in _REGISTRY:
        return _REGISTRY[key]
    close = difflib.get_close_matches(key, list(_REGISTRY), n=1, cutoff=0.0)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown operator {name!r}; registered operators: {sorted(_REGISTRY)}.{hint}")


def list_operators() -> list[str]:
    """Return the registered operator keys in registration order.

    Examples:
        >>> import monai_acs
        >>> "acs" in monai_acs.list_operators()
        True
    """
    return list(_REGISTRY)
