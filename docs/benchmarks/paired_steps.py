"""Whole-model training steps, paired in one process (issue 16, session 9): the network with its operator, the same
network with the dead-tap cut switched off (``_CUT_DEAD_TAPS``), and its 2.5D twin, stepped in turn for ROUNDS
rounds after one warm-up each; medians in seconds. Contiguous input, as the bundles deliver it; 2 CPU threads. The
models are those of ``scripts/benchmark.py --sections models`` (same builders, same loss and optimiser step).

    python docs/benchmarks/paired_steps.py lits_train 8,64,64 2 7          # NET D,H,W N ROUNDS [OPERATOR, default acs]
    python docs/benchmarks/paired_steps.py deeplesion 7,96,96 1 7 a3d
"""
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import benchmark as bench  # noqa: E402

from monai_acs.layers import functional as LF  # noqa: E402

torch.set_num_threads(2)
net, size, n, rounds = sys.argv[1], tuple(int(v) for v in sys.argv[2].split(",")), int(sys.argv[3]), int(sys.argv[4])
operator = sys.argv[5] if len(sys.argv) > 5 else "acs"
spec, cpu = {"n": n, "size": size}, torch.device("cpu")
model_step = bench._train_step(*bench._build_model(net, operator, "contiguous", spec, cpu))
twin_step = bench._train_step(*bench._build_model(net, "conv2p5d", "contiguous", spec, cpu))
model_step(), twin_step()
times: dict[str, list[float]] = {"model": [], "model, uncut": [], "2.5D twin": []}
for _ in range(rounds):
    for name, step, cut in (("model", model_step, True), ("model, uncut", model_step, False), ("2.5D twin", twin_step, True)):
        LF._CUT_DEAD_TAPS = cut
        start = time.perf_counter()
        step()
        times[name].append(time.perf_counter() - start)
LF._CUT_DEAD_TAPS = True
median = {name: sorted(t)[len(t) // 2] for name, t in times.items()}
print(f"{net} {operator} N={n} {size}: " + ", ".join(f"{k} {v:.3f} s" for k, v in median.items())
      + f"; model / twin {median['model'] / median['2.5D twin']:.2f}, uncut / twin "
      f"{median['model, uncut'] / median['2.5D twin']:.2f}")
