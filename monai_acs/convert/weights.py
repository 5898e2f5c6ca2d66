"""Loading 2D weights: state dicts, files (``weights_only``) and torchvision weights enums (torchvision's cache,
downloaded into it on demand)."""

from __future__ import annotations

import http.client
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._progress import progress_enabled

__all__ = ["load_2d_weights", "resolve_weights"]

logger = logging.getLogger(__name__)

_WRAPPER_KEYS = ("state_dict", "model", "network", "net")
# torchvision's original DenseNet checkpoints name layers "norm.1" instead of "norm1".
_DENSENET_LEGACY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def _from_enum(weights: Any) -> dict[str, torch.Tensor]:
    """A torchvision weights enum's state dict, the way torchvision gets it: from its cache
    (``<torch.hub.get_dir()>/checkpoints/<basename of the URL>``, i.e. ``$TORCH_HOME/hub/checkpoints/``), and when the
    file is not there, downloaded once into that cache by ``weights.get_state_dict`` (torch.hub's progress bar and
    SHA-256 prefix check; ``weights_only=True``)."""
    from ..workflows.runs import load_checkpoint  # names the file; never suggests weights_only=False

    name = f"{type(weights).__name__}.{weights.name}"
    file_name = os.path.basename(weights.url)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    if cached.is_file():
        return load_checkpoint(cached, what=f"{name} weights file")
    logger.info("%s: %s is not in torchvision's cache (%s); downloading %s", name, file_name, cached, weights.url)
    try:
        return weights.get_state_dict(progress=progress_enabled(), check_hash=True, weights_only=True,
                                      map_location="cpu")
    except RuntimeError as err:
        if "invalid hash value" not in str(err):
            raise
        raise ValueError(
            f"{name}: the download of {weights.url} was refused, its SHA-256 does not match the file name "
            f"{file_name} ({err}); nothing was written to {cached}. Try again (a proxy or an interrupted transfer?), "
            f"or copy an intact {file_name} there"
        ) from None
    except (OSError, http.client.HTTPException) as err:
        if cached.is_file():  # the download went through, the failure was in reading it
            raise
        raise FileNotFoundError(
            f"{name}: {file_name} is not in torchvision's cache ({cached}) and downloading it from {weights.url} "
            f"failed ({type(err).__name__}: {err}). Offline routes: copy the file there from a machine with internet "
            f"(torchvision.models.get_weight('{name}').get_state_dict() downloads it into that machine's cache), "
            f"pass a local file as the weights, or train without pretraining (bundles: --pretrained false, "
            f"LiTS: --pretraining none)"
        ) from None


def resolve_weights(weights: Any) -> dict[str, torch.Tensor]:
    """Turn a weights argument into a state dict.

    Args:
        weights: a state dict; a path to one (read with ``torch.load(..., weights_only=True)``; a checkpoint
            wrapping it under ``state_dict`` / ``model`` / ``network`` is unwrapped); a torchvision weights enum;
            or the enum's name such as ``"ResNet18_Weights.IMAGENET1K_V1"`` (read from torchvision's cache; a file
            not there yet is downloaded into it once, with torch.hub's progress bar and hash check).

    Returns:
        The state dict (legacy DenseNet key names are modernised).

    Raises:
        FileNotFoundError: a path does not exist, or an enum's file is neither cached nor downloadable (the message
            names the cache path, the URL and the offline routes).
        ValueError: a file is corrupt or truncated, or holds Python objects besides tensors (refused unread; the
            message names the file); a download whose SHA-256 does not match the enum's file name (refused, nothing
            cached).
        TypeError: the argument is none of the above.
    """
    from torchvision.models import WeightsEnum, get_weight

    if isinstance(weights, Mapping):
        state = dict(weights)
    elif isinstance(weights, WeightsEnum):
        state = _from_enum(weights)
    elif isinstance(weights, (str, os.PathLike)):
        path = Path(weights).expanduser()
        if path.is_file():
            from ..workflows.runs import load_checkpoint  # names the file; never suggests weights_only=False

            state = load_checkpoint(path, what="2D weights file")
        elif re.fullmatch(r"[A-Za-z0-9_]+_Weights\.[A-Za-z0-9_]+", str(weights)):
            state = _from_enum(get_weight(str(weights)))
        else:
            raise FileNotFoundError(
                f"weights {str(weights)!r} is neither an existing file nor a torchvision weights name "
                f"like 'ResNet18_Weights.IMAGENET1K_V1'"
            )
    else:
        raise TypeError(f"weights must be a state dict, a file path or a torchvision weights enum, got {type(weights)}")
    for key in _WRAPPER_KEYS:
        if key in state and isinstance(state[key], Mapping):
            state = dict(state[key])
            break
    return {_DENSENET_LEGACY.sub(r"\1\2", k): v for k, v in state.items()}


def load_2d_weights(model: nn.Module, weights: Any, *, skip_mismatched: bool = False) -> list[str]:
    """Load 2D weights into ``model`` with ``strict=True`` semantics.

    Args:
        model: the (2D or converted) model.
        weights: anything :func:`resolve_weights` accepts.
        skip_mismatched: leave parameters whose shape differs (e.g. a head with another class count) at their
            initial values instead of raising. Missing / unexpected keys still raise. Default False.

    Returns:
        The keys that were skipped because their shapes differ.

    Raises:
        ValueError: missing, unexpected or (unless skipped) shape-mismatched keys, listed by name and shape.
    """
    state = resolve_weights(weights)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
    if mismatched and not skip_mismatched:
        shown = [f"{k}: model {tuple(own[k].shape)} vs weights {tuple(state[k].shape)}" for k in mismatched[:10]]
        problems.append(f"shape mismatches {shown}")
    if problems:
        raise ValueError(f"cannot load weights into {type(model).__name__}: " + "; ".join(problems))
    for key in mismatched:
        state[key] = own[key]
    model.load_state_dict(state, strict=True)
    return mismatched
