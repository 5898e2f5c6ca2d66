"""The LIDC networks (ACS paper Sec. IV-B-2): the paper's model sizes, forward shapes per operator and backbone
(Tables A4 / A5), ImageNet weights loaded offline from torchvision's cache layout, and clear errors."""

from __future__ import annotations

import os

import pytest
import torch
import torchvision

from monai_acs.convert import find_leftover_2d
from monai_acs.networks import (
    LIDC_BACKBONES,
    LIDC_IMAGENET_WEIGHTS,
    build_lidc_cls_net,
    build_lidc_seg_net,
    lidc_cls_net,
    lidc_seg_net,
)
from monai_acs.networks.lidc import FCNResNet18_2d
from monai_acs.networks.lidc_backbones import LIDCClassifier2d, LIDCFCN2d, lidc_encoder_2d

MB = 1e6  # the paper's "Mb": 10^6 bytes of float32 parameters
#: Segmentation model sizes the paper gives in Sec. IV-B-3 ("49.8 Mb ... 49.8 Mb (2.5D), 142.5 Mb (3D)").
PAPER_SEG_MB = {"acs": 49.8, "conv2p5d": 49.8, "i3d": 142.5}
TINY = 8  # the channel width the shape tests use (the paper's networks have 64)


def _mb(net: torch.nn.Module) -> float:
    return sum(p.numel() for p in net.parameters()) * 4 / MB


@pytest.fixture(scope="module")
def cached_imagenet(tmp_path_factory):
    """A torchvision cache ``$TORCH_HOME/hub/checkpoints`` holding random ResNet-18 and VGG-16-BN ImageNet-format
    weights under their enum file names (nothing is downloaded in the tests)."""
    home = tmp_path_factory.mktemp("torch_home")
    folder = home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(1)
    vgg_features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"], batch_norm=True)
    states = {
        "resnet18": torchvision.models.resnet18(weights=None).state_dict(),
        # VGG-16-BN's convolutional part, plus a stand-in for its 120M-parameter classifier (dropped on loading)
        "vgg16_bn": {**{f"features.{k}": v for k, v in vgg_features.state_dict().items()},
                     "classifier.6.weight": torch.zeros(1000, 4), "classifier.6.bias": torch.zeros(1000)},
    }
    for key, state in states.items():
        url = torchvision.models.get_weight(LIDC_IMAGENET_WEIGHTS[key]).url
        torch.save(state, folder / os.path.basename(url))
    saved = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(home)
    yield states
    if saved is None:
        os.environ.pop("TORCH_HOME", None)
    else:
        os.environ["TORCH_HOME"] = saved


@pytest.fixture(scope="module")
def seg_acs_pretrained(cached_imagenet) -> torch.nn.Module:
    return build_lidc_seg_net("resnet18", "acs", backbone_weights=LIDC_IMAGENET_WEIGHTS["resnet18"]).eval()


def test_paper_model_size_acs_with_imagenet_weights_from_cache(seg_acs_pretrained, cached_imagenet):
    net = seg_acs_pretrained
    assert _mb(net) == pytest.approx(PAPER_SEG_MB["acs"], rel=0.02)
    # the 2D ImageNet kernels are the ACS kernels (same shape); the classification head was left out
    state = net.state_dict()
    for key in ("conv1.weight", "layer3.0.conv2.weight", "layer4.1.bn2.running_var"):
        torch.testing.assert_close(state[f"backbone.{key}"], cached_imagenet["resnet18"][key])
    assert not any(k.startswith("backbone.fc.") for k in state)
    with torch.no_grad():
        out = net(torch.rand(1, 3, 8, 12, 16))  # uneven D, H, W
    assert out.shape == (1, 2, 8, 12, 16) and torch.isfinite(out).all()
    assert find_leftover_2d(net) == []


@pytest.mark.parametrize("operator", ["conv2p5d", "i3d"])
def test_paper_model_sizes_2p5d_and_3d(operator):
    net = lidc_seg_net(operator)
    assert _mb(net) == pytest.approx(PAPER_SEG_MB[operator], rel=0.02)
    assert find_leftover_2d(net) == []


