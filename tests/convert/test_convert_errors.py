"""Bad inputs and unconvertible models raise clear errors naming the module path and the shapes."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from monai_acs import convert_to_3d
from monai_acs.convert import find_leftover_2d


class _FunctionalConv(nn.Module):
    """Calls ``F.conv2d`` itself: nothing to swap, not convertible."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 4, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, padding=1)


class _UntraceableFunctionalConv(_FunctionalConv):
    """The same, behind data-dependent control flow that torch.fx cannot trace."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return F.conv2d(x, self.weight, padding=1)
        return x


class _Net(nn.Module):
    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.body = nn.Sequential(nn.ReLU(), block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.stem(x))


@pytest.fixture(scope="module")
def acs_resnet18():
    return convert_to_3d(torchvision.models.resnet18(num_classes=2), "acs").eval()


@pytest.mark.parametrize("operator", ["acs", "i3d", "p3d"])
def test_4d_input_names_the_module_and_shape(operator):
    net = convert_to_3d(torchvision.models.resnet18(num_classes=2), operator)
    with pytest.raises(ValueError, match=r"'conv1'.*5-D.*\(1, 3, 32, 32\)"):
        net(torch.randn(1, 3, 32, 32))


def test_channel_mismatch_names_the_module_and_shape(acs_resnet18):
    with pytest.raises(ValueError, match=r"'conv1' expects 3 input channels.*\(1, 1, 8, 16, 16\)"):
        acs_resnet18(torch.randn(1, 1, 8, 16, 16))


def test_a3d_depth_mismatch_names_the_module():
    net = convert_to_3d(torchvision.models.resnet18(num_classes=2), "a3d", keep_depth=True, depth=3)
    with pytest.raises(ValueError, match=r"'conv1' was built for depth D=3.*\(1, 3, 5, 32, 32\)"):
        net(torch.randn(1, 3, 5, 32, 32))


def test_unknown_operator_names_the_closest_key():
    with pytest.raises(ValueError, match="Did you mean 'acs'"):
        convert_to_3d(nn.Conv2d(1, 1, 3), "acz")
    with pytest.raises(ValueError, match="Did you mean 'i3d'"):
        convert_to_3d(nn.Conv2d(1, 1, 3), "i3dd")


def test_a3d_needs_keep_depth_and_depth():
    with pytest.raises(ValueError, match="keep_depth=True"):
        convert_to_3d(nn.Conv2d(1, 1, 3), "a3d", depth=3)
    with pytest.raises(ValueError, match="depth=D"):
        convert_to_3d(nn.Conv2d(1, 1, 3), "a3d", keep_depth=True)


def test_untraceable_functional_conv2d_is_named_strict_and_warned_otherwise():
    block = _UntraceableFunctionalConv
    with pytest.raises(ValueError, match=r"body\.1 \(_\w*FunctionalConv\).*conv2d"):
        convert_to_3d(_Net(block()), "acs")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net = convert_to_3d(_Net(block()), "acs", strict=False, verify=False)
    messages = [str(w.message) for w in caught]
    assert any("body.1" in m and "conv2d" in m for m in messages), messages
    assert any("body.1" in item for item in find_leftover_2d(net))


def test_untraceable_2d_forward_is_refused_by_the_check_run():
    # strict=False keeps the 2D forward; the meta check run then refuses it, naming the module and its code
    from monai_acs.convert import ConversionError

    with pytest.raises(
        ConversionError, match=r"module 'body\.1' \(_UntraceableFunctionalConv, forward at .*\.py:\d+\)"
    ):
        convert_to_3d(_Net(_UntraceableFunctionalConv()), "acs", strict=False)


def test_leftovers_of_an_unconverted_model_are_listed():
    found = find_leftover_2d(torchvision.models.resnet18())
    assert "conv1 (Conv2d): 2D module" in found and "maxpool (MaxPool2d): 2D module" in found
    assert find_leftover_2d(convert_to_3d(torchvision.models.resnet18(), "acs")) == []


def test_constructs_without_a_3d_meaning_name_the_module():
    class Transposes(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.permute(0, 1, 3, 2)  # swaps H and W: no unique 3D counterpart

    class FixedSize(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.interpolate(x, size=(8, 8), mode="bilinear")

    with pytest.raises(NotImplementedError, match=r"permute\(0, 1, 3, 2\) at 'body\.1 \(Transposes\)'.*H and W"):
        convert_to_3d(_Net(Transposes()))
    with pytest.raises(NotImplementedError, match=r"body\.1 \(FixedSize\).*\(8, 8\).*keep_depth"):
        convert_to_3d(_Net(FixedSize()))
    net = convert_to_3d(_Net(FixedSize()), keep_depth=True)  # keep_depth: the output keeps the input depth
    assert net(torch.randn(1, 3, 3, 5, 6)).shape == (1, 4, 3, 8, 8)
    model = nn.Sequential()
    model.add_module("conv", nn.Conv2d(1, 1, 1))
    model.add_module("up", nn.Upsample(size=(4, 4)))
    with pytest.raises(NotImplementedError, match=r"'up' \(Upsample\).*size"):
        convert_to_3d(model)


@pytest.mark.parametrize("module_name", ["monai_acs.convert.api", "monai_acs.convert.rules", "monai_acs.convert.zoo"])
def test_docstring_examples(module_name):
    import doctest
    import importlib

    module = importlib.import_module(module_name)
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner()
    lines = []
    attempted = 0
    for test in finder.find(module, module_name):
        runner.run(test, out=lines.append)
        attempted += len(test.examples)
    assert attempted > 0 and runner.failures == 0, "".join(lines)
