"""Rank-agnostic forwards for known untraceable 2D blocks of the model zoo.

A forward that torch.fx cannot trace (Python branches on sizes) is kept and its children are converted one by one;
when that forward unpacks ``B, C, H, W = x.shape`` it cannot run in 3D and the check run refuses the model. For a few
such blocks of timm, whose computation has an exact N-D counterpart, this module provides that counterpart: the
converter converts the block's children through the rule table and then gives the block a forward written for any
number of spatial dimensions. The block keeps its children, parameters, buffers and attributes (so its state-dict
keys are unchanged); only its class changes. The check run and the sweeps' invariant oracle still decide.

- timm ``vgg.ConvMlp`` (VGG pre-logits): pools every spatial axis up to the kernel size when smaller (its depth
  only when the converted kernel spans depth, i.e. not with ``keep_depth``), then its convolutions.
- timm ``efficientvit_mit.LiteMLA``: ReLU linear attention over the D x H x W tokens; with ``keep_depth`` its
  normaliser's ``eps`` is multiplied by D, which makes a depth-constant volume give the 2D result exactly.
- timm ``cpubone.ConvAttention``: strided projection, softmax attention over the tokens, upsampling, crop.
- timm ``mobilevit.MobileVitBlock``: unfold into (d, h, w) patches (d = the patch height, 1 with ``keep_depth``),
  transformer over the patches, fold.

The token attentions are exact in 2.5D: on a volume that is constant along depth every token is repeated D times,
which neither softmax nor ReLU linear attention changes (the latter with its ``eps`` scaled by D, above).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .rules import ConvertContext

__all__ = ["ADAPTERS", "find_adapter"]


class _Adapted(nn.Module):
    """Takes over a 2D block's state (children, parameters, buffers, attributes); subclasses give the N-D forward.

    ``token_children`` name children that act on token sequences (no spatial axes): they are not converted.
    """

    token_children: tuple[str, ...] = ()

    def __init__(self, block: nn.Module, ctx: ConvertContext) -> None:
        nn.Module.__init__(self)
        self.__dict__.update(block.__dict__)
        self.adapted_from = f"{type(block).__module__}.{type(block).__qualname__}"
        self.keep_depth = ctx.keep_depth

    def extra_repr(self) -> str:
        return f"adapted_from={self.adapted_from}, keep_depth={self.keep_depth}"


def _pool_mode(x: torch.Tensor) -> Callable:
    return F.adaptive_avg_pool3d if x.ndim == 5 else F.adaptive_avg_pool2d


class ConvMlpND(_Adapted):
    """timm's VGG ``ConvMlp`` for any number of spatial dimensions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.input_kernel_size
        spatial = list(x.shape[2:])
        # the kernel spans depth unless keep_depth (whose depth kernel is 1)
        needed = [1 if (self.keep_depth and x.ndim == 5 and axis == 0) else k for axis in range(len(spatial))]
        if any(size < need for size, need in zip(spatial, needed)):
            x = _pool_mode(x)(x, [max(size, need) for size, need in zip(spatial, needed)])
        return self.act2(self.fc2(self.drop(self.act1(self.fc1(x)))))


class LiteMLAND(_Adapted):
    """timm's EfficientViT ``LiteMLA`` (multi-scale ReLU linear attention) over all spatial positions."""

    def _linear_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float) -> torch.Tensor:
        # v carries a column of ones: the last output column is the normaliser
        dtype = v.dtype
        out = q.float() @ (k.float().transpose(-1, -2) @ v.float())
        return (out[..., :-1] / (out[..., -1:] + eps)).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, spatial = x.shape[0], x.shape[2:]
        qkv = self.qkv(x)
        scales = torch.cat([qkv] + [op(qkv) for op in self.aggreg], dim=1)
        tokens = scales.reshape(batch, -1, 3 * self.dim, math.prod(spatial)).transpose(-1, -2)
        q, k, v = tokens.chunk(3, dim=-1)
        q, k = self.kernel_func(q), self.kernel_func(k)
        v = F.pad(v, (0, 1), mode="constant", value=1.0)
        # keep_depth (2.5D): D slices multiply the normaliser by D on a depth-constant volume; eps scales with it
        eps = self.eps * (spatial[0] if self.keep_depth and x.ndim == 5 else 1)
        if v.device.type != "meta":
            with torch.autocast(device_type=v.device.type, enabled=False):
                out = self._linear_attention(q, k, v, eps)
        else:
            out = self._linear_attention(q, k, v, eps)
        return self.proj(out.transpose(-1, -2).reshape(batch, -1, *spatial))


