"""A3D: asymmetric 3D context fusion (A3D paper Sec. 2.2, Algorithm 1)."""

# no `from __future__ import annotations` here: TorchScript reads these class annotations at run time

from typing import Any

import torch
from torch import Tensor, nn

from .acs import Conv2p5d
from .functional import _a3d_mix, _fast_a3d, a3d_fast_eligible
from .registry import register_operator

__all__ = ["A3DConv"]


@register_operator(
    "a3d",
    summary="A3D: per input channel a learnable D x D slice-mixing matrix (batched matmul), then 1 x K x K conv",
    params_overhead="1 + D^2/(Co K^2)",
    flops_overhead="1 + D/(Co K^2)",
    needs_depth=True,
)
class A3DConv(Conv2p5d):
    """A3D convolution (A3D paper Eq. 1, Algorithm 1): asymmetric slice fusion followed by a 2.5D conv.

    Per input channel c a D x D matrix ``fusion[:, :, c]`` mixes the D slices (``out_k = sum_d P[d, k] x_d``),
    then the 2D kernel runs as a 1 x kh x kw convolution. ``fusion`` starts at identity + U(-0.1, 0.1).

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode, device, dtype:
            as in :class:`~monai_acs.ACSConv`.
        depth: the fixed input depth D (required).
        init_noise: half-width of the uniform perturbation added to the identity. Default 0.1.
        recompute_mix: keep only the input for backward and recompute the slice mix there (one batched matmul),
            so the layer holds the memory of a 2.5D conv; False keeps the mixed tensor as well (one more activation
            of the input's size per layer) and skips the recomputation. Measured trade-off in docs/benchmarks.md.
            Default True. (A scripted layer always keeps both.)

    Raises:
        ValueError: if ``depth`` is missing, or at run time if the input depth differs from ``depth``.

    Examples:
        >>> conv = A3DConv(2, 3, 3, padding=1, depth=5)
        >>> conv.fusion.shape, conv(torch.randn(1, 2, 5, 6, 7)).shape
        (torch.Size([5, 5, 2]), torch.Size([1, 3, 5, 6, 7]))
    """

    def __init__(
        self, *args: Any, depth: int | None = None, init_noise: float = 0.1, recompute_mix: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.recompute_mix = bool(recompute_mix)
        if depth is None or int(depth) < 1:
            raise ValueError(
                "A3DConv needs the fixed input depth: pass depth=D (e.g. convert_to_3d(model, 'a3d', depth=7, "
                "keep_depth=True))"
            )
        self.depth = int(depth)
        self.init_noise = float(init_noise)
        self.fusion = nn.Parameter(
            torch.empty(self.depth, self.depth, self.in_channels, device=self.weight.device, dtype=self.weight.dtype)
        )
        self.reset_fusion()

    def reset_fusion(self) -> None:
        """Identity plus U(-init_noise, init_noise) on every channel's D x D matrix."""
        with torch.no_grad():
            self.fusion.uniform_(-self.init_noise, self.init_noise)
            self.fusion.add_(torch.eye(self.depth, device=self.fusion.device, dtype=self.fusion.dtype)[:, :, None])

    def forward(self, x: Tensor) -> Tensor:
        if not torch.jit.is_scripting():
            self._check_input(x)
            if x.shape[2] != self.depth:
                where = f" at '{self.source_name}'" if self.source_name else ""
                raise ValueError(
                    f"A3DConv{where} was built for depth D={self.depth}, got input of shape {tuple(x.shape)} "
                    f"(N, C, D, H, W); convert with depth={x.shape[2]} or resample the input"
                )
            if self.recompute_mix and a3d_fast_eligible(x, self._mode_pad, self._plans):
                return _fast_a3d(x, self.fusion, self.weight, self.bias, self._stride_list, self._plans[0])
        return self._run_views(_a3d_mix(x, self.fusion), False)  # the conv in the mix's (contiguous) layout

    def extra_repr(self) -> str:
        return super().extra_repr() + f", depth={self.depth}" + ("" if self.recompute_mix else ", recompute_mix=False")
