"""Parameters and GFLOPs of the DeepLesion 3D backbone per fusion operator: the A3D paper's Table 1.

Usage (from the repository root):

    python scripts/count_flops.py                                  # the table, 512 x 512, D = 3 and 7
    python scripts/count_flops.py --operators a3d,i3d --size 256 --format csv

What is counted (the rule that reproduces Table 1): the 3D trunk of :func:`monai_acs.networks.deeplesion_backbone`
(DenseNet-121 ``conv0`` through dense block 3, transitions 1 and 2 included; the detector's D x 1 x 1 squeeze
convolutions, pyramid and heads excluded) on one 1-channel D x 512 x 512 input. Every module of the real converted
network is hooked (``register_forward_hook``) and counted from the shapes it actually sees:

- convolutions: one FLOP per multiply-accumulate, ``output elements x in_channels / groups x kernel taps`` with the
  kernel taps of the operator (1 x K x K for no fusion, ACS, TSM, A3D, P3D; K x K x K for I3D; zero padding is
  counted as the kernel covers it), plus P3D's K x 1 x 1 depth convolution (``output elements x out_channels x K``),
  plus one per output element for a bias (DenseNet has none);
- batch norm: 2 per input element; ReLU: 1 per output element; max / average pooling: 1 per input element;
- A3D's slice fusion (the einsum ``ncdhw,dkc->nckhw`` inside each ``A3DConv``): ``input elements x D``
  multiply-accumulates, reported separately (see below).

With this rule no fusion gives 40.64 / 94.83 GFLOPs and I3D 78.69 / 183.61 for D = 3 / 7, as in the paper.
The network runs on PyTorch's ``meta`` device: real modules and shapes, no arithmetic, no memory.

Findings (see also bundles/deeplesion_a3d/docs/README.md):

- I3D reproduces only when the stem (7 x 7 ``conv0``) and the transitions stay 2.5D and the fusion operator replaces
  both dense-layer convolutions: 1 x 1 kernels inflate to 1 x 1 x 1 (no change), 3 x 3 kernels to 3 x 3 x 3 (3x).
- ACS and TSM equal no fusion exactly (ACS splits the same kernel taps across views; TSM's shift is free).
- A3D: the paper's 40.64 / 94.83 equal the convolutions alone. The fusion einsum adds D^2 x C x H x W
  multiply-accumulates per A3D layer (the paper's own overhead ``D / (Co K^2)``: 2.3 % of a 1 x 1 bottleneck with
  128 outputs at D = 3), i.e. 0.60 GFLOPs at D = 3 and 3.25 at D = 7 on top: 41.24 / 98.08 in total. A hook-based
  counter that only hooks convolution modules (as the paper's evidently did) does not see it.
- P3D (67.79 / 158.18 in the paper) was not reproduced exactly. The registry's P3D gives a depth kernel as long as
  the 2D kernel (1 for the 1 x 1 bottlenecks): 50.68 / 118.26. Giving every dense-layer P3D a depth kernel of 3
  (``p3d_temporal_kernel=3``, the ``p3d-k3`` row) gives 67.59 / 157.72, 0.3 % under the paper; the remaining
  0.066 GFLOPs per slice equal exactly 3 operations per output element of the 1 x 1 bottlenecks (e.g. a batch norm
  and ReLU between the spatial and the depth convolution of the bottleneck, which the paper does not describe).
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fire
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from monai_acs.layers import A3DConv, MeanACSConv, P3DConv, SoftACSConv
from monai_acs.layers._base import Conv2dWeightLayer
from monai_acs.networks.deeplesion import deeplesion_backbone

#: The A3D paper's Table 1: GFLOPs of the 3D backbone for 3 / 7 slices of 512 x 512.
PAPER_GFLOPS: dict[str, tuple[float, float]] = {
    "conv2p5d": (40.64, 94.83),
    "i3d": (78.69, 183.61),
    "p3d": (67.79, 158.18),
    "acs": (40.64, 94.83),
    "tsm": (40.64, 94.83),
    "a3d": (40.64, 94.83),
    "p3d-k3": (67.79, 158.18),
}
#: Rows of the default table: (label, operator, backbone options).
ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "conv2p5d": ("conv2p5d", {}),
    "i3d": ("i3d", {}),
    "p3d": ("p3d", {}),
    "p3d-k3": ("p3d", {"p3d_temporal_kernel": 3}),
    "acs": ("acs", {}),
    "tsm": ("tsm", {}),
    "a3d": ("a3d", {}),
}
_LABELS = {"conv2p5d": "no fusion (2.5D)", "p3d-k3": "p3d, depth kernel 3 everywhere"}


class FlopCounter:
    """Forward hooks on every module of a network that count operations by the rule of the module docstring.

    ``counts`` holds FLOPs per category (``conv``, ``fusion``, ``norm``, ``act``, ``pool``). A module with parameters
    and no rule raises, so nothing with weights is silently left out.
    """

    def __init__(self, model: nn.Module) -> None:
        self.counts: dict[str, int] = {"conv": 0, "fusion": 0, "norm": 0, "act": 0, "pool": 0}
        self.seen: dict[str, int] = {}
        self._handles = []
        for name, module in model.named_modules():
            handler = self._handler(module)
            if handler is not None:
                self._handles.append(module.register_forward_hook(self._wrap(name, handler)))
            elif not list(module.children()) and any(True for _ in module.parameters(recurse=False)):
                raise TypeError(f"count_flops: no counting rule for '{name}' ({type(module).__name__})")

    def _wrap(self, name: str, handler: Any) -> Any:
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            handler(module, inputs[0], output)
            self.seen[name] = self.seen.get(name, 0) + 1

        return hook

    def _handler(self, module: nn.Module) -> Any:
        if isinstance(module, Conv2dWeightLayer):
            return self._fusion_conv
        if isinstance(module, nn.Conv3d):
            return self._conv3d
        if isinstance(module, (nn.BatchNorm3d, nn.BatchNorm2d)):
            return self._norm
        if isinstance(module, (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU)):
            return self._act
        if isinstance(module, (nn.MaxPool3d, nn.AvgPool3d, nn.MaxPool2d, nn.AvgPool2d)):
            return self._pool
        return None

    def _fusion_conv(self, module: Conv2dWeightLayer, x: torch.Tensor, out: torch.Tensor) -> None:
        kh, kw = module.kernel_size
        views = 3 if isinstance(module, (MeanACSConv, SoftACSConv)) else 1
        self.counts["conv"] += views * out.numel() * (module.in_channels // module.groups) * kh * kw
        if module.bias is not None:
            self.counts["conv"] += out.numel()
        if isinstance(module, P3DConv):
            weight = module.temporal_weight
            self.counts["conv"] += out.numel() * weight.shape[1] * weight.shape[2]
        if isinstance(module, A3DConv):
            self.counts["fusion"] += x.numel() * module.depth

    def _conv3d(self, module: nn.Conv3d, x: torch.Tensor, out: torch.Tensor) -> None:
        taps = module.kernel_size[0] * module.kernel_size[1] * module.kernel_size[2]
        self.counts["conv"] += out.numel() * (module.in_channels // module.groups) * taps
        if module.bias is not None:
            self.counts["conv"] += out.numel()

    def _norm(self, module: nn.Module, x: torch.Tensor, out: torch.Tensor) -> None:
        self.counts["norm"] += x.numel() * (2 if module.affine else 1)

    def _act(self, module: nn.Module, x: torch.Tensor, out: torch.Tensor) -> None:
        self.counts["act"] += out.numel()

    def _pool(self, module: nn.Module, x: torch.Tensor, out: torch.Tensor) -> None:
        self.counts["pool"] += x.numel()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def count_backbone(
    operator: str, num_slices: int, size: int = 512, device: str = "meta", **backbone_options: Any
) -> dict[str, Any]:
    """Count parameters and FLOPs of the 3D DeepLesion trunk for one (1, 1, D, size, size) input.

    Args:
        operator: fusion operator key.
        num_slices: D.
        size: slice height and width. Default 512.
        device: ``"meta"`` (default: shapes only, no memory) or a real device.
        **backbone_options: passed to :func:`monai_acs.networks.deeplesion_backbone` (e.g. ``p3d_temporal_kernel``).

    Returns:
        ``params``, ``flops`` (convolutions + norm + activations + pooling, without A3D's fusion),
        ``fusion_flops`` (A3D's einsum), ``counts`` per category and ``modules`` (hooked module calls).
    """
    with torch.device(device):
        net = deeplesion_backbone(operator, num_slices=num_slices, **backbone_options)
    net.eval()
    counter = FlopCounter(net)
    with torch.no_grad():
        net.forward_intermediates(torch.zeros(1, 1, num_slices, size, size, device=device))
    counter.remove()
    counts = dict(counter.counts)
    return {
        "params": sum(p.numel() for p in net.parameters()),
        "flops": counts["conv"] + counts["norm"] + counts["act"] + counts["pool"],
        "fusion_flops": counts["fusion"],
        "counts": counts,
        "modules": sum(counter.seen.values()),
    }


def flop_table(
    rows: Sequence[str] | None = None, slices: Sequence[int] = (3, 7), size: int = 512
) -> list[dict[str, Any]]:
    """One record per row of :data:`ROWS`: parameters (D = first of ``slices``) and GFLOPs per D, with the paper's."""
    records = []
    for label in rows or list(ROWS):
        if label not in ROWS:
            raise ValueError(f"unknown row {label!r}; choose from {list(ROWS)}")
        operator, options = ROWS[label]
        record: dict[str, Any] = {"row": label, "operator": operator}
        for d in slices:
            result = count_backbone(operator, d, size, **options)
            record[f"params_{d}"] = result["params"] / 1e6
            record[f"gflops_{d}"] = result["flops"] / 1e9
            record[f"gflops_{d}_with_fusion"] = (result["flops"] + result["fusion_flops"]) / 1e9
            paper = PAPER_GFLOPS.get(label)
            if paper is not None and d in (3, 7) and size == 512:
                record[f"paper_{d}"] = paper[(3, 7).index(d)]
        records.append(record)
    return records


def _format(records: list[dict[str, Any]], slices: Sequence[int], fmt: str) -> str:
    header = ["row"] + [f"params (M) D={d}" for d in slices]
    for d in slices:
        header += [f"GFLOPs D={d}", f"paper D={d}", f"diff D={d}"]
    header += [f"A3D fusion incl. D={d}" for d in slices]
    lines = []
    for r in records:
        line = [_LABELS.get(r["row"], r["row"])] + [f"{r[f'params_{d}']:.3f}" for d in slices]
        for d in slices:
            paper = r.get(f"paper_{d}")
            ours = r[f"gflops_{d}"]
            line += [
                f"{ours:.2f}",
                f"{paper:.2f}" if paper else "-",
                f"{100 * (ours / paper - 1):+.2f} %" if paper else "-",
            ]
        line += [f"{r[f'gflops_{d}_with_fusion']:.2f}" if r["operator"] == "a3d" else "=" for d in slices]
        lines.append(line)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(lines)
        return buffer.getvalue()
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out) + "\n"


def main(
    operators: str | Sequence[str] | None = None,
    slices: Sequence[int] = (3, 7),
    size: int = 512,
    format: str = "markdown",
) -> None:
    """Print the table (Markdown or ``--format csv``).

    Args:
        operators: comma-separated rows of the table (default all: conv2p5d, i3d, p3d, p3d-k3, acs, tsm, a3d).
        slices: depths D. Default (3, 7).
        size: slice size. Default 512 (the paper's).
        format: ``"markdown"`` or ``"csv"``.
    """
    if isinstance(operators, str):
        operators = [o.strip() for o in operators.split(",") if o.strip()]
    if isinstance(slices, int):
        slices = (slices,)
    records = flop_table(operators, tuple(int(d) for d in slices), int(size))
    print(
        f"3D DenseNet-121 trunk (conv0 .. dense block 3), 1 x D x {size} x {size}; FLOPs = conv MACs + 2 x BN "
        f"+ ReLU + pooling input elements; the A3D fusion einsum only in the last column(s)"
    )
    print(_format(records, tuple(int(d) for d in slices), format), end="")


if __name__ == "__main__":
    fire.Fire(main)