def test_resnet18_builder_at_full_width_is_the_paper_network():
    ours = {k: v.shape for k, v in LIDCFCN2d(lidc_encoder_2d("resnet18")).state_dict().items()}
    paper = {k: v.shape for k, v in FCNResNet18_2d().state_dict().items()}
    assert ours == paper  # so the reduced-width builder is the same network, only narrower
    cls_ours = {k: v.shape for k, v in LIDCClassifier2d(lidc_encoder_2d("resnet18")).state_dict().items()}
    assert set(lidc_cls_net("conv2p5d").state_dict()) == set(cls_ours)


@pytest.mark.parametrize("backbone", ["vgg16", "densenet121"])
def test_backbone_parameter_names_are_torchvisions(backbone):
    """At full width the encoders carry torchvision's names and shapes, so ImageNet weights load unchanged."""
    with torch.device("meta"):  # names and shapes only: skip initialising VGG's 120M-parameter classifier
        reference = getattr(torchvision.models, backbone)(weights=None).state_dict()
    encoder = lidc_encoder_2d(backbone).state_dict()
    expected = {k: v.shape for k, v in reference.items() if k.startswith("features.")}
    assert {k: v.shape for k, v in encoder.items()} == expected


@pytest.mark.parametrize(
    ("backbone", "operator"),
    [("resnet18", "acs"), ("resnet18", "conv2p5d"), ("resnet18", "i3d"), ("vgg16_bn", "acs"), ("vgg16", "i3d")],
)
def test_forward_shapes_and_gradients(backbone, operator):
    torch.manual_seed(0)
    seg = build_lidc_seg_net(backbone, operator, width=TINY)
    cls = build_lidc_cls_net(backbone, operator, width=TINY)
    x = torch.rand(2, 3, 16, 8, 12)
    out = seg(x)
    assert out.shape == (2, 2, 16, 8, 12)
    logits = cls(x)
    assert logits.shape == (2, 1)
    (out.mean() + logits.mean()).backward()
    for name, p in [*seg.named_parameters(), *cls.named_parameters()]:
        assert p.grad is not None, f"{name} got no gradient"
    assert find_leftover_2d(seg) == [] and find_leftover_2d(cls) == []


def test_densenet121_forward_shapes():
    torch.manual_seed(0)
    net = build_lidc_seg_net("densenet121", "acs", width=4)
    with torch.no_grad():
        assert net(torch.rand(1, 3, 8, 8, 12)).shape == (1, 2, 8, 8, 12)
    assert find_leftover_2d(net) == []


def test_encoder_strides_and_channels():
    x = torch.rand(1, 3, 16, 16)
    for backbone in LIDC_BACKBONES:
        encoder = lidc_encoder_2d(backbone, width=TINY)
        feats = encoder(x)
        assert [tuple(f.shape[-2:]) for f in feats] == [(4, 4), (8, 8), (16, 16)], backbone
        assert tuple(f.shape[1] for f in feats) == encoder.channels, backbone


def test_vgg_imagenet_weights_load_from_cache(cached_imagenet):
    net = build_lidc_cls_net("vgg16_bn", "conv2p5d", backbone_weights=LIDC_IMAGENET_WEIGHTS["vgg16_bn"])
    state = net.state_dict()
    for key in ("features.0.weight", "features.41.running_mean"):
        torch.testing.assert_close(state[f"backbone.{key}"], cached_imagenet["vgg16_bn"][key])
    assert not any("classifier" in k for k in state)


def test_errors_say_what_is_wrong(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown LIDC backbone 'resnet50'"):
        build_lidc_seg_net("resnet50")
    with pytest.raises(ValueError, match="need the original resnet18 \\(width=64\\), got width=8"):
        build_lidc_cls_net("resnet18", backbone_weights=LIDC_IMAGENET_WEIGHTS["resnet18"], width=8)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: say where the file should be
    with pytest.raises(FileNotFoundError, match="resnet18-f37072fd.pth is not in torchvision's cache"):
        build_lidc_cls_net("resnet18", backbone_weights=LIDC_IMAGENET_WEIGHTS["resnet18"])
