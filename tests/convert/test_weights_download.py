"""torchvision weights enums on demand: cached file -> read; not cached -> torchvision's own download into its cache
(progress bar, hash check); offline -> a clear message; a hash mismatch -> refused. No test touches the network: the
download function (or the URL opener beneath it) is substituted."""

from __future__ import annotations

import email.message
import io
import os
from pathlib import Path

import pytest
import torch
import torch.hub
import torchvision
from torchvision.models import ResNet18_Weights, SqueezeNet1_1_Weights

from monai_acs.convert import resolve_weights
from monai_acs.networks import LIDC_IMAGENET_WEIGHTS, build_lidc_cls_net

SQUEEZE = SqueezeNet1_1_Weights.IMAGENET1K_V1


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    """torchvision's cache, empty: ``$TORCH_HOME/hub/checkpoints`` under tmp_path (created by the download)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("MONAI_ACS_PROGRESS", raising=False)
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def _serving(state: dict, calls: list) -> callable:
    """A stand-in for ``torch.hub.download_url_to_file`` that records its call and writes ``state`` where asked."""

    def download(url, dst, hash_prefix=None, progress=True):
        calls.append({"url": url, "dst": dst, "hash_prefix": hash_prefix, "progress": progress})
        torch.save(state, dst)

    return download


def test_missing_enum_file_is_downloaded_once_into_torchvisions_cache(cache, monkeypatch):
    torch.manual_seed(3)
    served = torchvision.models.squeezenet1_1().state_dict()
    calls: list = []
    monkeypatch.setattr(torch.hub, "download_url_to_file", _serving(served, calls))
    state = resolve_weights("SqueezeNet1_1_Weights.IMAGENET1K_V1")
    file_name = os.path.basename(SQUEEZE.url)
    # (a) torchvision's call: the enum's URL, its cache path, the hash prefix from the file name, a progress bar
    assert calls == [{"url": SQUEEZE.url, "dst": str(cache / file_name),
                      "hash_prefix": file_name.rsplit("-", 1)[1].split(".")[0], "progress": True}]
    # (b) the weights are the served ones
    assert state.keys() == served.keys()
    for key, value in served.items():
        torch.testing.assert_close(state[key], value, msg=key)
    # the second use reads the cache: no second download
    monkeypatch.setattr(torch.hub, "download_url_to_file", _serving({}, calls))
    again = resolve_weights(SQUEEZE)
    assert len(calls) == 1 and again.keys() == served.keys()


def test_progress_bar_switch(cache, monkeypatch):
    calls: list = []
    served = torchvision.models.squeezenet1_1().state_dict()
    monkeypatch.setattr(torch.hub, "download_url_to_file", _serving(served, calls))
    monkeypatch.setenv("MONAI_ACS_PROGRESS", "0")
    resolve_weights(SQUEEZE)
    assert calls[0]["progress"] is False


def test_network_builder_downloads_its_imagenet_weights(cache, monkeypatch):
    """The LIDC ResNet-18 ("p.") asks for ResNet18_Weights.IMAGENET1K_V1: downloaded, then loaded into the encoder."""
    torch.manual_seed(4)
    served = torchvision.models.resnet18().state_dict()
    calls: list = []
    monkeypatch.setattr(torch.hub, "download_url_to_file", _serving(served, calls))
    net = build_lidc_cls_net("resnet18", "conv2p5d", backbone_weights=LIDC_IMAGENET_WEIGHTS["resnet18"])
    assert [c["url"] for c in calls] == [ResNet18_Weights.IMAGENET1K_V1.url]
    state = net.state_dict()
    for key in ("conv1.weight", "layer4.1.bn2.running_var"):
        torch.testing.assert_close(state[f"backbone.{key}"].flatten(), served[key].flatten(), msg=key)


def test_offline_says_where_the_cache_is_and_the_offline_routes(cache):
    # the conftest makes every torch.hub URL fail as on an offline machine (URLError)
    expected = cache / os.path.basename(ResNet18_Weights.IMAGENET1K_V1.url)
    with pytest.raises(FileNotFoundError) as info:
        resolve_weights(ResNet18_Weights.IMAGENET1K_V1)
    message = str(info.value)
    for part in ("ResNet18_Weights.IMAGENET1K_V1", str(expected), ResNet18_Weights.IMAGENET1K_V1.url, "URLError",
                 "--pretrained false", "--pretraining none", "local file"):
        assert part in message, (part, message)
    assert not [p for p in cache.iterdir()], "a failed download leaves nothing in the cache"


class _Response(io.BytesIO):
    """What ``urlopen`` returns: a readable body with headers (``Content-Length``)."""

    def info(self) -> email.message.Message:
        headers = email.message.Message()
        headers["Content-Length"] = str(len(self.getvalue()))
        return headers


def test_a_download_that_fails_the_hash_check_is_refused(cache, monkeypatch):
    # torch.hub's real download_url_to_file runs: it reads these bytes and checks their SHA-256 against the file name
    body = io.BytesIO()
    torch.save(torchvision.models.squeezenet1_1().state_dict(), body)
    opened: list = []

    def urlopen(request, *args, **kwargs):
        opened.append(request.full_url)
        return _Response(body.getvalue())

    monkeypatch.setattr(torch.hub, "urlopen", urlopen)
    with pytest.raises(ValueError, match="SHA-256 does not match") as info:
        resolve_weights(SQUEEZE)
    assert opened == [SQUEEZE.url]
    assert str(cache / os.path.basename(SQUEEZE.url)) in str(info.value) and "invalid hash value" in str(info.value)
    assert list(cache.iterdir()) == [], "neither the file nor a partial download is kept"
