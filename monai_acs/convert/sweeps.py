"""Registry-driven conversion sweeps over timm, MONAI and torchvision 2D CNNs, with the 2.5D invariant oracle.

Each check builds the randomly initialised 2D model, runs it in 2D, converts it and checks what a converted network
must satisfy (:func:`check_2d_model`):

- the converted network runs forward and backward in train mode on a small cube, and every tensor output has the
  2D output's shape with a depth axis added (or the 2D shape, for outputs without a spatial axis);
- every parameter that gets a gradient in 2D gets a finite one in 3D;
- ``state_dict()`` keys equal the 2D network's (buffers, aliases and ``num_batches_tracked`` included), and the 2D
  state dict loads strictly into the 3D network and back;
- the invariant oracle (:func:`check_invariant`): converted with ``conv2p5d`` and ``keep_depth=True``, in eval mode,
  on a volume that is constant along depth, the network reproduces the 2D output slice by slice. Any rewrite of a
  reduction, view, broadcast, pad or permute that mixes up axes breaks it.

Used by ``scripts/check_zoo.py`` and ``tests/convert/test_convert_sweeps.py``.
"""

from __future__ import annotations

import copy
import fnmatch
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..layers import get_operator
from .api import convert_to_3d

__all__ = [
    "MONAI_MODELS",
    "TIMM_EXCLUDE",
    "TIMM_FAMILIES",
    "TORCHVISION_EXTRA",
    "SweepResult",
    "build_model",
    "check_2d_model",
    "check_invariant",
    "check_named",
    "is_timm_excluded",
    "sweep_names",
]

# timm families (``timm.list_modules()``) that are CNNs or convolution hybrids: their smallest model (fewest
# parameters, found on the meta device) and its 2D input edge in the sweep.
TIMM_FAMILIES: dict[str, tuple[str, int]] = {
    "byoanet": ("halonet_h1", 64),
    "byobnet": ("test_byobnet", 32),
    "convmixer": ("convmixer_768_32", 32),
    "convnext": ("test_convnext", 32),
    "cpubone": ("cpubone_nano", 32),
    "cspnet": ("cs3darknet_focus_s", 32),
    "cspnext": ("cspnext_tiny", 32),
    "densenet": ("densenet121", 32),
    "dla": ("dla46x_c", 32),
    "dpn": ("dpn48b", 32),
    "edgenext": ("edgenext_xx_small", 64),
    "efficientformer": ("efficientformer_l1", 64),
    "efficientformer_v2": ("efficientformerv2_s0", 64),
    "efficientnet": ("test_efficientnet", 32),
    "efficientvit_mit": ("efficientvit_b0", 64),
    "fasternet": ("fasternet_t0", 32),
    "fastvit": ("fastvit_t8", 64),
    "ghostnet": ("ghostnet_050", 32),
    "hardcorenas": ("hardcorenas_b", 32),
    "hgnet": ("hgnetv2_b0", 32),
    "hrnet": ("hrnet_w18_small", 32),
    "iformer": ("iformer_t", 64),
    "inception_next": ("inception_next_atto", 32),
    "inception_resnet_v2": ("inception_resnet_v2", 75),
    "inception_v3": ("inception_v3", 75),
    "inception_v4": ("inception_v4", 75),
    "lcnetv2": ("lcnetv2_small", 32),
    "lowformer": ("lowformer_b0", 64),
    "mambaout": ("test_mambaout", 32),
    "maxxvit": ("test_coatnet", 160),
    "metaformer": ("poolformerv2_s12", 32),
    "mobilenetv3": ("lcnet_035", 32),
    "mobilevit": ("mobilevit_xxs", 64),
    "nasnet": ("nasnetalarge", 75),
    "nextvit": ("nextvit_small", 64),
    "nfnet": ("test_nfnet", 32),
    "pnasnet": ("pnasnet5large", 75),
    "rdnet": ("rdnet_tiny", 32),
    "regnet": ("regnetx_002", 32),
    "repghost": ("repghostnet_050", 32),
    "repvit": ("repvit_m1", 32),
    "res2net": ("res2next50", 32),
    "resnest": ("resnest14d", 32),
    "resnet": ("test_resnet", 32),
    "resnetv2": ("resnetv2_18", 32),
    "rexnet": ("rexnet_100", 32),
    "selecsls": ("selecsls42", 32),
    "senet": ("legacy_seresnet18", 32),
    "sknet": ("skresnet18", 32),
    "starnet": ("starnet_s050", 32),
    "swiftformer": ("swiftformer_xs", 64),
    "tresnet": ("tresnet_m", 64),
    "vgg": ("vgg11", 32),
    "visformer": ("visformer_tiny", 64),
    "vovnet": ("ese_vovnet19b_slim_dw", 32),
    "xception": ("legacy_xception", 75),
    "xception_aligned": ("xception41p", 32),
}

