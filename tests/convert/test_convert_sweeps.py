"""Registry-driven sweeps: timm CNN families, MONAI 2D CNNs, torchvision segmentation models and FPN backbones.

Every entry either converts and passes forward + backward, gradients, the state-dict contract and the 2.5D
invariant oracle (``monai_acs.convert.sweeps.check_named``), or is refused at conversion time with its reason
(``EXPECTED_REFUSALS``, listed in docs/converter.md). A bounded fast subset runs by default (one entry per root
cause); the full sweep is ``slow`` (``--runslow`` or ``MONAI_ACS_SLOW=1``).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from monai_acs.convert import ConversionError, convert_to_3d
from monai_acs.convert.sweeps import (
    MONAI_MODELS,
    TIMM_EXCLUDE,
    TIMM_FAMILIES,
    TORCHVISION_EXTRA,
    check_invariant,
    check_named,
    is_timm_excluded,
)

timm = pytest.importorskip("timm")

# Families refused at conversion time, with the reason convert_to_3d gives (a substring of it).
EXPECTED_REFUSALS: dict[tuple[str, str], str] = {
    ("timm", "byoanet"): "HaloAttn",  # 2D blocked (halo) attention with 2D relative position embeddings
    ("timm", "efficientformer"): "fixed 2D grid",
    ("timm", "efficientformer_v2"): "fixed 2D grid",
    ("timm", "visformer"): "fixed 2D grid",
    ("timm", "maxxvit"): "fixed 2D grid",  # window attention with relative position biases
}

# One entry per root cause the converter had to handle; each takes a few seconds on 2 cores.
FAST = [
    ("timm", "efficientnet"),  # BatchNormAct2d (a BatchNorm2d subclass with its own forward): ndim check, buffers
    ("timm", "nfnet"),  # weight-standardised F.conv2d (functional conv) and a gamma broadcast
    ("timm", "mambaout"),  # channels-last x.mean((1, 2)) head
    ("timm", "resnest"),  # reshape((B, r, C // r, 1, 1)) split attention broadcast
    ("monai", "DynUNet"),  # skip_layers alias keys, deep supervision stacked output
    ("torchvision", "fpn_resnet18"),  # FrozenBatchNorm2d buffers: state-dict keys kept
    ("timm", "efficientformer_v2"),  # refused: attention biases over a fixed 2D grid
    ("timm", "mobilevit"),  # untraceable MobileVitBlock: N-D adapter (monai_acs.convert.adapters)
    ("timm", "efficientvit_mit"),  # untraceable LiteMLA (linear attention): N-D adapter
]
# slow only: vgg, cpubone (N-D adapters for ConvMlp, ConvAttention), lowformer (attention over h * w tokens), VNet (x.repeat), HighResNet (channel F.pad), BasicUNet
# (untraceable UpCat), convnext (channels-last); the patterns themselves have fast unit tests below


def test_every_timm_family_is_swept_or_excluded_with_a_reason():
    modules = set(timm.list_modules())
    unclassified = sorted(m for m in modules if m not in TIMM_FAMILIES and not is_timm_excluded(m))
    assert not unclassified, f"timm families neither swept nor excluded: {unclassified}"
    assert not set(TIMM_FAMILIES) & {m for m in modules if is_timm_excluded(m)}
    assert all(reason for reason in TIMM_EXCLUDE.values())
    available = set(timm.list_models())
    assert all(name in available for name, _ in TIMM_FAMILIES.values())


def test_monai_sweep_covers_the_listed_networks():
    wanted = {"UNet", "BasicUNet", "DynUNet", "SegResNet", "SegResNetDS", "AttentionUnet", "DenseNet121",
              "EfficientNetBN", "ResNet", "SEResNet50", "FlexibleUNet", "HighResNet", "VNet"}  # fmt: skip
    assert wanted <= set(MONAI_MODELS)
    assert {"fcn_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"} <= set(TORCHVISION_EXTRA)


def _assert_expected(result) -> None:
    expected = EXPECTED_REFUSALS.get((result.source, result.name))
    if expected is None:
        assert result.status == "pass", result.reason
    else:
        assert result.status == "refused", f"expected a refusal ({expected}), got {result.status}: {result.reason}"
        assert expected in result.reason, result.reason


@pytest.mark.parametrize(("source", "name"), FAST, ids=[f"{s}-{n}" for s, n in FAST])
def test_sweep_fast(source, name):
    _assert_expected(check_named(source, name, "acs"))


ALL = (
    [("timm", n) for n in TIMM_FAMILIES] + [("monai", n) for n in MONAI_MODELS]
    + [("torchvision", n) for n in TORCHVISION_EXTRA]
)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(("source", "name"), ALL, ids=[f"{s}-{n}" for s, n in ALL])
def test_sweep_full_acs(source, name):
    _assert_expected(check_named(source, name, "acs"))


# a representative subset with every operator (each also checked against the invariant oracle)
REPRESENTATIVE = [("timm", "efficientnet"), ("timm", "convnext"), ("monai", "DynUNet"), ("torchvision", "fpn_resnet18")]
OPERATORS = ["mean_acs", "soft_acs", "conv2p5d", "i3d", "p3d", "tsm", "a3d"]


@pytest.mark.slow
@pytest.mark.parametrize("operator", OPERATORS)
@pytest.mark.parametrize(("source", "name"), REPRESENTATIVE, ids=[f"{s}-{n}" for s, n in REPRESENTATIVE])
def test_sweep_representative_operators(source, name, operator):
    _assert_expected(check_named(source, name, operator))


def test_vision_transformer_is_refused_at_conversion_time():
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3)
    with pytest.raises((NotImplementedError, ValueError), match="fixed 2D grid|2D operations left|ConversionError"):
        convert_to_3d(vit, "acs")


def test_monai_transformer_is_refused_at_conversion_time():
    pytest.importorskip("einops")  # MONAI's transformers need it
    from monai.networks.nets import UNETR

    unetr = UNETR(in_channels=1, out_channels=2, img_size=(32, 32), feature_size=4, hidden_size=48, mlp_dim=96,
                  num_heads=4, spatial_dims=2)  # fmt: skip
    with pytest.raises((NotImplementedError, ValueError)):
        convert_to_3d(unetr, "acs")


class _FlatScale(nn.Module):
    """``view(C, 1, 1)`` broadcast and a channels-last mean; with depth == channels a pattern rewrite that put the
    scale on the depth axis would still run, silently wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.scale = nn.Parameter(torch.rand(4) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x) * self.scale.view(4, 1, 1)
        pooled = y.permute(0, 2, 3, 1).mean((1, 2))  # (N, C): channels-last spatial mean
        return y + pooled.view(x.shape[0], 4, 1, 1)


