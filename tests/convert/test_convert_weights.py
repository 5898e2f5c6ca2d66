"""2D weights: state dicts, files (read weights_only), torchvision enums read offline from torchvision's cache."""

from __future__ import annotations

import os

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import ResNet18_Weights, SqueezeNet1_1_Weights

from monai_acs import convert_to_3d
from monai_acs.convert import load_2d_weights, resolve_weights


class _Small(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(self.conv(x)).mean([2, 3]))


def _trained_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    state = _Small().state_dict()
    return {k: torch.randn_like(v.float()).to(v.dtype) if v.is_floating_point() else v for k, v in state.items()}


def _assert_loaded(net: nn.Module, state: dict[str, torch.Tensor]) -> None:
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("operator", ["acs", "conv2p5d", "tsm"])
def test_state_dict_weights(operator):
    state = _trained_state()
    _assert_loaded(convert_to_3d(_Small(), operator, weights=state), state)


def test_i3d_inflates_the_given_weights():
    state = _trained_state()
    net = convert_to_3d(_Small(), "i3d", weights=state)
    torch.testing.assert_close(net.conv.weight.sum(2), state["conv.weight"])  # repeated K times, divided by K


def test_file_weights_are_read_weights_only(tmp_path):
    state = _trained_state()
    torch.save(state, tmp_path / "plain.pt")
    torch.save({"state_dict": state, "epoch": 7}, tmp_path / "checkpoint.pt")
    _assert_loaded(convert_to_3d(_Small(), weights=tmp_path / "plain.pt"), state)
    _assert_loaded(convert_to_3d(_Small(), weights=str(tmp_path / "checkpoint.pt")), state)
    # a pickle that needs arbitrary code is refused (weights_only=True), not executed
    torch.save({"state_dict": state, "model": _Small()}, tmp_path / "pickled_module.pt")
    with pytest.raises(ValueError, match="pickled_module.pt holds Python objects besides tensors") as info:
        convert_to_3d(_Small(), weights=tmp_path / "pickled_module.pt")
    assert "weights_only=False" not in str(info.value)
    # a truncated file is named, with what to do
    (tmp_path / "truncated.pt").write_bytes((tmp_path / "plain.pt").read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated.pt.*corrupt or truncated") as info:
        convert_to_3d(_Small(), weights=tmp_path / "truncated.pt")
    assert "weights_only=False" not in str(info.value)


@pytest.fixture()
def torchvision_cache(tmp_path, monkeypatch):
    """An empty torchvision cache: $TORCH_HOME/hub/checkpoints/ under tmp_path."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    assert torch.hub.get_dir() == str(tmp_path / "hub")
    return checkpoints


@pytest.mark.parametrize("weights", [SqueezeNet1_1_Weights.IMAGENET1K_V1, "SqueezeNet1_1_Weights.IMAGENET1K_V1"])
def test_torchvision_enum_weights_from_the_cache(torchvision_cache, weights):
    # the real offline path: the file torchvision would have downloaded, under the URL's basename, in its cache
    torch.manual_seed(5)
    reference = torchvision.models.squeezenet1_1()
    torch.save(reference.state_dict(), torchvision_cache / os.path.basename(SqueezeNet1_1_Weights.IMAGENET1K_V1.url))
    net = convert_to_3d(torchvision.models.squeezenet1_1(), "acs", weights=weights)
    _assert_loaded(net, reference.state_dict())


def test_missing_cache_file_names_the_expected_path(torchvision_cache):
    expected = torchvision_cache / os.path.basename(ResNet18_Weights.IMAGENET1K_V1.url)
    with pytest.raises(FileNotFoundError, match=str(expected)):
        resolve_weights("ResNet18_Weights.IMAGENET1K_V1")
    with pytest.raises(FileNotFoundError, match="neither an existing file"):
        resolve_weights(str(torchvision_cache / "nothing_here.pt"))


def test_shape_mismatch_names_the_key_and_both_shapes():
    state = _trained_state()
    state["fc.weight"] = torch.zeros(5, 4)
    state["fc.bias"] = torch.zeros(5)
    with pytest.raises(ValueError, match=r"fc\.weight: model \(3, 4\) vs weights \(5, 4\)"):
        convert_to_3d(_Small(), weights=state)
    # skip_mismatched keeps the model's own head (e.g. another number of classes)
    model = _Small()
    assert load_2d_weights(model, state, skip_mismatched=True) == ["fc.weight", "fc.bias"]


def test_missing_and_unexpected_keys_are_named():
    state = _trained_state()
    state["extra.weight"] = state.pop("conv.weight")
    with pytest.raises(ValueError, match=r"missing keys \['conv.weight'\].*unexpected keys \['extra.weight'\]"):
        convert_to_3d(_Small(), weights=state)
    with pytest.raises(TypeError, match="state dict, a file path or a torchvision weights enum"):
        resolve_weights(42)
