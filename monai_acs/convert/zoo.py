"""The torchvision CNN zoo as a conversion benchmark: which 2D CNNs convert, run and train in 3D.

Used by ``scripts/check_zoo.py`` and ``tests/convert/test_zoo.py``; also handy for checking your own model with
:func:`check_conversion`.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..layers.registry import get_operator
from .api import convert_to_3d

__all__ = [
    "ZOO_EXCLUDE",
    "ZOO_INPUT_SIZE",
    "ZooResult",
    "build_torchvision_2d",
    "check_conversion",
    "check_torchvision_model",
    "torchvision_cnn_names",
    "zoo_input_shape",
]

# Model-name patterns left out of the zoo, each with its reason.
ZOO_EXCLUDE: dict[str, str] = {
    "vit_*": "vision transformer: patch embedding + token sequence, not a CNN",
    "swin_*": "Swin transformer: windowed attention over token grids, not a CNN",
    "maxvit_*": "MaxViT: block / grid attention over token grids, not a CNN",
}

# Input cube edge per model: the smallest cube that survives the model's strides and unpadded pools, i.e. the
# minimum torchvision declares in the weights' ``min_size`` (3D has the same geometry along D as along H), but at
# least 16 voxels so that every stage of a stride-32 network still sees more than padding. The deepest networks get
# 32 (their total stride): at 16, their third stage runs 23-36 blocks on 1x1x1 maps, train-mode BatchNorm normalises
# 2 values per channel, and the gradients overflow (for the randomly initialised 2D models at 16x16 as well, except
# ResNet-101 with seed 0).
_DEEP = ("resnet101", "resnet152", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet101_2", "regnet_y_128gf")
ZOO_INPUT_SIZE: dict[str, int] = {
    "default": 16,
    **dict.fromkeys(_DEEP, 32),
    "alexnet": 63,  # 11x11 stride-4 stem and three unpadded 3x3 stride-2 pools
    # ConvNeXt: 4x4 stride-4 stem and three unpadded 2x2 stride-2 downsamplings
    **{f"convnext_{v}": 32 for v in ("tiny", "small", "base", "large")},
    **{f"densenet{v}": 29 for v in (121, 161, 169, 201)},  # three unpadded 2x2/2 transition pools
    **{f"efficientnet_v2_{v}": 33 for v in ("s", "m", "l")},
    "inception_v3": 75,  # unpadded stem and grid reductions
    "squeezenet1_0": 21,  # unpadded 3x3/2 pools, the last on a 3x3 map
    "squeezenet1_1": 17,
    **{f"vgg{v}{bn}": 32 for v in (11, 13, 16, 19) for bn in ("", "_bn")},  # five unpadded 2x2/2 pools
}

# Builder arguments: small heads; no downloads; no auxiliary classifier for Inception v3 (GoogLeNet keeps its two).
_SEGMENTATION_PREFIXES = ("fcn_", "deeplabv3_", "lraspp_")


def torchvision_cnn_names() -> list[str]:
    """The 74 torchvision CNNs: classification models without ``ZOO_EXCLUDE`` patterns, plus segmentation models.

    Returns:
        Model names in ``torchvision.models.list_models`` order, classification first.

    Examples:
        >>> names = torchvision_cnn_names()
        >>> len(names), names[0], names[-1]
        (74, 'alexnet', 'lraspp_mobilenet_v3_large')
    """
    import torchvision

    classification = [
        name
        for name in torchvision.models.list_models(module=torchvision.models)
        if not any(fnmatch.fnmatch(name, pattern) for pattern in ZOO_EXCLUDE)
    ]
    return classification + torchvision.models.list_models(module=torchvision.models.segmentation)


def is_segmentation(name: str) -> bool:
    """True for the torchvision segmentation models (their output is a dict with a 5-D ``"out"``)."""
    return name.startswith(_SEGMENTATION_PREFIXES)


def build_torchvision_2d(name: str, num_classes: int = 3) -> nn.Module:
    """Build a randomly initialised torchvision model for the zoo (no weights are downloaded).

    Args:
        name: a torchvision model name.
        num_classes: head size. Default 3.

    Returns:
        The 2D model in train mode.
    """
    import torchvision

    kwargs: dict[str, Any] = {"weights": None, "num_classes": num_classes}
    if is_segmentation(name):
        kwargs["weights_backbone"] = None
    if name in ("googlenet", "inception_v3"):
        kwargs["init_weights"] = False  # scipy-free, fast init
    if name == "inception_v3":
        kwargs["aux_logits"] = False  # the auxiliary head needs a 17x17 grid, i.e. inputs of 299 voxels and more
    return torchvision.models.get_model(name, **kwargs)


def zoo_input_shape(name: str, operator: str, batch: int = 2, depth: int = 3, size: int | None = None) -> tuple:
    """(N, C, D, H, W) input for a zoo model; ``"a3d"`` (converted with ``keep_depth``) gets ``depth`` slices."""
    edge = size or ZOO_INPUT_SIZE.get(name, ZOO_INPUT_SIZE["default"])
    return (batch, 3, depth if get_operator(operator).needs_depth else edge, edge, edge)


@dataclass
class ZooResult:
    """Outcome of one conversion check."""

    name: str
    operator: str
    ok: bool
    output_shape: tuple = ()
    seconds: float = 0.0
    error: str = ""


def _output_tensors(output: Any) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(main output, every tensor output) of a classification / segmentation / auxiliary-head model."""
    if isinstance(output, dict):
        return output["out"], [v for v in output.values() if isinstance(v, torch.Tensor)]
    if isinstance(output, (tuple, list)):
        tensors = [v for v in output if isinstance(v, torch.Tensor)]
        return tensors[0], tensors
    return output, [output]