# timm families left out of the CNN sweep, as patterns with their reason (convert_to_3d refuses them, see the docs).
TIMM_EXCLUDE: dict[str, str] = {
    "vision_transformer*": "vision transformer: learned 2D position embedding over a fixed patch grid",
    "deit": "vision transformer (distilled): learned 2D position embedding",
    "beit": "vision transformer: relative position bias tables over a fixed 2D window",
    "eva": "vision transformer: 2D rotary / learned position embeddings",
    "cait": "vision transformer: learned 2D position embedding",
    "convit": "vision transformer with gated positional self-attention over a fixed 2D grid",
    "crossvit": "two-branch vision transformer: learned 2D position embeddings",
    "pit": "pooling vision transformer: learned 2D position embedding",
    "pvt_v2": "pyramid vision transformer: attention over a fixed 2D token grid",
    "twins": "vision transformer: 2D positional encodings and windowed attention",
    "tnt": "transformer in transformer: learned 2D position embeddings",
    "nest": "nested transformer: learned 2D position embeddings per block",
    "xcit": "cross-covariance transformer: 2D Fourier position encoding",
    "volo": "vision outlooker: learned 2D position embedding",
    "swin_transformer*": "Swin transformer: 2D window partition and relative position bias tables",
    "levit": "LeViT: attention biases indexed over a fixed 2D resolution",
    "tiny_vit": "TinyViT: 2D window attention with relative position bias",
    "davit": "DaViT: 2D window / channel attention",
    "focalnet": "FocalNet: 2D focal modulation over a (N, H, W, C) token grid",
    "gcvit": "GCViT: 2D window attention with relative position bias",
    "coat": "CoaT: convolutional position encodings over a 2D token grid reshaped by (H, W)",
    "efficientvit_msra": "EfficientViT (MSRA): attention biases indexed over a fixed 2D resolution",
    "efficientvim": "EfficientViM: 2D state-space (Mamba) mixing over flattened tokens",
    "shvit": "SHViT: attention over a 2D token grid",
    "mvitv2": "multiscale vision transformer: 2D relative position embeddings",
    "hiera": "Hiera: 2D unrolled token order and position embeddings",
    "hieradet_sam2": "Hiera (SAM 2): 2D window position embeddings",
    "vitamin": "ViTamin: learned 2D position embedding in the transformer stages",
    "naflexvit": "NaFlexViT: learned 2D position embedding",
    "mlp_mixer": "MLP-Mixer / ResMLP: token-mixing MLP over a fixed number of 2D patches",
    "sequencer": "Sequencer: LSTMs along the 2D rows and columns",
    "mobilenetv5": "MobileNetV5: multi-query attention with 2D position handling",
    "csatv2": "CSATv2: attention with 2D position embeddings",
    "qwen3_vit": "vision transformer (Qwen3): 2D rotary position embedding",
    "gemma4_vit": "vision transformer (Gemma 4): 2D position embedding",
    "deepseek_vit": "vision transformer (DeepSeek): learned 2D position embedding",
}