def test_invariant_oracle_on_broadcasts_and_channels_last_reductions():
    check_invariant(_FlatScale(), (1, 4, 6, 10), depth=4)  # depth == channels
    net = convert_to_3d(_FlatScale(), "acs").eval()
    assert net(torch.randn(2, 4, 4, 6, 10)).shape == (2, 4, 4, 6, 10)


class _Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(6, 4, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(x, self.weight - self.weight.mean((1, 2, 3), keepdim=True), padding=1)


@pytest.mark.parametrize("operator", ["acs", "mean_acs", "conv2p5d", "i3d"])
def test_functional_conv2d_maps_to_the_operator(operator):
    from monai_acs.layers import acs_conv3d, inflate_conv_weight, mean_acs_conv3d

    model = _Functional()
    net = convert_to_3d(model, operator).eval()
    x = torch.randn(1, 4, 5, 6, 7)
    w = model.weight - model.weight.mean((1, 2, 3), keepdim=True)  # a weight reduction: not a map, left as is
    reference = {
        "acs": lambda: acs_conv3d(x, w, padding=1),
        "mean_acs": lambda: mean_acs_conv3d(x, w, padding=1),
        "conv2p5d": lambda: torch.nn.functional.conv3d(x, w.unsqueeze(2), padding=(0, 1, 1)),
        "i3d": lambda: torch.nn.functional.conv3d(x, inflate_conv_weight(w, 3), padding=1),
    }[operator]()
    torch.testing.assert_close(net(x), reference)
    check_invariant(model, (1, 4, 6, 7))


def test_num_batches_tracked_and_buffers_follow_training():
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=3)
    net = convert_to_3d(model, "acs").train()
    assert sorted(net.state_dict()) == sorted(model.state_dict())
    key = next(k for k in net.state_dict() if k.endswith("num_batches_tracked"))
    before = int(net.state_dict()[key])
    mean_key = key.replace("num_batches_tracked", "running_mean")
    mean_before = net.state_dict()[mean_key].clone()
    net(torch.randn(2, 3, 32, 32, 32))
    assert int(net.state_dict()[key]) == before + 1
    assert not torch.equal(net.state_dict()[mean_key], mean_before)


def test_broken_rewrite_is_refused_with_node_module_and_source_line():
    class Einsum(nn.Module):  # an einsum over a map's axes is not rewritten: the check run refuses it
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return torch.einsum("nchw->nhwc", y).mean((1, 2))

    with pytest.raises(ConversionError, match=r"node 'einsum'.*test_convert_sweeps\.py:\d+ `return torch\.einsum"):
        convert_to_3d(Einsum(), "acs")


