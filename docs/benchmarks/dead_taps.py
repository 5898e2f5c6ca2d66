"""Split (ACS) layers with dead-tap axes (issue 16, session 9): forward + backward of one layer on 2 CPU threads,
channels-last input, medians of 7 (ms). An axis whose size is at most the dilation (centred zero padding) makes
every view read only its centre tap there; ``_dead_tap_axes`` finds those axes and ``_box_conv_views`` cuts the box
to the live taps. Columns: the layer as it runs ('rule'), with the cut switched off ('uncut': the views, or the
full 27-tap box for small layers), and the 2.5D conv of the same 2D kernel ('2p5d'). The shapes are LiTS DeepLab
layers (ResNet-101 layers 2-4 and the ASPP, rates 12/24/36) at the benchmark's 8 x 64 x 64 crop (deep maps 1 x 8 x 8)
and the bundle's 64 x 224 x 224 crop (8 x 28 x 28), and a few small or shallow ones.

    python docs/benchmarks/dead_taps.py > docs/benchmarks/dead_taps.txt   # about 2 minutes
"""
import time

import torch
from torch import nn

from monai_acs.layers import ACSConv
from monai_acs.layers import functional as LF

torch.set_num_threads(2)
CASES = [  # (N, Cin, D, H, W), Cout, dilation, stride
    ((2, 256, 1, 8, 8), 256, 1, 1), ((2, 256, 1, 8, 8), 256, 2, 1), ((2, 512, 1, 8, 8), 512, 4, 1),
    ((2, 2048, 1, 8, 8), 256, 12, 1), ((2, 2048, 1, 8, 8), 256, 36, 1), ((2, 128, 2, 16, 16), 128, 1, 2),
    ((2, 2048, 8, 28, 28), 256, 12, 1), ((2, 2048, 8, 28, 28), 256, 36, 1), ((2, 512, 8, 28, 28), 512, 4, 1),
    ((1, 64, 1, 128, 128), 64, 1, 1), ((1, 32, 2, 64, 64), 32, 2, 1), ((2, 16, 1, 32, 32), 16, 1, 1),
]


def median_ms(step, reps=7):
    step(), step()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return sorted(times)[reps // 2] * 1e3


def layer_step(layer, x, grad):
    def step():
        torch.autograd.grad(layer(x), [x, *layer.parameters()], grad)
    return step


print("| input (N, C, D, H, W) | Cout | dilation | stride | dead axes | rule (ms) | uncut (ms) | 2p5d (ms) | uncut / rule |")
print("|---|---:|---:|---:|---|---:|---:|---:|---:|")
for shape, cout, dil, stride in CASES:
    torch.manual_seed(0)
    acs = ACSConv(shape[1], cout, 3, padding=dil, dilation=dil, stride=stride)
    twin = nn.Conv3d(shape[1], cout, (1, 3, 3), padding=(0, dil, dil), dilation=(1, dil, dil), stride=stride)
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last_3d).requires_grad_(True)
    with torch.no_grad():
        grad = torch.randn_like(acs(x))
    dead = LF._dead_tap_axes(x, acs.weight, acs._plans)
    rule = median_ms(layer_step(acs, x, grad))
    LF._CUT_DEAD_TAPS = False
    uncut = median_ms(layer_step(acs, x, grad))
    LF._CUT_DEAD_TAPS = True
    plain = median_ms(layer_step(twin, x, torch.randn_like(twin(x).detach())))
    print(f"| {shape} | {cout} | {dil} | {stride} | {dead} | {rule:.2f} | {uncut:.2f} | {plain:.2f} | {uncut / rule:.2f} |")
