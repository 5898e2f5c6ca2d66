"""Zoo test: torchvision CNNs convert to 3D with every operator, run forward + backward, train every parameter.

The zoo is built from ``torchvision.models.list_models`` (exclusion patterns with reasons and per-model input sizes
live in ``monai_acs.convert.zoo``). By default a fast subset runs; the full 74 models x 8 operators are ``slow``
(``--runslow`` or ``MONAI_ACS_SLOW=1``; about as long as ``scripts/check_zoo.py``).
"""

from __future__ import annotations

import fnmatch

import pytest
import torchvision

from monai_acs.convert.zoo import (
    ZOO_EXCLUDE,
    ZOO_INPUT_SIZE,
    check_torchvision_model,
    is_segmentation,
    torchvision_cnn_names,
)
from monai_acs.layers import list_operators

ZOO = torchvision_cnn_names()

# Fast subset: one model per hard case, cheapest of its kind.
FAST_CASES = [
    ("resnet18", "acs"),  # plain residual CNN
    ("mnasnet0_5", "acs"),  # x.mean([2, 3]) head, depthwise convolutions
    ("shufflenet_v2_x0_5", "acs"),  # x.size() unpacking + view / transpose channel shuffle
    ("regnet_x_400mf", "acs"),  # grouped convolutions
    ("convnext_tiny", "acs"),  # channels-last permutes, LayerNorm2d, (C, 1, 1) layer scale, 4x4 stem
    ("lraspp_mobilenet_v3_large", "acs"),  # segmentation: x.shape[-2:] + bilinear F.interpolate, SE blocks
    ("resnet18", "i3d"),  # inflated K x K x K kernels
    ("mobilenet_v3_small", "a3d"),  # keep_depth + fixed depth; SE branches see depth 1
    ("shufflenet_v2_x0_5", "tsm"),
]


def test_zoo_is_the_74_torchvision_cnns():
    assert len(ZOO) == 74
    assert len([name for name in ZOO if is_segmentation(name)]) == 6
    left_out = [n for n in torchvision.models.list_models(module=torchvision.models) if n not in ZOO]
    assert left_out and all(any(fnmatch.fnmatch(n, p) for p in ZOO_EXCLUDE) for n in left_out)
    assert all(reason for reason in ZOO_EXCLUDE.values())
    assert set(ZOO_INPUT_SIZE) - {"default"} <= set(ZOO)


# models that need more than the declared minimum for finite gradients of the random-init 2D model (see zoo.py)
NUMERICALLY_LARGER = {
    "resnet101",
    "resnet152",
    "resnext101_32x8d",
    "resnext101_64x4d",
    "wide_resnet101_2",
    "regnet_y_128gf",
}


def test_zoo_sizes_are_the_declared_minimum():
    # the smallest cube that survives the model's strides: torchvision's declared min_size, at least 16 voxels
    for name in ZOO:
        declared = max(16, *next(iter(torchvision.models.get_model_weights(name))).meta["min_size"])
        size = ZOO_INPUT_SIZE.get(name, ZOO_INPUT_SIZE["default"])
        assert size > declared if name in NUMERICALLY_LARGER else size == declared, name


@pytest.mark.parametrize(("name", "operator"), FAST_CASES, ids=[f"{n}-{o}" for n, o in FAST_CASES])
def test_zoo_fast(name, operator):
    result = check_torchvision_model(name, operator)
    assert result.ok, result.error


@pytest.mark.slow
@pytest.mark.parametrize("operator", list_operators())
@pytest.mark.parametrize("name", ZOO)
def test_zoo_full(name, operator):
    result = check_torchvision_model(name, operator)
    assert result.ok, result.error
