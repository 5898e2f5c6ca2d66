"""The DeepLesion networks (A3D paper Sec. 2.3): 3D DenseNet-121 trunk, key-slice FPN, Mask R-CNN detector."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

from monai_acs.layers import A3DConv, Conv2p5d, I3DConv, P3DConv
from monai_acs.networks import deeplesion_backbone, deeplesion_detector
from monai_acs.networks.deeplesion import (
    DEEPLESION_OPERATORS,
    DenseNetTrunk2d,
    KeySliceFPN,
    adapt_input_conv,
    dice_mask_loss,
    set_p3d_temporal_kernel,
)

#: A DenseNet small enough for per-operator CPU tests (same layer types and layout as DenseNet-121).
TINY = {"block_config": (1, 2, 1), "growth_rate": 8, "num_init_features": 8, "bn_size": 2}
TINY_HEADS = {
    "feature_channels": 8,
    "representation_size": 16,
    "mask_channels": 8,
    "anchor_sizes": ((8, 16), (24, 32), (48, 64)),
}


@pytest.fixture(scope="module")
def densenet121_a3d():
    return deeplesion_backbone("a3d", num_slices=3)


def test_densenet121_keeps_depth_and_fuses_both_dense_layer_convs(densenet121_a3d):
    net = densenet121_a3d
    feats = net.forward_intermediates(torch.randn(1, 1, 3, 32, 48))  # uneven H, W catch axis mix-ups
    assert [tuple(f.shape) for f in feats] == [(1, 256, 3, 8, 12), (1, 512, 3, 4, 6), (1, 1024, 3, 2, 3)]
    modules = dict(net.named_modules())
    dense_convs = [n for n in modules if ".denselayer" in n and n.rsplit(".", 1)[-1] in ("conv1", "conv2")]
    assert len(dense_convs) == 2 * (6 + 12 + 24)
    assert all(type(modules[n]) is A3DConv for n in dense_convs)
    for name in ("features.conv0", "features.transition1.conv", "features.transition2.conv"):
        assert type(modules[name]) is Conv2p5d, name
    assert modules["features.conv0"].stride == (1, 2, 2)
    assert modules["features.pool0"].kernel_size == (1, 3, 3)
    assert modules["features.transition1.pool"].stride == (1, 2, 2)
    # the 2D DenseNet-121 trunk's parameters plus one D x D fusion matrix per input channel of each A3D conv
    trunk2d = sum(p.numel() for p in DenseNetTrunk2d().parameters())
    fusion = sum(m.fusion.numel() for m in net.modules() if isinstance(m, A3DConv))
    assert sum(p.numel() for p in net.parameters()) == trunk2d + fusion


def test_squeeze_gives_2d_key_slice_pyramid(densenet121_a3d):
    fpn = KeySliceFPN(densenet121_a3d.out_channels, 16, num_slices=3)
    with torch.no_grad():
        out = fpn(densenet121_a3d.forward_intermediates(torch.randn(2, 1, 3, 32, 32)))
    assert list(out) == ["0", "1", "2"]
    assert [tuple(v.shape) for v in out.values()] == [(2, 16, 8, 8), (2, 16, 4, 4), (2, 16, 2, 2)]


@pytest.mark.parametrize("operator", DEEPLESION_OPERATORS)
def test_every_operator_forward_backward(operator):
    net = deeplesion_backbone(operator, num_slices=3, **TINY)
    fpn = KeySliceFPN(net.out_channels, 4, num_slices=3)
    x = torch.randn(2, 1, 3, 64, 48)
    feats = net.forward_intermediates(x)
    assert [f.shape[2] for f in feats] == [3, 3, 3]
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 12), (8, 6), (4, 3)]
    out = fpn(feats)
    loss = sum(v.square().mean() for v in out.values())
    assert torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in [*net.named_parameters(), *fpn.named_parameters()] if p.grad is None]
    assert not missing, missing


def test_depth_mismatch_is_refused():
    net = deeplesion_backbone("conv2p5d", num_slices=3, **TINY)
    with pytest.raises(ValueError, match=r"D=3, H, W\), got shape \(1, 1, 5, 32, 32\)"):
        net(torch.randn(1, 1, 5, 32, 32))


def test_adapt_input_conv_grey_equals_rgb_of_grey():
    weight = torch.randn(4, 3, 7, 7)
    grey = torch.randn(1, 1, 16, 16)
    expected = F.conv2d(grey.repeat(1, 3, 1, 1), weight, padding=3)
    torch.testing.assert_close(F.conv2d(grey, adapt_input_conv(weight, 1), padding=3), expected)
    assert adapt_input_conv(weight, 3) is not weight and torch.equal(adapt_input_conv(weight, 3), weight)
    with pytest.raises(ValueError, match="in_channels must be >= 1"):
        adapt_input_conv(weight, 0)


def test_imagenet_style_weights_load_into_the_3d_trunk(tmp_path):
    # a torchvision densenet121 state dict (random values stand in for ImageNet, nothing is downloaded)
    state = torchvision.models.densenet121(weights=None).state_dict()
    path = tmp_path / "densenet121.pth"
    torch.save(state, path)
    net = deeplesion_backbone("i3d", num_slices=3, weights=str(path))
    own = net.state_dict()
    torch.testing.assert_close(own["features.conv0.weight"], state["features.conv0.weight"].sum(1, keepdim=True))
    i3d = net.features.denseblock2.denselayer3.conv2
    assert isinstance(i3d, I3DConv) and i3d.weight.shape[2:] == (3, 3, 3)
    torch.testing.assert_close(i3d.weight.sum(2), state["features.denseblock2.denselayer3.conv2.weight"])
    torch.testing.assert_close(
        own["features.denseblock3.denselayer24.norm1.running_var"],
        state["features.denseblock3.denselayer24.norm1.running_var"],
    )
    with pytest.raises(ValueError, match="no DenseNet trunk entry"):
        deeplesion_backbone("conv2p5d", num_slices=3, weights={"fc.weight": torch.zeros(1)})


def test_p3d_depth_kernel_starts_as_no_fusion():
    torch.manual_seed(0)
    p3d = deeplesion_backbone("p3d", num_slices=3, **TINY).eval()
    x = torch.randn(1, 1, 3, 32, 32)
    with torch.no_grad():
        before = p3d(x)
        set_p3d_temporal_kernel(p3d, 3)
        after = p3d(x)
    kernels = {m.temporal_weight.shape[2] for m in p3d.modules() if isinstance(m, P3DConv)}
    assert kernels == {3}
    torch.testing.assert_close(after, before)


def test_dice_mask_loss_hand_computed():
    m = 4
    box = [torch.tensor([[0.0, 0.0, 8.0, 8.0]])]
    gt_masks = [torch.ones(1, 8, 8)]
    labels, matched = [torch.tensor([1])], [torch.tensor([0])]
    perfect = torch.full((1, 2, m, m), 30.0)
    assert dice_mask_loss(perfect, box, gt_masks, labels, matched).item() == pytest.approx(0.0, abs=1e-6)
    empty = torch.full((1, 2, m, m), -30.0)  # predicts nothing: 1 - (0 + 1) / (0 + 16 + 1)
    assert dice_mask_loss(empty, box, gt_masks, labels, matched).item() == pytest.approx(1 - 1 / 17, abs=1e-6)
    half = torch.zeros(1, 2, m, m)  # p = 0.5 everywhere: 1 - (2 * 8 + 1) / (8 + 16 + 1)
    assert dice_mask_loss(half, box, gt_masks, labels, matched).item() == pytest.approx(1 - 17 / 25, abs=1e-6)


def _targets(n: int, size: int = 64) -> list[dict[str, torch.Tensor]]:
    masks = torch.zeros(1, size, size, dtype=torch.uint8)
    masks[0, 20:36, 24:44] = 1
    return [{"boxes": torch.tensor([[24.0, 20.0, 44.0, 36.0]]), "labels": torch.tensor([1]), "masks": masks}] * n


@pytest.mark.parametrize("operator, mask_loss", [("a3d", "dice"), ("conv2p5d", "dice_bce")])
def test_detector_train_and_eval(operator, mask_loss):
    net = deeplesion_detector(operator, num_slices=3, mask_loss=mask_loss, **TINY_HEADS, **TINY)
    x = torch.randn(2, 1, 3, 64, 64)
    losses = net.train()(x, _targets(2))
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    no_grad = [n for n, p in net.named_parameters() if p.grad is None]
    assert not no_grad, no_grad
    with torch.no_grad():
        out = net.eval()(list(x))
    assert len(out) == 2
    for det in out:
        k = det["boxes"].shape[0]
        assert det["boxes"].shape == (k, 4) and det["scores"].shape == (k,) and det["masks"].shape == (k, 1, 64, 64)
        assert k <= 50


def test_detector_refuses_bad_input():
    net = deeplesion_detector("conv2p5d", num_slices=3, **TINY_HEADS, **TINY)
    with pytest.raises(ValueError, match=r"expects images \(N, 1, D=3, H, W\)"):
        net.eval()(torch.randn(1, 3, 3, 64, 64))
    with pytest.raises(ValueError, match="multiples of 16"):
        net.eval()(torch.randn(1, 1, 3, 64, 60))
    with pytest.raises(ValueError, match="targets are needed"):
        net.train()(torch.randn(1, 1, 3, 64, 64))
    bad = _targets(1)
    bad[0] = {**bad[0], "boxes": torch.tensor([[30.0, 20.0, 10.0, 36.0]])}
    with pytest.raises(ValueError, match="x2 <= x1"):
        net.train()(torch.randn(1, 1, 3, 64, 64), bad)


def test_detector_weights_round_trip(tmp_path):
    torch.manual_seed(1)
    net = deeplesion_detector("a3d", num_slices=3, **TINY_HEADS, **TINY)
    torch.save(net.state_dict(), tmp_path / "model.pt")
    again = deeplesion_detector("a3d", num_slices=3, weights=str(tmp_path / "model.pt"), **TINY_HEADS, **TINY)
    for key, value in net.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    with pytest.raises(RuntimeError, match="size mismatch|Missing key|Unexpected key"):
        deeplesion_detector("a3d", num_slices=5, weights=str(tmp_path / "model.pt"), **TINY_HEADS, **TINY)
