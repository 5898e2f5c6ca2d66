"""The bundles' default pretraining goes through torchvision's download when the weights are not cached (substituted
here: tests never touch the network), and stops with the offline routes when the network is unreachable."""

from __future__ import annotations

import os

import pytest
import torch
import torch.hub
import torchvision
from _helpers import REPO
from monai.bundle import ConfigParser

CASES = {
    # bundle: (torchvision builder of the 2D weights' layout, the bundle's network entry, its key in the state dict)
    "lidc_seg_acs": ("resnet18", "ResNet18_Weights.IMAGENET1K_V1", "backbone.layer1.0.conv1.weight"),
    "deeplesion_a3d": ("densenet121", "DenseNet121_Weights.IMAGENET1K_V1", None),
}


def _network_def(bundle: str, **overrides):
    parser = ConfigParser()
    parser.read_config(REPO / "bundles" / bundle / "configs" / "train.json")
    parser.update({"bundle_root": str(REPO / "bundles" / bundle), **overrides})
    return parser.get_parsed_content("network_def")


@pytest.mark.parametrize("bundle", list(CASES))
def test_default_pretraining_downloads_into_torchvisions_cache(bundle, tmp_path, monkeypatch):
    arch, enum_name, key = CASES[bundle]
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.get_weight(enum_name)
    torch.manual_seed(7)
    served = getattr(torchvision.models, arch)().state_dict()
    calls = []

    def download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, dst, hash_prefix))
        torch.save(served, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    net = _network_def(bundle)  # the config's defaults: pretrained true
    cached = tmp_path / "hub" / "checkpoints" / os.path.basename(weights.url)
    assert calls == [(weights.url, str(cached), cached.name.rsplit("-", 1)[1].split(".")[0])]
    assert cached.is_file()
    if key is not None:  # the 2D kernel, inflated to 3D, keeps the downloaded values
        loaded = net.state_dict()[key]
        torch.testing.assert_close(loaded.sum(dim=2) if loaded.dim() == 5 else loaded, served[key.split(".", 1)[1]])


def test_offline_default_pretraining_names_the_routes(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty cache; the test conftest makes every download fail
    with pytest.raises(Exception) as info:
        _network_def("lidc_seg_acs")
    text = "".join(f"{type(e).__name__}: {e}\n" for e in _chain(info.value))
    assert "FileNotFoundError" in text and "resnet18-f37072fd.pth" in text and "--pretrained false" in text, text
    # the offline route: pretraining off builds without any weights file
    assert _network_def("lidc_seg_acs", pretrained=False) is not None


def _chain(err: BaseException):
    while err is not None:
        yield err
        err = err.__cause__ or err.__context__
