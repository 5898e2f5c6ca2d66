"""Layout sweeps behind docs/operators.md's layout table (issue 16), CPU, 2 threads, median ms per step.

``acs``: one ACS layer (N = 2, C -> C, 3 x 3 kernel, stride 1), forward + backward (input and parameter gradients),
with a contiguous or channels-last input, computed in the layout rule's channels-last ("compute-cl") or in the
caller's layout ("compute-contig": the rule switched off). Session 7's output: layout_sweep_acs.txt.

``2p5d``: one 2.5D layer (``Conv2p5d``) per (C, size, stride), contiguous or channels-last input, computed
channels-last ("cl": the input laid out channels-last inside the timed step) or in the caller's layout ("keep").
Session 7's output (layout_sweep_2p5d.txt) was made before ``Conv2p5d`` kept the caller's layout, with the layout
rule's switch choosing between the two inside the layer (the same copy).

Usage, from the repository root: python docs/benchmarks/layout_sweep.py acs   (or 2p5d)
"""

import sys
import time

import torch

from monai_acs.layers import ACSConv, Conv2p5d
from monai_acs.layers import functional as Fn

torch.set_num_threads(2)
CL = torch.channels_last_3d


def bench(fn, budget=1.0):
    fn()
    t0 = time.perf_counter()
    fn()
    one = time.perf_counter() - t0
    reps = max(3, min(15, int(budget / max(one, 1e-4))))
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2]


def _ms(r):
    return {k: round(v * 1e3, 1) for k, v in r.items()}


def sweep_acs():
    orig = Fn._prefers_channels_last
    shapes = []
    for c in (32, 64, 128, 256, 512):
        for sz in ((8, 8, 8), (8, 16, 16), (16, 16, 16), (8, 32, 32), (24, 24, 24), (32, 32, 32), (8, 64, 64),
                   (48, 48, 48)):
            if c * sz[0] * sz[1] * sz[2] <= 64 * 48**3:
                shapes.append((c, sz))
    for c, sz in shapes:
        x = torch.randn(2, c, *sz)
        layer = ACSConv(c, c, 3, padding=1)
        r = {}
        for inf in ("contig", "cl"):
            xi = (x if inf == "contig" else x.contiguous(memory_format=CL)).requires_grad_()
            ins = [xi] + list(layer.parameters())
            for rule in ("cl", "contig"):
                Fn._prefers_channels_last = orig if rule == "cl" else (lambda t: False)
                with torch.no_grad():
                    g = torch.randn_like(layer(xi))
                r[f"in-{inf}/compute-{rule}"] = bench(lambda: torch.autograd.grad(layer(xi), ins, g))
        Fn._prefers_channels_last = orig
        print(c, sz, _ms(r), "best", min(r, key=r.get), flush=True)


def sweep_2p5d():
    shapes = [(32, (8, 16, 16), 1), (32, (24, 24, 24), 1), (32, (48, 48, 48), 1), (64, (7, 96, 96), 1),
              (64, (16, 16, 16), 1), (64, (32, 32, 32), 1), (64, (48, 48, 48), 1), (64, (48, 48, 48), 2),
              (128, (7, 24, 24), 1), (128, (24, 24, 24), 1), (256, (7, 12, 12), 1), (256, (16, 16, 16), 1),
              (512, (8, 8, 8), 1), (32, (64, 128, 128), 1)]
    for c, sz, s in shapes:
        x = torch.randn(2 if c > 32 or sz[0] < 64 else 1, c, *sz)
        layer = Conv2p5d(c, c, 3, padding=1, stride=s)
        r = {}
        for inf in ("contig", "cl"):
            xi = (x if inf == "contig" else x.contiguous(memory_format=CL)).requires_grad_()
            ins = [xi] + list(layer.parameters())
            for rule in ("cl", "keep"):
                run = (lambda t: layer(t.contiguous(memory_format=CL))) if rule == "cl" else layer
                with torch.no_grad():
                    g = torch.randn_like(run(xi))
                r[f"in-{inf}/{rule}"] = bench(lambda: torch.autograd.grad(run(xi), ins, g))
        print(c, sz, s, _ms(r), flush=True)


if __name__ == "__main__":
    {"acs": sweep_acs, "2p5d": sweep_2p5d}[sys.argv[1] if len(sys.argv) > 1 else "acs"]()
