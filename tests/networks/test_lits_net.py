"""The LiTS network (ACS paper Sec. IV-C): Table A2 model sizes, the tensor-returning variant the bundle uses, the
three pretraining options loaded offline from torchvision's cache, and one ACS training step on a tiny volume."""

from __future__ import annotations

import os

import pytest
import torch
import torchvision

from monai_acs.networks import lits_deeplab, lits_deeplab_2d

MB = 1e6  # the paper's "Mb": 10^6 bytes of float32 parameters
COCO_FILE = "deeplabv3_resnet101_coco-586e9e4e.pth"
IMAGENET_FILE = "resnet101-63fe2227.pth"


def _mb(params) -> float:
    return sum(p.numel() for p in params) * 4 / MB


@pytest.fixture(scope="module")
def net2d() -> torch.nn.Module:
    return lits_deeplab_2d(num_classes=3, pretraining="none")


@pytest.fixture(scope="module")
def net3d() -> torch.nn.Module:
    torch.manual_seed(0)
    return lits_deeplab(operator="acs", num_classes=3, pretraining="none")


def test_table_a2_model_sizes(net2d):
    """Table A2: 234.5 Mb of pretrained weights for the whole network (the final, re-initialised layer not counted),
    170.0 Mb for the encoder (ResNet-101 without its fc)."""
    final = dict(net2d.named_parameters())
    head = [p for n, p in final.items() if n.startswith("classifier.4.")]
    assert [tuple(p.shape) for p in head] == [(3, 256, 1, 1), (3,)]
    whole_pretrained = _mb(p for n, p in final.items() if not n.startswith("classifier.4."))
    encoder = _mb(net2d.backbone.parameters())
    assert whole_pretrained == pytest.approx(234.5, rel=0.005), whole_pretrained
    assert encoder == pytest.approx(170.0, rel=0.005), encoder
    assert encoder / whole_pretrained == pytest.approx(0.725, abs=0.005)  # "170.0 Mb (72.5%)"
    assert not hasattr(net2d, "aux_classifier") or net2d.aux_classifier is None


def test_converted_network_keeps_sizes_and_returns_tensor(net2d, net3d):
    """Conversion keeps every parameter (same count, same names); ``return_dict=False`` returns the logits tensor
    with the state dict unchanged, and scripts with TorchScript."""
    assert sum(p.numel() for p in net3d.parameters()) == sum(p.numel() for p in net2d.parameters())
    as_tensor = lits_deeplab(operator="acs", return_dict=False)
    assert list(as_tensor.state_dict()) == list(net3d.state_dict())
    as_tensor.load_state_dict(net3d.state_dict(), strict=True)
    x = torch.rand(1, 3, 8, 24, 16)  # uneven D, H, W
    net3d.eval(), as_tensor.eval()
    with torch.no_grad():
        out_dict = net3d(x)
        out = as_tensor(x)
        scripted = torch.jit.script(as_tensor)(x)
    assert set(out_dict) == {"out"} and isinstance(out, torch.Tensor)
    assert out.shape == (1, 3, 8, 24, 16)
    torch.testing.assert_close(out, out_dict["out"])
    torch.testing.assert_close(scripted, out, rtol=1e-4, atol=1e-5)


def test_acs_training_step_reaches_every_parameter(net3d):
    """One training step of the real ACS DeepLab on a tiny (8, 32, 32) batch of 2: finite loss, all gradients."""
    net3d.train()
    net3d.zero_grad()
    x = torch.rand(2, 3, 8, 32, 32)
    target = torch.randint(0, 3, (2, 8, 32, 32))
    logits = net3d(x)["out"]
    assert logits.shape == (2, 3, 8, 32, 32)
    loss = torch.nn.functional.cross_entropy(logits, target)
    loss.backward()
    assert torch.isfinite(loss)
    missing = [n for n, p in net3d.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing[:10]


@pytest.fixture
def torch_cache(tmp_path, monkeypatch):
    """An empty torchvision cache ``$TORCH_HOME/hub/checkpoints`` (nothing is downloaded in the tests)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    assert os.path.basename(
        torchvision.models.get_weight("DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1").url
    ) == COCO_FILE
    assert os.path.basename(torchvision.models.get_weight("ResNet101_Weights.IMAGENET1K_V1").url) == IMAGENET_FILE
    return folder


def test_coco_pretraining_whole_network_head_reinitialised(torch_cache):
    """p.WN: a COCO-format checkpoint (21 classes, aux head) in torchvision's cache loads into every layer but the
    last classifier layer, which is re-initialised for 3 classes."""
    torch.manual_seed(1)
    coco = torchvision.models.segmentation.deeplabv3_resnet101(
        weights=None, weights_backbone=None, num_classes=21, aux_loss=True
    ).state_dict()
    torch.save(coco, torch_cache / COCO_FILE)
    torch.manual_seed(2)
    net = lits_deeplab_2d(num_classes=3, pretraining="coco")
    loaded = net.state_dict()
    assert not any(k.startswith("aux_classifier.") for k in loaded)
    for key, value in loaded.items():
        if key.startswith("classifier.4."):
            assert value.shape[0] == 3
        else:
            torch.testing.assert_close(value, coco[key], msg=key)


def test_imagenet_pretraining_encoder_only(torch_cache):
    """p.EO: ResNet-101 ImageNet weights fill the backbone only; the ASPP head keeps its random initialisation."""
    torch.manual_seed(3)
    resnet = torchvision.models.resnet101(weights=None).state_dict()
    torch.save(resnet, torch_cache / IMAGENET_FILE)
    torch.manual_seed(4)
    net = lits_deeplab_2d(num_classes=3, pretraining="imagenet")
    for key, value in net.backbone.state_dict().items():
        torch.testing.assert_close(value, resnet[key], msg=key)
    torch.manual_seed(4)
    reference = lits_deeplab_2d(num_classes=3, pretraining="none")
    torch.testing.assert_close(net.classifier.state_dict(), reference.classifier.state_dict())


def test_missing_cached_weights_say_where_to_put_them(torch_cache):
    with pytest.raises(FileNotFoundError, match=COCO_FILE):
        lits_deeplab_2d(pretraining="coco")


def test_unknown_pretraining_is_rejected():
    with pytest.raises(ValueError, match="pretraining must be one of"):
        lits_deeplab_2d(pretraining="imagenet21k")
