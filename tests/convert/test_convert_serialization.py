"""Converted models survive state-dict round trips, pickling, deep copies and TorchScript export."""

from __future__ import annotations

import copy
import io
import pickle
import warnings

import pytest
import torch
import torchvision
from torch import nn

from monai_acs import convert_to_3d
from monai_acs.convert.graph import ConvertedGraphModule


def _script(module: nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit.script is deprecated in torch 2.14
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        return torch.jit.script(module)


@pytest.fixture(scope="module")
def acs_resnet18():
    """(2D ResNet-18, its ACS conversion, an uneven input volume, the conversion's output on it)."""
    torch.manual_seed(0)
    model2d = torchvision.models.resnet18(num_classes=4).eval()
    net = convert_to_3d(model2d, "acs").eval()
    volume = torch.randn(1, 3, 8, 12, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = net(volume)
    return model2d, net, volume, expected


def test_2d_state_dict_loads_unchanged(acs_resnet18):
    model2d, net, _, _ = acs_resnet18
    state2d = model2d.state_dict()
    assert {k: v.shape for k, v in net.state_dict().items()} == {k: v.shape for k, v in state2d.items()}
    fresh = convert_to_3d(torchvision.models.resnet18(num_classes=4), "acs")
    fresh.load_state_dict(state2d, strict=True)  # no renaming, no reshaping
    for key, value in fresh.state_dict().items():
        torch.testing.assert_close(value, state2d[key], rtol=0, atol=0)


def test_3d_state_dict_round_trip_reproduces_outputs(acs_resnet18, tmp_path):
    _, net, volume, expected = acs_resnet18
    torch.save(net.state_dict(), tmp_path / "net3d.pt")
    other = convert_to_3d(torchvision.models.resnet18(num_classes=4), "acs").eval()
    other.load_state_dict(torch.load(tmp_path / "net3d.pt", weights_only=True), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(other(volume), expected, rtol=0, atol=0)


def test_torchscript_export_gives_the_same_output(acs_resnet18, tmp_path):
    _, net, volume, expected = acs_resnet18
    scripted = _script(net)
    scripted.save(str(tmp_path / "net3d.ts"))
    loaded = torch.jit.load(str(tmp_path / "net3d.ts"))
    with torch.no_grad():
        torch.testing.assert_close(scripted(volume), expected, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(loaded(volume), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("how", ["pickle", "torch.save", "deepcopy", "copy"])
def test_converted_graph_module_copies(acs_resnet18, how):
    _, net, volume, expected = acs_resnet18
    if how == "pickle":
        other = pickle.loads(pickle.dumps(net))
    elif how == "torch.save":
        buffer = io.BytesIO()
        torch.save(net, buffer)
        buffer.seek(0)
        other = torch.load(buffer, weights_only=False)  # a whole module is code, not weights
    elif how == "deepcopy":
        other = copy.deepcopy(net)
    else:
        other = copy.copy(net)
    assert isinstance(other, ConvertedGraphModule)
    assert type(other).__name__ == "ResNet" and isinstance(other.layer1, nn.Module)
    with torch.no_grad():
        torch.testing.assert_close(other(volume), expected, rtol=0, atol=0)
    if how != "copy":  # copies own their parameters
        assert other.conv1.weight.data_ptr() != net.conv1.weight.data_ptr()


class _AuxHead(nn.Module):
    """A forward that differs between train and eval (like GoogLeNet's auxiliary classifiers)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.aux = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
        self.head = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(4, 3))

    def forward(self, x: torch.Tensor):
        x = self.conv(x)
        if self.training:
            return self.head(x), self.aux(x)
        return self.head(x)


@pytest.mark.parametrize("how", ["pickle", "deepcopy", "copy", "none"])
def test_train_and_eval_graphs_survive_copies(how):
    net = convert_to_3d(_AuxHead(), "acs")
    copies = {"pickle": lambda m: pickle.loads(pickle.dumps(m)), "deepcopy": copy.deepcopy, "copy": copy.copy}
    other = copies.get(how, lambda m: m)(net)
    x = torch.randn(2, 2, 5, 6, 7)
    other.train()
    out = other(x)
    assert isinstance(out, tuple) and out[0].shape == out[1].shape == (2, 3)
    other.eval()
    out = other(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3)
    torch.testing.assert_close(_script(other)(x), out)  # scripts the eval graph


def test_inplace_reuses_the_model_modules():
    model = torchvision.models.resnet18(num_classes=4)
    net = convert_to_3d(model, "acs", inplace=True)
    assert net is not model  # a traced model becomes a new graph module ...
    assert net.fc is model.fc  # ... that reuses the modules with nothing 2D (documented in convert_to_3d)
    assert net.eval()(torch.randn(1, 3, 8, 16, 16)).shape == (1, 4)


def test_converted_instance_norm_network_keeps_channels_last_and_round_trips(tmp_path):
    # convert_to_3d applies keep_channels_last: an ACS network with InstanceNorm (MONAI's UNet) fed a contiguous
    # batch switches to channels-last at its first layer and stays there, and still pickles and scripts
    from monai.networks.nets import UNet

    from monai_acs.layers.layout import ChannelsLastInstanceNorm3d

    torch.manual_seed(0)
    net2d = UNet(2, 1, 2, channels=(8, 16), strides=(2,), norm="instance").eval()
    net = convert_to_3d(net2d, "acs").eval()
    norms = [m for m in net.modules() if isinstance(m, nn.InstanceNorm3d)]
    assert norms and all(type(m) is ChannelsLastInstanceNorm3d for m in norms)
    assert list(net.state_dict()) == list(net2d.state_dict())
    fed = []
    hooks = [m.register_forward_hook(lambda m, i, o: fed.append(i[0])) for m in net.modules() if "Conv" in type(m).__name__
             and not list(m.children())]
    x = torch.randn(2, 1, 8, 8, 8)
    out = net(x)
    for h in hooks:
        h.remove()
    later = [t for t in fed if t.shape[1] > 1]
    cl = torch.channels_last_3d
    assert later and all(t.is_contiguous(memory_format=cl) and not t.is_contiguous() for t in later)
    again = pickle.loads(pickle.dumps(net))
    torch.testing.assert_close(again(x), out)
    torch.testing.assert_close(_script(net)(x), out, rtol=2e-4, atol=2e-4)  # scripted: instance_norm, not group_norm