def check_conversion(
    model: nn.Module | Callable[[], nn.Module],
    operator: str,
    input_shape: tuple,
    expected_shape: tuple,
    **convert_options: Any,
) -> tuple[tuple, nn.Module]:
    """Convert ``model``, run forward and backward in train mode, and check what a 3D network must satisfy.

    The output (``"out"`` of a dict, the first of a tuple) must have ``expected_shape`` and be finite, and every
    parameter must receive a finite gradient from the sum of all tensor outputs.

    Args:
        model: the 2D model (not modified), or a function building it (then converted in place, so that a large
            model is never held twice).
        operator: fusion operator key.
        input_shape: (N, C, D, H, W).
        expected_shape: the main output's shape.
        **convert_options: passed to :func:`convert_to_3d` (``keep_depth``, ``depth``, ...).

    Returns:
        (output shape, converted model).

    Raises:
        AssertionError: a wrong shape, a non-finite value, or parameters without gradient (named).
        Exception: whatever conversion or the forward pass raise.

    Examples:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> check_conversion(model, "acs", (2, 1, 5, 6, 7), (2, 2))[0]
        (2, 2)
    """
    if isinstance(model, nn.Module):
        net = convert_to_3d(model, operator, **convert_options)
    else:
        net = convert_to_3d(model(), operator, inplace=True, **convert_options)
    net.train()
    output = net(torch.randn(*input_shape))
    main, tensors = _output_tensors(output)
    if tuple(main.shape) != tuple(expected_shape):
        raise AssertionError(f"output shape {tuple(main.shape)}, expected {tuple(expected_shape)}")
    if not all(bool(torch.isfinite(t).all()) for t in tensors):
        raise AssertionError("non-finite output")
    sum(t.float().sum() for t in tensors).backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    if missing:
        raise AssertionError(f"{len(missing)} parameters get no gradient: {missing[:5]}")
    bad = [n for n, p in net.named_parameters() if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
    if bad:
        raise AssertionError(f"non-finite gradients: {bad[:5]}")
    return tuple(main.shape), net


def check_torchvision_model(
    name: str, operator: str, *, batch: int = 2, depth: int = 3, size: int | None = None, num_classes: int = 3
) -> ZooResult:
    """Build, convert and check one torchvision model; never raises (the error is in the result).

    ``"a3d"`` is converted with ``keep_depth=True, depth=depth``; the other operators with the default
    (depth strided like H and W) on a cube of :data:`ZOO_INPUT_SIZE`.
    """
    start = time.perf_counter()
    try:
        shape = zoo_input_shape(name, operator, batch, depth, size)
        options: dict[str, Any] = get_operator(operator).depth_options(depth)
        expected = (batch, num_classes, *shape[2:]) if is_segmentation(name) else (batch, num_classes)
        out_shape, _ = check_conversion(
            lambda: build_torchvision_2d(name, num_classes), operator, shape, expected, **options
        )
    except Exception as error:  # noqa: BLE001 - a sweep reports every failure
        message = " ".join(str(error).split())
        return ZooResult(
            name, operator, False, seconds=time.perf_counter() - start, error=f"{type(error).__name__}: {message[:400]}"
        )
    return ZooResult(name, operator, True, out_shape, time.perf_counter() - start)