def test_fixed_size_graph_is_refused_with_its_reason():
    class Fixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x).reshape(x.shape[0], 4, 64, 64)  # only runs on 64 x 64 inputs

    with pytest.raises(NotImplementedError, match=r"runs at 64 x 64 but at no other probed size.*fixed 2D grid"):
        convert_to_3d(Fixed(), "acs")


def test_avg_pool_excluding_padding_accepts_maps_smaller_than_the_kernel():
    from monai_acs.convert.rules import AvgPool3dExcludePad

    for ceil_mode in (False, True):
        pool = AvgPool3dExcludePad((3, 3, 3), (2, 2, 2), (1, 1, 1), ceil_mode)
        x = torch.randn(1, 3, 5, 7, 9)
        reference = nn.AvgPool3d(3, 2, 1, count_include_pad=False, ceil_mode=ceil_mode)(x)
        torch.testing.assert_close(pool(x), reference)
        assert pool(torch.randn(1, 3, 1, 1, 1)).shape == (1, 3, 1, 1, 1)  # AvgPool3d raises here, AvgPool2d does not
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False))
    check_invariant(model, (1, 2, 1, 1))  # PoolFormer's token mixer on a 1 x 1 map


@pytest.mark.parametrize("operator", ["acs", "i3d", "conv2p5d", "p3d"])
def test_timm_same_padding_layers_convert(operator):
    from timm.layers.conv2d_same import Conv2dSame
    from timm.layers.pool2d_same import AvgPool2dSame, MaxPool2dSame

    model = nn.Sequential(
        Conv2dSame(3, 4, 3, stride=2), MaxPool2dSame(3, 2), Conv2dSame(4, 4, (1, 7)), AvgPool2dSame(3, 2)
    )
    check_invariant(model, (1, 3, 17, 19))
    net = convert_to_3d(model, operator)
    assert net(torch.randn(1, 3, 17, 17, 19)).shape == (1, 4, 3, 3, 3)  # SAME: ceil(17 / 4) = 3 on every axis
    assert sorted(net.state_dict()) == sorted(model.state_dict()) or operator == "p3d"


class _RepeatPad(nn.Module):
    """MONAI VNet's ``x.repeat([1, 2, 1, 1])`` residual and HighResNet's 6-entry channel ``F.pad``; attention over
    ``h * w`` tokens with a permute of a non-map 4-D tensor (lowformer)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x) + x.repeat([1, 2, 1, 1])
        y = y + torch.nn.functional.pad(x, (0, 0, 0, 0, 1, 1))
        n, c, h, w = y.size()
        tokens = y.reshape(n, 2, c // 2, h * w).permute(0, 1, 3, 2)  # (N, heads, HW, C / heads)
        attention = torch.softmax(tokens @ tokens.transpose(-2, -1), dim=-1) @ tokens
        return y + attention.permute(0, 1, 3, 2).reshape(n, c, h, w)


def test_repeat_channel_pad_and_token_attention():
    check_invariant(_RepeatPad(), (1, 2, 5, 6), depth=3)
    net = convert_to_3d(_RepeatPad(), "acs")
    assert net(torch.randn(2, 2, 3, 5, 6)).shape == (2, 4, 3, 5, 6)


def test_functional_conv_and_same_padding_survive_pickling():
    import pickle

    from timm.layers.conv2d_same import Conv2dSame

    for model in (_Functional(), nn.Sequential(Conv2dSame(4, 4, 3, stride=2))):
        net = convert_to_3d(model, "acs").eval()
        x = torch.randn(1, 4, 5, 6, 7)
        torch.testing.assert_close(pickle.loads(pickle.dumps(net))(x), net(x))  # unpickling re-traces the code


def test_mobilevit_adapter_resizes_sizes_that_are_not_patch_multiples():
    """40 -> 5 voxels at the MobileViT stages: the 2x2 patches need the (tri)linear resize branch of the adapter."""
    model = timm.create_model("mobilevit_xxs", pretrained=False, num_classes=3).eval()
    net = convert_to_3d(model, "acs")
    assert type(net.stages[2][1]).__name__ == "MobileVitBlockND"
    assert set(net.state_dict()) == set(model.state_dict())
    out = net(torch.randn(1, 3, 40, 40, 40))
    assert out.shape == (1, 3)
    check_invariant(model, (1, 3, 40, 40), 2)  # 2.5D: the resize along H, W only, per slice as in 2D