# MONAI 2D CNNs in ``monai.networks.nets``: name -> (constructor keyword arguments, 2D input edge).
MONAI_MODELS: dict[str, tuple[dict[str, Any], int]] = {
    "UNet": ({"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "channels": (4, 8, 16), "strides": (2, 2)}, 16),
    "BasicUNet": ({"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "features": (4, 4, 8, 8, 16, 4)}, 32),
    "DynUNet": (
        {
            "spatial_dims": 2,
            "in_channels": 1,
            "out_channels": 2,
            "kernel_size": [3, 3, 3],
            "strides": [1, 2, 2],
            "upsample_kernel_size": [2, 2],
            "filters": [4, 8, 16],
            "deep_supervision": True,
            "deep_supr_num": 1,
            "res_block": True,
        },
        16,
    ),
    "SegResNet": ({"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "init_filters": 8}, 16),
    "SegResNetDS": ({"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "init_filters": 4}, 16),
    "AttentionUnet": (
        {"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "channels": (4, 8, 16), "strides": (2, 2)},
        16,
    ),
    "DenseNet121": ({"spatial_dims": 2, "in_channels": 1, "out_channels": 2}, 32),
    "EfficientNetBN": (
        {"model_name": "efficientnet-b0", "pretrained": False, "spatial_dims": 2, "in_channels": 1, "num_classes": 2},
        32,
    ),
    "ResNet": (
        {
            "block": "basic",
            "layers": [1, 1, 1, 1],
            "block_inplanes": [4, 8, 16, 32],
            "spatial_dims": 2,
            "n_input_channels": 1,
            "num_classes": 2,
        },
        32,
    ),
    "SEResNet50": ({"spatial_dims": 2, "in_channels": 1, "num_classes": 2, "pretrained": False}, 32),
    "FlexibleUNet": (
        {"in_channels": 1, "out_channels": 2, "backbone": "efficientnet-b0", "pretrained": False, "spatial_dims": 2},
        32,
    ),
    "HighResNet": ({"spatial_dims": 2, "in_channels": 1, "out_channels": 2}, 16),
    "VNet": (
        {
            "spatial_dims": 2,
            "in_channels": 1,
            "out_channels": 2,
            "dropout_prob_down": 0.0,
            "dropout_prob_up": (0.0, 0.0),
        },
        16,
    ),
}

# torchvision segmentation models and FPN backbones (the zoo module covers the classification CNNs).
TORCHVISION_EXTRA: dict[str, int] = {
    "fcn_resnet50": 32,
    "deeplabv3_mobilenet_v3_large": 32,
    "lraspp_mobilenet_v3_large": 32,
    "fpn_resnet18": 32,  # torchvision.models.detection.backbone_utils.resnet_fpn_backbone (FrozenBatchNorm2d)
    "fpn_mobilenet_v3_large": 64,  # mobilenet_backbone(fpn=True)
}


@dataclass
class SweepResult:
    """Outcome of one sweep entry; ``status`` is ``"pass"``, ``"refused"`` (at conversion time) or ``"fail"``."""

    source: str
    name: str
    operator: str
    status: str
    seconds: float = 0.0
    reason: str = ""


def sweep_names(source: str) -> list[str]:
    """The entries of one sweep: ``"timm"`` (family names), ``"monai"`` or ``"torchvision"``."""
    if source == "timm":
        return list(TIMM_FAMILIES)
    if source == "monai":
        return list(MONAI_MODELS)
    if source == "torchvision":
        return list(TORCHVISION_EXTRA)
    raise ValueError(f"unknown sweep {source!r}; choose from 'timm', 'monai', 'torchvision'")


def build_model(source: str, name: str) -> tuple[nn.Module, tuple[int, ...]]:
    """Build a randomly initialised 2D model of a sweep (nothing is downloaded) and its (N, C, H, W) input shape."""
    if source == "timm":
        import timm

        model_name, edge = TIMM_FAMILIES[name]
        model = timm.create_model(model_name, pretrained=False, num_classes=3)
        return model, (2, 3, edge, edge)
    if source == "monai":
        from monai.networks import nets

        kwargs, edge = MONAI_MODELS[name]
        model = getattr(nets, name)(**kwargs)
        return model, (2, 1, edge, edge)
    if source == "torchvision":
        import torchvision
        from torchvision.models.detection.backbone_utils import mobilenet_backbone, resnet_fpn_backbone

        edge = TORCHVISION_EXTRA[name]
        if name == "fpn_resnet18":
            model = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=3)
        elif name == "fpn_mobilenet_v3_large":
            model = mobilenet_backbone(backbone_name="mobilenet_v3_large", weights=None, fpn=True, trainable_layers=3)
        else:
            model = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=3)
        return model, (2, 3, edge, edge)
    raise ValueError(f"unknown sweep {source!r}; choose from 'timm', 'monai', 'torchvision'")


def _tensors(output: Any) -> list[torch.Tensor]:
    """Every tensor of a (nested) model output, in a fixed order."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        return [t for key in output for t in _tensors(output[key])]
    if isinstance(output, (list, tuple)):
        return [t for value in output for t in _tensors(value)]
    return []


def _expected_3d_shape(shape_2d: tuple[int, ...], depth: int | None) -> tuple[int, ...]:
    """(..., H, W) -> (..., depth, H, W) for maps (N, C, H, W) and stacked maps (DynUNet's deep supervision,
    (N, heads, C, H, W)); shapes without spatial axes stay."""
    if len(shape_2d) >= 4:
        return (*shape_2d[:-2], depth if depth is not None else shape_2d[-2], *shape_2d[-2:])
    return tuple(shape_2d)


def check_2d_model(
    model: nn.Module,
    input_shape: tuple[int, ...],
    operator: str = "acs",
    converted: nn.Module | None = None,
    **convert_options: Any,
) -> nn.Module:
    """Convert ``model`` and check forward, backward, gradients and the state-dict contract against the 2D run.

    The 3D input is the cube (N, C, H, H, W) of the 2D input (N, C, H, W); every 4-D 2D output must come back
    with a depth equal to its height, every other output with its 2D shape.

    Args:
        model: the 2D model (not modified).
        input_shape: (N, C, H, W) of the 2D run.
        operator: fusion operator key. Default ``"acs"``.
        converted: ``model`` already converted with these settings (None: convert here). Default None.
        **convert_options: passed to :func:`convert_to_3d`.

    Returns:
        The converted network (after one train step's backward).

    Raises:
        AssertionError: what does not hold, named.
        Exception: whatever conversion raises (a refusal is a ``ConversionError``, ``ValueError``,
            ``NotImplementedError`` or ``TypeError`` raised by :func:`convert_to_3d`).
    """
    model2d = copy.deepcopy(model).train()
    x2d = torch.randn(input_shape)
    out2d = _tensors(model2d(x2d))
    sum(t.float().sum() for t in out2d).backward()
    grads_2d = {n for n, p in model2d.named_parameters() if p.grad is not None}
    state_2d = model.state_dict()

    net = (converted if converted is not None else convert_to_3d(model, operator, **convert_options)).train()
    keys_3d, keys_2d = list(net.state_dict()), list(state_2d)
    missing = sorted(set(keys_2d) - set(keys_3d))
    # operator extras (Soft-ACS view weights, P3D depth convolutions, A3D slice mixes) live in the fusion layers
    layer_type = get_operator(operator).layer
    extra = sorted(
        k for k in set(keys_3d) - set(keys_2d) if not isinstance(net.get_submodule(k.rpartition(".")[0]), layer_type)
    )
    if missing or extra:
        raise AssertionError(f"state_dict keys differ from 2D: missing {missing[:5]}, extra {extra[:5]}")
    shapes_kept = all(net.state_dict()[k].shape == v.shape for k, v in state_2d.items())
    if shapes_kept:  # strict round trip of the 2D keys both ways (I3D inflates kernels: shapes differ)
        net.load_state_dict({**net.state_dict(), **state_2d}, strict=True)
        copy.deepcopy(model).load_state_dict({k: v for k, v in net.state_dict().items() if k in state_2d}, strict=True)

    n, c, h, w = input_shape
    keep = convert_options.get("keep_depth", False)
    depth = convert_options.get("depth", 3) if keep else h
    out3d = _tensors(net(torch.randn(n, c, depth, h, w)))
    if len(out3d) != len(out2d):
        raise AssertionError(f"{len(out3d)} tensor outputs in 3D, {len(out2d)} in 2D")
    for index, (t2, t3) in enumerate(zip(out2d, out3d)):
        expected = _expected_3d_shape(tuple(t2.shape), depth if keep else None)
        if tuple(t3.shape) != expected:
            raise AssertionError(f"output {index}: shape {tuple(t3.shape)}, expected {expected} (2D {tuple(t2.shape)})")
        if not bool(torch.isfinite(t3).all()):
            raise AssertionError(f"output {index}: non-finite values")
    sum(t.float().sum() for t in out3d).backward()
    params_3d = dict(net.named_parameters())
    missing = sorted(n for n in grads_2d if n in params_3d and params_3d[n].grad is None)
    if missing:
        raise AssertionError(f"{len(missing)} parameters with a 2D gradient get none in 3D: {missing[:5]}")
    bad = [n for n, p in params_3d.items() if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
    if bad:
        raise AssertionError(f"non-finite gradients: {bad[:5]}")
    return net


# depth of the oracle's volume where 2 does not fit (SegResNetDS checks that every spatial size divides by 8)
INVARIANT_DEPTH: dict[str, int] = {"SegResNetDS": 8}


def check_invariant(model: nn.Module, input_shape: tuple[int, ...], depth: int = 2, rtol: float = 1e-3) -> None:
    """The invariant oracle: 2.5D with ``keep_depth`` on a depth-constant volume reproduces the 2D model per slice.

    Converted with ``conv2p5d`` and ``keep_depth=True`` and run in eval mode on the 2D input repeated ``depth``
    times along depth, every 4-D output of the 2D model must equal each depth slice of the 3D output, every other
    output must equal the 2D one (up to ``rtol`` of the output's scale).

    Raises:
        AssertionError: the first output that differs, with the largest difference.
    """
    model2d = copy.deepcopy(model).eval()
    x2d = torch.randn(input_shape)
    with torch.no_grad():
        out2d = _tensors(model2d(x2d))
        net = convert_to_3d(model, "conv2p5d", keep_depth=True).eval()
        out3d = _tensors(net(x2d.unsqueeze(2).expand(-1, -1, depth, -1, -1).contiguous()))
    if len(out3d) != len(out2d):
        raise AssertionError(f"invariant: {len(out3d)} tensor outputs in 3D, {len(out2d)} in 2D")
    for index, (t2, t3) in enumerate(zip(out2d, out3d)):
        if t2.dim() >= 4:
            if t3.dim() != t2.dim() + 1 or t3.shape[-3] != depth:
                raise AssertionError(f"invariant: output {index} has shape {tuple(t3.shape)}, 2D {tuple(t2.shape)}")
            slices = t3.unbind(-3)
        else:
            slices = [t3]
        scale = float(t2.abs().max()) + 1e-6
        for s in slices:
            if s.shape != t2.shape:
                raise AssertionError(f"invariant: output {index} slice shape {tuple(s.shape)}, 2D {tuple(t2.shape)}")
            diff = float((s - t2).abs().max())
            if diff > rtol * scale:
                raise AssertionError(f"invariant: output {index} differs from 2D by {diff:.3g} (scale {scale:.3g})")


_REFUSALS = (ValueError, NotImplementedError, TypeError)


def check_named(source: str, name: str, operator: str = "acs", invariant: bool = True) -> SweepResult:
    """Build, convert and check one sweep entry; never raises (the reason is in the result).

    A conversion-time refusal (``convert_to_3d`` raising ``ValueError`` / ``NotImplementedError`` / ``TypeError``
    with its reason) is ``"refused"``; anything that goes wrong after ``convert_to_3d`` returned is ``"fail"``.
    """
    from .api import ConversionError

    start = time.perf_counter()
    try:
        model, shape = build_model(source, name)
    except Exception as error:  # noqa: BLE001 - a sweep reports every failure
        return SweepResult(source, name, operator, "fail", time.perf_counter() - start, f"build: {_short(error)}")
    options: dict[str, Any] = get_operator(operator).depth_options(3)
    try:
        net = convert_to_3d(model, operator, **options)
    except (ConversionError, *_REFUSALS) as error:
        return SweepResult(source, name, operator, "refused", time.perf_counter() - start, _short(error))
    except Exception as error:  # noqa: BLE001
        return SweepResult(source, name, operator, "fail", time.perf_counter() - start, f"convert: {_short(error)}")
    try:
        check_2d_model(model, shape, operator, net, **options)
        if invariant:
            check_invariant(model, (1, *shape[1:]), INVARIANT_DEPTH.get(name, 2))
    except Exception as error:  # noqa: BLE001
        return SweepResult(source, name, operator, "fail", time.perf_counter() - start, _short(error))
    return SweepResult(source, name, operator, "pass", time.perf_counter() - start)


def _short(error: BaseException) -> str:
    message = " ".join(str(error).split())
    return f"{type(error).__name__}: {message[:300]}"


def is_timm_excluded(module_name: str) -> str | None:
    """The reason a timm family is left out of the CNN sweep, or None."""
    for pattern, reason in TIMM_EXCLUDE.items():
        if fnmatch.fnmatch(module_name, pattern):
            return reason
    return None