class ConvAttentionND(_Adapted):
    """timm's CPUBone ``ConvAttention`` for any number of spatial dimensions."""

    def _strides(self, ndim: int) -> list[int]:
        # keep_depth: the converted projection does not stride depth
        return [1 if (self.keep_depth and ndim == 5 and axis == 0) else self.att_stride for axis in range(ndim - 2)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = list(x.shape[2:])
        if self.small_kernels and self.att_stride > 1:
            pads = [(-size) % stride for size, stride in zip(spatial, self._strides(x.ndim))]
            if any(pads):
                x = F.pad(x, [p for pad in reversed(pads) for p in (0, pad)])
        projected = self.pwise(self.conv_proj(x))
        batch, reduced = projected.shape[0], projected.shape[2:]
        qkv = projected.reshape(batch, self.num_heads, self.num_keys * self.head_dim, math.prod(reduced))
        q, k, v = qkv.permute(0, 1, 3, 2).chunk(3, dim=3)
        values = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        out = self.o_proj(values.permute(0, 1, 3, 2).reshape(batch, self.o_proj_inpdim, *reduced))
        out = self.upsampling(out)
        return out[(..., *[slice(0, size) for size in spatial])]


class MobileVitBlockND(_Adapted):
    """timm's ``MobileVitBlock`` with (d, h, w) patches: d = the patch height, 1 with ``keep_depth``."""

    token_children = ("transformer", "norm")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_1x1(self.conv_kxk(x))
        batch, channels, spatial = x.shape[0], x.shape[1], list(x.shape[2:])
        patch = list(self.patch_size)
        if x.ndim == 5:
            patch = [1 if self.keep_depth else patch[0], *patch]
        padded = [math.ceil(size / p) * p for size, p in zip(spatial, patch)]
        counts = [size // p for size, p in zip(padded, patch)]
        mode = "trilinear" if x.ndim == 5 else "bilinear"
        resized = padded != spatial
        if resized:
            x = F.interpolate(x, size=padded, mode=mode, align_corners=False)
        n = len(spatial)
        # (B, C, n1, p1, n2, p2, ...) -> (B, p1, p2, ..., n1, n2, ..., C) -> (B * P, N, C)
        split = [v for pair in zip(counts, patch) for v in pair]
        order = [0] + [3 + 2 * i for i in range(n)] + [2 + 2 * i for i in range(n)] + [1]
        tokens = x.reshape(batch, channels, *split).permute(order)
        tokens = tokens.reshape(batch * math.prod(patch), math.prod(counts), channels)
        tokens = self.norm(self.transformer(tokens))
        back = [0] + [2 * n + 1] + [v for i in range(n) for v in (1 + n + i, 1 + i)]
        x = tokens.reshape(batch, *patch, *counts, channels).permute(back).reshape(batch, channels, *padded)
        if resized:
            x = F.interpolate(x, size=spatial, mode=mode, align_corners=False)
        x = self.conv_proj(x)
        if self.conv_fusion is not None:
            x = self.conv_fusion(torch.cat((shortcut, x), dim=1))
        return x


# "module.QualName" of the 2D class -> its N-D counterpart
ADAPTERS: dict[str, type[_Adapted]] = {
    "timm.models.vgg.ConvMlp": ConvMlpND,
    "timm.models.efficientvit_mit.LiteMLA": LiteMLAND,
    "timm.models.cpubone.ConvAttention": ConvAttentionND,
    "timm.models.mobilevit.MobileVitBlock": MobileVitBlockND,
}


def find_adapter(module: nn.Module) -> type[_Adapted] | None:
    """The N-D counterpart of an untraceable 2D block, or None."""
    kind = type(module)
    return ADAPTERS.get(f"{kind.__module__}.{kind.__qualname__}")
