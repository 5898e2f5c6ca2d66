"""Time and memory of ACS and A3D against the 2.5D (1 x K x K) and 3D (K x K x K) convolutions they replace.

Usage (from the repository root):

    python scripts/benchmark.py --quick True --out bench/quick  # what users run, in minutes: layers, memory, a3d,
                                                                #   models (default layout beside the best one)
    python scripts/benchmark.py --out bench/cpu                 # everything, CPU, 2 threads
    python scripts/benchmark.py --sections layers,memory --repeats 9
    python scripts/benchmark.py --sections lits --lits_volume 32,256,256 --lits_roi 16,256,256
    python scripts/benchmark.py --device cuda --threads 16       # the same on a GPU
    python scripts/benchmark.py --device cuda --amp True         # ... under torch.autocast (float16)
    python scripts/benchmark.py --tiny --out /tmp/bench          # tiny shapes: checks the script runs, times nothing

Sections (``--sections``, comma separated):

- ``layers``: one layer, forward + backward (``torch.autograd.grad`` of the output w.r.t. the input and every
  parameter, with a fixed random output gradient), K = 3, for the issue's shapes (a) N=2, 64->64, 48^3, stride 1;
  (b) N=1, 32->32, 64x128x128, stride 1; (c) N=2, 64->128, 48^3, stride 2. Candidates: ``ACSConv``, ``nn.Conv3d``
  with a 1x3x3 kernel (2.5D) and with a 3x3x3 kernel (3D), each with a contiguous and a channels_last_3d input
  (an ``nn.Conv3d`` candidate also has its weight in that format). Ratios compare the fastest format of each,
  and, first, ACS in the *default layout* (a contiguous input, as MONAI transforms and the bundles deliver it)
  against the fastest format of the 2.5D and 3D convolutions: what a user gets without choosing a layout.
  ``--shapes d`` adds N=2, 16->16, 64^3 (few channels; not an issue target). ``--compile True`` adds
  ``torch.compile`` candidates (ACSConv, the plain three-conv ACS, the 2.5D conv; A3DConv in ``a3d``).
- ``views``: the floor of any implementation that runs the three views as separate convolutions: the 2.5D conv
  with only one view's share of the output channels, per view, forward + backward, against the full 2.5D conv.
- ``breakdown``: ``torch.profiler`` self time per operator of one forward + backward of ACS and of the 2.5D conv
  (the last of ``--formats``), averaged over ``--repeats`` steps: where ACS's extra time goes.
- ``memory``: per layer candidate, the bytes saved for backward (unique storages packed by
  ``torch.autograd.graph.saved_tensors_hooks``) and the peak resident memory of one forward + backward in a fresh
  subprocess (after one warm-up step, ``/proc/self/clear_refs`` resets the high-water mark; large allocations are
  forced to ``mmap`` so that freed tensors leave the resident set). On CUDA: ``torch.cuda.max_memory_allocated``.
- ``a3d``: ``A3DConv`` (D = 7: N=2, 64->64, 7x128x128; D = 48: shape (a)) against the 2.5D conv, forward + backward.
- ``models``: one training step (zero_grad, forward, cross-entropy, backward, SGD step) of the bundles' networks,
  each built by its ``monai_acs.networks`` constructor with the main operator and with its 2.5D (``conv2p5d``) and
  3D (``i3d``) twins, in the same run: the LIDC ResNet-18 FCN (``lidc_seg_net``, ACS), the DeepLesion DenseNet
  backbone (A3D), the PoC UNet (``poc_unet``, ACS) and the LiTS DeepLabV3-ResNet-101 (``lits_deeplab``, ACS); plus
  the peak resident memory of one step in a fresh subprocess. The "default layout" ratios feed the network as built
  a contiguous batch.
- ``lits``: MONAI ``sliding_window_inference`` of the LiTS network (``monai_acs.networks.lits_deeplab``) over a
  ``--lits_volume`` volume with ``--lits_roi`` windows, seconds and peak memory per operator, each in a fresh
  subprocess (the issue's setting is 128x512x512 with 64x512x512 windows; shrink it on a CPU).

``--amp True`` runs every forward under ``torch.autocast`` (float16 on CUDA, bfloat16 on CPU).

Timing: every candidate of a table runs in the same process, interleaved round by round (the order rotates each
round) after ``--warmup`` untimed rounds; a table reports the median seconds and, for each ratio, the median of the
per-round ratios, so that load drift on a shared machine cancels. ``os.getloadavg()`` is recorded before and after.
Results go to ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fire
import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from monai_acs.layers import A3DConv, ACSConv

FORMATS = {"contiguous": torch.contiguous_format, "channels_last_3d": torch.channels_last_3d}
SHORT = {"contiguous": "contig", "channels_last_3d": "cl3d"}

LAYER_SHAPES: dict[str, dict[str, Any]] = {
    "a": {"n": 2, "cin": 64, "cout": 64, "size": (48, 48, 48), "stride": 1},
    "b": {"n": 1, "cin": 32, "cout": 32, "size": (64, 128, 128), "stride": 1},
    "c": {"n": 2, "cin": 64, "cout": 128, "size": (48, 48, 48), "stride": 2},
    # not an issue-7 target: the few channels of the PoC UNet's first level, where views are 5-6 channels wide
    "d": {"n": 2, "cin": 16, "cout": 16, "size": (64, 64, 64), "stride": 1},
}
A3D_SHAPES: dict[str, dict[str, Any]] = {
    "D7": {"n": 2, "cin": 64, "cout": 64, "size": (7, 128, 128), "stride": 1},
    "D48": {"n": 2, "cin": 64, "cout": 64, "size": (48, 48, 48), "stride": 1},
}
TINY_LAYER_SHAPES: dict[str, dict[str, Any]] = {
    "a": {"n": 1, "cin": 8, "cout": 8, "size": (6, 8, 8), "stride": 1},
    "b": {"n": 1, "cin": 4, "cout": 4, "size": (4, 8, 8), "stride": 1},
    "c": {"n": 1, "cin": 8, "cout": 16, "size": (6, 8, 8), "stride": 2},
    "d": {"n": 1, "cin": 4, "cout": 4, "size": (6, 6, 6), "stride": 1},
}
TINY_A3D_SHAPES: dict[str, dict[str, Any]] = {
    "D3": {"n": 1, "cin": 8, "cout": 8, "size": (3, 8, 8), "stride": 1},
    "D6": {"n": 1, "cin": 8, "cout": 8, "size": (6, 6, 6), "stride": 1},
}
# targets of issue 16 (issue 7's were 1.15 and 0.45, now the stretch): (numerator, denominator) -> upper bound
LAYER_TARGETS = {("acs", "conv2p5d"): 1.3, ("acs", "conv3d"): 0.6}
MEMORY_TARGET = 1.05
A3D_TARGET = 1.10
MODEL_TARGETS = {"2.5D twin": 1.2, "3D twin": 0.45}
DEFAULT_FORMAT = "contiguous"  # what MONAI transforms and the bundles (without --channels_last) hand a network
LITS_TARGET = 1.2
COMPILED_LAYER_KINDS = ("acs_compiled", "acs_views_compiled", "conv2p5d_compiled")  # --compile True
SECTIONS = ("layers", "views", "breakdown", "memory", "a3d", "models", "lits")


# ---------------------------------------------------------------------------------------------------------------------
# measurement helpers
# ---------------------------------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _interleave(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int, device: torch.device) -> dict[str, list]:
    """Run every candidate once per round, rotating the order each round; returns the seconds per candidate."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            _sync(device)
            start = time.perf_counter()
            fns[name]()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def _paired_ratio(num: list[float], den: list[float]) -> float:
    """Median over rounds of num[r] / den[r]: both were measured in the same round, seconds apart."""
    return statistics.median(a / b for a, b in zip(num, den))


def _fastest(times: dict[str, list[float]], prefix: str) -> str:
    names = [n for n in times if n.split("/")[0] == prefix]
    return min(names, key=lambda n: statistics.median(times[n]))


def _fmt_spec(spec: dict[str, Any]) -> str:
    d, h, w = spec["size"]
    return f"N={spec['n']}, {spec['cin']}->{spec['cout']}, {d}x{h}x{w}, stride {spec['stride']}"


def _conv_macs(spec: dict[str, Any], taps: int) -> float:
    """Multiply-accumulates of one forward convolution with ``taps`` kernel taps per output channel (padding 1)."""
    s = spec["stride"]
    out_vox = 1
    for n in spec["size"]:
        out_vox *= (n - 1) // s + 1
    return spec["n"] * out_vox * spec["cout"] * spec["cin"] * taps


# ---------------------------------------------------------------------------------------------------------------------
# candidates
# ---------------------------------------------------------------------------------------------------------------------
def _to_format(module: nn.Module, fmt: str) -> nn.Module:
    """Put every 5-D parameter in ``fmt`` (the 2D-shaped kernels of the fusion layers stay as they are)."""
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() == 5:
                p.data = p.data.contiguous(memory_format=FORMATS[fmt])
    return module


class _ComposedViews(nn.Module):
    """ACS written the plain way: three view ``F.conv3d`` calls and a ``torch.cat``, for ``torch.compile`` to fuse
    (the "compile the naive version" candidate)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.inner = ACSConv(cin, cout, 3, stride=stride, padding=1)
        self.split, self.stride = self.inner.split, stride

    def forward(self, x: Tensor) -> Tensor:
        w, b, outs, start = self.inner.weight, self.inner.bias, [], 0
        for dim, n, pad in zip((2, 3, 4), self.split, ((0, 1, 1), (1, 0, 1), (1, 1, 0))):
            outs.append(F.conv3d(x, w[start:start + n].unsqueeze(dim), b[start:start + n], self.stride, pad))
            start += n
        return torch.cat(outs, dim=1)


def _build_layer(kind: str, spec: dict[str, Any], fmt: str, device: torch.device) -> tuple[nn.Module, Tensor]:
    cin, cout, s = spec["cin"], spec["cout"], spec["stride"]
    if kind.endswith("_compiled"):  # torch.compile (inductor) of another candidate; compiled on its first call
        base, x = _build_layer(kind[: -len("_compiled")], spec, fmt, device)
        return torch.compile(base), x
    if kind == "acs_views":
        layer: nn.Module = _ComposedViews(cin, cout, s)
    elif kind == "acs":
        layer = ACSConv(cin, cout, 3, stride=s, padding=1)
    elif kind == "acs_script":
        layer = torch.jit.script(ACSConv(cin, cout, 3, stride=s, padding=1))
    elif kind == "a3d":
        layer = A3DConv(cin, cout, 3, stride=s, padding=1, depth=spec["size"][0])
    elif kind == "a3d_keep_mix":
        layer = A3DConv(cin, cout, 3, stride=s, padding=1, depth=spec["size"][0], recompute_mix=False)
    elif kind == "conv2p5d":
        layer = nn.Conv3d(cin, cout, (1, 3, 3), stride=s, padding=(0, 1, 1))
    elif kind == "conv3d":
        layer = nn.Conv3d(cin, cout, 3, stride=s, padding=1)
    elif kind.startswith("view_"):  # one view of ACS as a standalone conv: view_<axial|coronal|sagittal>_<channels>
        _, view, channels = kind.split("_")
        kernel, pad = {"axial": ((1, 3, 3), (0, 1, 1)), "coronal": ((3, 1, 3), (1, 0, 1)),
                       "sagittal": ((3, 3, 1), (1, 1, 0))}[view]
        layer = nn.Conv3d(cin, int(channels), kernel, stride=s, padding=pad)
    else:
        raise ValueError(f"unknown layer candidate {kind!r}")
    layer = _to_format(layer.to(device), fmt)
    x = torch.randn(spec["n"], cin, *spec["size"], device=device).contiguous(memory_format=FORMATS[fmt])
    return layer, x.requires_grad_(True)


_AMP: list[bool] = [False]  # set by main(--amp): every timed forward runs under torch.autocast


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` (float16 on CUDA, bfloat16 on CPU) when ``--amp True``, else nothing."""
    if not _AMP[0]:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)


def _layer_step(layer: nn.Module, x: Tensor) -> Callable[[], Any]:
    """forward + backward: the gradients of the input and of every parameter, for a fixed output gradient."""
    inputs = [x] + [p for p in layer.parameters() if p.requires_grad]
    with torch.no_grad(), _autocast(x.device):
        grad = torch.randn_like(layer(x))  # in the layout (and dtype) of the layer's output, as the next layer's

    def step() -> Any:
        with _autocast(x.device):
            out = layer(x)
        return torch.autograd.grad(out, inputs, grad)

    return step


def _saved_bytes(fn: Callable[[], Tensor]) -> int:
    """Bytes of the unique storages that autograd saves for backward while ``fn`` runs its forward."""
    storages: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(storages.values())


def _layer_saved_bytes(layer: nn.Module, x: Tensor) -> int:
    return _saved_bytes(lambda: layer(x))


# ---------------------------------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------------------------------
def _deeplesion_builder() -> tuple[Callable[..., nn.Module] | None, str]:
    """The DeepLesion 3D backbone constructor of ``monai_acs.networks``, if that module exists yet."""
    try:
        module = importlib.import_module("monai_acs.networks.deeplesion")
    except ImportError as err:
        return None, f"skipped: monai_acs.networks.deeplesion is not importable ({err})"
    names = [n for n in getattr(module, "__all__", dir(module)) if "backbone" in n.lower() and not n.startswith("_")]
    for name in names:
        fn = getattr(module, name)
        if inspect.isfunction(fn) and "operator" in inspect.signature(fn).parameters:
            return fn, f"monai_acs.networks.deeplesion.{name}"
    return None, f"skipped: monai_acs.networks.deeplesion has no backbone(operator=...) constructor ({names})"


def _build_model(net: str, operator: str, fmt: str, spec: dict[str, Any], device: torch.device):
    if operator == "a3d_keep_mix":  # A3D layers that keep the mixed tensor instead of recomputing it
        model, x, target = _build_model(net, "a3d", fmt, spec, device)
        for module in model.modules():
            if isinstance(module, A3DConv):
                module.recompute_mix = False
        return model, x, target
    torch.manual_seed(0)
    if net == "lidc_seg":
        from monai_acs.networks import lidc_seg_net

        model = lidc_seg_net(operator)
        x = torch.randn(spec["n"], 3, *spec["size"])
        target: Tensor | None = torch.randint(0, 2, (spec["n"], *spec["size"]))
    elif net == "deeplesion":
        builder, _ = _deeplesion_builder()
        assert builder is not None
        params = inspect.signature(builder).parameters
        kwargs: dict[str, Any] = {"operator": operator}
        for key in ("depth", "slices", "num_slices", "n_slices"):
            if key in params:
                kwargs[key] = spec["size"][0]
        model = builder(**kwargs)
        in_channels = spec.get("in_channels", 1)
        x = torch.randn(spec["n"], in_channels, *spec["size"])
        target = None
    elif net == "poc":  # the proof-of-concept UNet (MONAI UNet), 6 classes, 1 channel
        from monai_acs.networks import poc_unet

        model = poc_unet(operator, depth=spec["size"][0])
        x = torch.randn(spec["n"], 1, *spec["size"])
        target = torch.randint(0, 6, (spec["n"], *spec["size"]))
    elif net == "lits_train":  # the LiTS DeepLabV3-ResNet-101, one training step on a crop
        from monai_acs.networks import lits_deeplab

        model = lits_deeplab(operator, return_dict=False)
        x = torch.randn(spec["n"], 3, *spec["size"])
        target = torch.randint(0, 3, (spec["n"], *spec["size"]))
    elif net == "lits":
        from monai_acs.networks import lits_deeplab

        return _to_format(lits_deeplab(operator).to(device).eval(), fmt), None, None
    else:
        raise ValueError(f"unknown network {net!r}")
    model = _to_format(model.to(device).train(), fmt)
    x = x.to(device).contiguous(memory_format=FORMATS[fmt])
    return model, x, (target.to(device) if target is not None else None)


def _loss(out: Any, target: Tensor | None) -> Tensor:
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return sum(_loss(o, None) for o in out if isinstance(o, (Tensor, list, tuple, dict)))
    if target is not None:
        return F.cross_entropy(out, target)
    return out.float().mean()


def _train_step(model: nn.Module, x: Tensor, target: Tensor | None) -> Callable[[], Any]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with _autocast(x.device):
            loss = _loss(model(x), target)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def _lits_infer(model: nn.Module, volume: tuple[int, ...], roi: tuple[int, ...], fmt: str, device: torch.device,
                overlap: float) -> Callable[[], Any]:
    from monai.inferers import sliding_window_inference

    x = torch.randn(1, 3, *volume, device=device)

    def predictor(patch: Tensor) -> Tensor:
        return model(patch.contiguous(memory_format=FORMATS[fmt]))["out"]

    def infer() -> Tensor:
        with torch.inference_mode():
            return sliding_window_inference(x, roi, 1, predictor, overlap=overlap)

    return infer


# ---------------------------------------------------------------------------------------------------------------------
# subprocess worker: peak memory of one step in a fresh process
# ---------------------------------------------------------------------------------------------------------------------
def _rss_status() -> dict[str, int]:
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, val = line.split(":")
                values[key] = int(val.split()[0]) * 1024
    return values


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _worker(spec_json: str) -> None:
    """Entry of the memory subprocess: build one candidate, warm up, reset the peak, run once, print JSON."""
    job = json.loads(spec_json)
    _AMP[0] = bool(job.get("amp", False))
    torch.set_num_threads(job["threads"])
    device = torch.device(job["device"])
    if job["what"] == "layer":
        layer, x = _build_layer(job["kind"], job["spec"], job["fmt"], device)
        fn = _layer_step(layer, x)
    elif job["what"] == "model":
        model, x, target = _build_model(job["net"], job["operator"], job["fmt"], job["spec"], device)
        fn = _train_step(model, x, target)
    else:
        model, _, _ = _build_model("lits", job["operator"], job["fmt"], {}, device)
        fn = _lits_infer(model, tuple(job["volume"]), tuple(job["roi"]), job["fmt"], device, job["overlap"])
    if not job.get("skip_warmup"):
        fn()
    gc.collect()
    result: dict[str, Any] = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize(device)
        result["seconds"] = time.perf_counter() - start
        result["cuda_peak_over_baseline"] = torch.cuda.max_memory_allocated(device) - base
    reset = _reset_peak()
    before = _rss_status()["VmRSS"]
    start = time.perf_counter()
    fn()
    result.setdefault("seconds", time.perf_counter() - start)
    after = _rss_status()
    result.update(baseline_rss=before, peak_rss=after["VmHWM"], peak_over_baseline=after["VmHWM"] - before,
                  hwm_reset=reset)
    print("RESULT " + json.dumps(result))


def _run_worker(job: dict[str, Any]) -> dict[str, Any]:
    job = dict(job, amp=_AMP[0])
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "_worker", json.dumps(job)],
        capture_output=True, text=True, env=env, check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"memory worker failed for {job}:\n{proc.stderr[-3000:]}")


# ---------------------------------------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------------------------------------
def _rows_from_times(section: str, case: str, times: dict[str, list[float]], extra: dict[str, dict] | None = None):
    rows = []
    for name, ts in times.items():
        row = {"section": section, "case": case, "candidate": name, "median_s": statistics.median(ts),
               "min_s": min(ts), "times_s": ts}
        row.update((extra or {}).get(name, {}))
        rows.append(row)
    return rows


def _ratio(section: str, case: str, name: str, num: str, den: str, times: dict[str, list[float]],
           target: float | None) -> dict[str, Any]:
    value = _paired_ratio(times[num], times[den])
    return {"section": section, "case": case, "name": name, "numerator": num, "denominator": den, "value": value,
            "target": target, "met": None if target is None else bool(value <= target)}


def _section_layers(shapes, formats, repeats, warmup, device, script, compiled) -> dict[str, Any]:
    rows, ratios = [], []
    for key, spec in shapes.items():
        case = f"{key}: {_fmt_spec(spec)}"
        fns: dict[str, Callable] = {}
        extra: dict[str, dict] = {}
        for kind, taps in (("acs", 9), ("conv2p5d", 9), ("conv3d", 27)):
            for fmt in formats:
                layer, x = _build_layer(kind, spec, fmt, device)
                fns[f"{kind}/{fmt}"] = _layer_step(layer, x)
                extra[f"{kind}/{fmt}"] = {"gmacs_fwd": _conv_macs(spec, taps) / 1e9}
        if script:
            layer, x = _build_layer("acs_script", spec, formats[-1], device)
            fns[f"acs_script/{formats[-1]}"] = _layer_step(layer, x)
            extra[f"acs_script/{formats[-1]}"] = {"gmacs_fwd": _conv_macs(spec, 9) / 1e9}
        for kind in COMPILED_LAYER_KINDS if compiled else ():
            layer, x = _build_layer(kind, spec, formats[-1], device)
            fns[f"{kind}/{formats[-1]}"] = _layer_step(layer, x)
            extra[f"{kind}/{formats[-1]}"] = {"gmacs_fwd": _conv_macs(spec, 9) / 1e9}
        times = _interleave(fns, repeats, warmup, device)
        for name, info in extra.items():  # fwd+bwd = 3 convolutions' worth of MACs (forward, input grad, weight grad)
            info["gflops_per_s"] = 2 * 3 * info["gmacs_fwd"] / statistics.median(times[name])
        rows += _rows_from_times("layers", case, times, extra)
        best = {kind: _fastest(times, kind) for kind in ("acs", "conv2p5d", "conv3d")}
        if DEFAULT_FORMAT in formats:  # what users run: ACS fed the contiguous input the bundles deliver
            for (num, den), target in LAYER_TARGETS.items():
                ratios.append(_ratio("layers", case, f"{num} default layout ({DEFAULT_FORMAT} input) / fastest {den}",
                                     f"{num}/{DEFAULT_FORMAT}", best[den], times, target))
        for (num, den), target in LAYER_TARGETS.items():
            ratios.append(_ratio("layers", case, f"{num} / fastest {den}", best[num], best[den], times, target))
        for fmt in formats:
            ratios.append(_ratio("layers", case, f"acs / conv2p5d, both {fmt}", f"acs/{fmt}", f"conv2p5d/{fmt}",
                                 times, None))
        if script:
            ratios.append(_ratio("layers", case, "acs scripted / acs eager", f"acs_script/{formats[-1]}",
                                 f"acs/{formats[-1]}", times, None))
        for kind in COMPILED_LAYER_KINDS if compiled else ():
            ratios.append(_ratio("layers", case, f"{kind} / fastest conv2p5d", f"{kind}/{formats[-1]}",
                                 best["conv2p5d"], times, None))
    return {"rows": rows, "ratios": ratios}


def _section_breakdown(shapes, fmt, repeats, device) -> dict[str, Any]:
    """Where the time of one forward + backward goes, by operator (``torch.profiler``; self time per step)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    rows, notes = [], []
    for key, spec in shapes.items():
        case = f"{key}: {_fmt_spec(spec)}"
        for kind in ("acs", "conv2p5d"):
            layer, x = _build_layer(kind, spec, fmt, device)
            step = _layer_step(layer, x)
            step()
            _sync(device)
            with torch.profiler.profile(activities=activities) as prof:
                for _ in range(repeats):
                    step()
                _sync(device)
            events = [e for e in prof.key_averages() if not e.key.startswith(("autograd::", "ProfilerStep"))]
            attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
            total = sum(getattr(e, attr) for e in events) / 1e3 / repeats
            for e in sorted(events, key=lambda e: -getattr(e, attr)):
                ms = getattr(e, attr) / 1e3 / repeats
                if ms < 0.01 * total:
                    break
                rows.append({"section": "breakdown", "case": case, "candidate": f"{kind}/{fmt}", "op": e.key,
                             "ms_per_step": ms, "calls_per_step": e.count / repeats})
            notes.append(f"{case}, {kind}/{fmt}: {total:.1f} ms of operator self time per step")
    return {"rows": rows, "notes": notes}


def _section_views(shapes, fmt, repeats, warmup, device) -> dict[str, Any]:
    from monai_acs.layers.functional import default_split

    rows, ratios = [], []
    for key, spec in shapes.items():
        case = f"{key}: {_fmt_spec(spec)}"
        split = default_split(spec["cout"])
        fns: dict[str, Callable] = {}
        layer, x = _build_layer("conv2p5d", spec, fmt, device)
        fns["conv2p5d (all channels)"] = _layer_step(layer, x)
        for view, channels in zip(("axial", "coronal", "sagittal"), split):
            layer, x = _build_layer(f"view_{view}_{channels}", spec, fmt, device)
            fns[f"{view} view alone ({channels} ch)"] = _layer_step(layer, x)
        for channels in sorted({16, 32, spec["cout"] // 2}):
            if channels != spec["cout"] and channels not in split:
                layer, x = _build_layer(f"view_axial_{channels}", spec, fmt, device)
                fns[f"axial 1x3x3, {channels} ch"] = _layer_step(layer, x)
        times = _interleave(fns, repeats, warmup, device)
        rows += _rows_from_times("views", case, times)
        views = [n for n in times if "view alone" in n]
        floor = [sum(times[v][r] for v in views) for r in range(repeats)]
        times["sum of the three views"] = floor
        rows += _rows_from_times("views", case, {"sum of the three views": floor})
        ratios.append(_ratio("views", case, "per-view floor: sum of views / 2.5D conv", "sum of the three views",
                             "conv2p5d (all channels)", times, None))
    return {"rows": rows, "ratios": ratios}


def _section_memory(shapes, formats, device, threads) -> dict[str, Any]:
    rows, ratios = [], []
    for key, spec in shapes.items():
        case = f"{key}: {_fmt_spec(spec)}"
        found: dict[str, dict] = {}
        for kind in ("acs", "conv2p5d", "conv3d"):
            for fmt in formats:
                layer, x = _build_layer(kind, spec, fmt, device)
                saved = _layer_saved_bytes(layer, x)
                del layer, x
                res = _run_worker({"what": "layer", "kind": kind, "spec": spec, "fmt": fmt, "device": str(device),
                                   "threads": threads})
                name = f"{kind}/{fmt}"
                found[name] = dict(res, saved_bytes=saved)
                rows.append({"section": "memory", "case": case, "candidate": name, **found[name]})
        peak_key = "cuda_peak_over_baseline" if device.type == "cuda" else "peak_over_baseline"
        if DEFAULT_FORMAT in formats:
            smallest = min(found[f"conv2p5d/{fmt}"][peak_key] for fmt in formats)
            value = found[f"acs/{DEFAULT_FORMAT}"][peak_key] / max(smallest, 1)
            ratios.append({"section": "memory", "case": case,
                           "name": f"acs default layout ({DEFAULT_FORMAT} input) / smallest conv2p5d peak",
                           "value": value, "target": MEMORY_TARGET, "met": bool(value <= MEMORY_TARGET)})
        for fmt in formats:
            for metric, label in ((peak_key, "peak"), ("saved_bytes", "saved for backward")):
                value = found[f"acs/{fmt}"][metric] / max(found[f"conv2p5d/{fmt}"][metric], 1)
                ratios.append({"section": "memory", "case": case, "name": f"acs / conv2p5d {label}, {fmt}",
                               "value": value, "target": MEMORY_TARGET, "met": bool(value <= MEMORY_TARGET)})
    return {"rows": rows, "ratios": ratios}


def _section_a3d(shapes, formats, repeats, warmup, device, compiled) -> dict[str, Any]:
    rows, ratios, notes = [], [], []
    for key, spec in shapes.items():
        case = f"{key}: {_fmt_spec(spec)}"
        fns: dict[str, Callable] = {}
        saved: dict[str, dict[str, int]] = {}
        for kind in ("a3d", "a3d_keep_mix", "conv2p5d"):
            for fmt in formats:
                layer, x = _build_layer(kind, spec, fmt, device)
                fns[f"{kind}/{fmt}"] = _layer_step(layer, x)
                saved[f"{kind}/{fmt}"] = {"saved_bytes": _layer_saved_bytes(layer, x)}
        for fmt in formats if compiled else ():
            layer, x = _build_layer("a3d_compiled", spec, fmt, device)
            fns[f"a3d_compiled/{fmt}"] = _layer_step(layer, x)
        times = _interleave(fns, repeats, warmup, device)
        rows += _rows_from_times("a3d", case, times, saved)
        notes.append(f"{case}, bytes saved for backward (MiB): " + ", ".join(
            f"{name} {_mib(v['saved_bytes'])}" for name, v in saved.items()))
        best = {kind: _fastest(times, kind) for kind in ("a3d", "a3d_keep_mix", "conv2p5d")}
        if DEFAULT_FORMAT in formats:
            ratios.append(_ratio("a3d", case, f"a3d default layout ({DEFAULT_FORMAT} input) / fastest conv2p5d",
                                 f"a3d/{DEFAULT_FORMAT}", best["conv2p5d"], times, A3D_TARGET))
        ratios.append(_ratio("a3d", case, "a3d / fastest conv2p5d", best["a3d"], best["conv2p5d"], times, A3D_TARGET))
        ratios.append(_ratio("a3d", case, "a3d recompute_mix=False / fastest conv2p5d", best["a3d_keep_mix"],
                             best["conv2p5d"], times, A3D_TARGET))
        for fmt in formats:
            ratios.append(_ratio("a3d", case, f"a3d / conv2p5d, both {fmt}", f"a3d/{fmt}", f"conv2p5d/{fmt}", times,
                                 None))
        if compiled:
            ratios.append(_ratio("a3d", case, "a3d_compiled / fastest conv2p5d", _fastest(times, "a3d_compiled"),
                                 best["conv2p5d"], times, None))
    return {"rows": rows, "ratios": ratios, "notes": notes}


def _section_models(model_specs, formats, repeats, warmup, device, threads, memory) -> dict[str, Any]:
    rows, ratios, notes = [], [], []
    for net, spec, main in model_specs:
        if net == "deeplesion":
            builder, note = _deeplesion_builder()
            notes.append(f"DeepLesion backbone: {note}")
            if builder is None:
                continue
        case = f"{net}: N={spec['n']}, {'x'.join(map(str, spec['size']))}"
        fns: dict[str, Callable] = {}
        operators = (main, "a3d_keep_mix", "conv2p5d", "i3d") if main == "a3d" else (main, "conv2p5d", "i3d")
        for operator in operators:
            for fmt in formats:
                model, x, target = _build_model(net, operator, fmt, spec, device)
                fns[f"{operator}/{fmt}"] = _train_step(model, x, target)
        times = _interleave(fns, repeats, warmup, device)
        rows += _rows_from_times("models", case, times)
        best = {op: _fastest(times, op) for op in operators}
        if DEFAULT_FORMAT in formats:  # the network as built, fed contiguous batches: what the bundles run
            for twin, key in (("2.5D twin", "conv2p5d"), ("3D twin", "i3d")):
                ratios.append(_ratio("models", case, f"{main} default layout ({DEFAULT_FORMAT} input) / fastest {twin}",
                                     f"{main}/{DEFAULT_FORMAT}", best[key], times, MODEL_TARGETS[twin]))
        ratios.append(_ratio("models", case, f"{main} / fastest 2.5D twin", best[main], best["conv2p5d"], times,
                             MODEL_TARGETS["2.5D twin"]))
        if "a3d_keep_mix" in best:
            ratios.append(_ratio("models", case, "a3d recompute_mix=False / fastest 2.5D twin", best["a3d_keep_mix"],
                                 best["conv2p5d"], times, MODEL_TARGETS["2.5D twin"]))
        ratios.append(_ratio("models", case, f"{main} / fastest 3D twin", best[main], best["i3d"], times,
                             MODEL_TARGETS["3D twin"]))
        for fmt in formats:
            ratios.append(_ratio("models", case, f"{main} / 2.5D twin, both {fmt}", f"{main}/{fmt}",
                                 f"conv2p5d/{fmt}", times, None))
        del fns
        gc.collect()
        if memory:
            for operator in operators:
                fmt = best[operator].split("/")[1]
                res = _run_worker({"what": "model", "net": net, "operator": operator, "fmt": fmt, "spec": spec,
                                   "device": str(device), "threads": threads})
                rows.append({"section": "models-memory", "case": case, "candidate": f"{operator}/{fmt}", **res})
    return {"rows": rows, "ratios": ratios, "notes": notes}


def _section_lits(volume, roi, overlap, formats, repeats, device, threads) -> dict[str, Any]:
    rows, ratios = [], []
    case = f"volume {'x'.join(map(str, volume))}, roi {'x'.join(map(str, roi))}, overlap {overlap}"
    results: dict[str, list[dict]] = {}
    for r in range(repeats):  # fresh process per run: seconds and peak memory of the same call
        for operator in ("acs", "conv2p5d", "i3d"):
            for fmt in formats:
                res = _run_worker({"what": "lits", "operator": operator, "fmt": fmt, "volume": list(volume),
                                   "roi": list(roi), "overlap": overlap, "device": str(device), "threads": threads,
                                   "skip_warmup": True})
                results.setdefault(f"{operator}/{fmt}", []).append(res)
    times = {name: [res["seconds"] for res in runs] for name, runs in results.items()}
    peak_key = "cuda_peak_over_baseline" if device.type == "cuda" else "peak_rss"
    extra = {name: {"peak_bytes": max(res[peak_key] for res in runs), "peak_metric": peak_key}
             for name, runs in results.items()}
    rows += _rows_from_times("lits", case, times, extra)
    best = {op: _fastest(times, op) for op in ("acs", "conv2p5d", "i3d")}
    ratios.append(_ratio("lits", case, "acs / fastest 2.5D (seconds)", best["acs"], best["conv2p5d"], times,
                         LITS_TARGET))
    ratios.append(_ratio("lits", case, "acs / fastest 3D (seconds)", best["acs"], best["i3d"], times, None))
    for fmt in formats:
        value = extra[f"acs/{fmt}"]["peak_bytes"] / extra[f"conv2p5d/{fmt}"]["peak_bytes"]
        ratios.append({"section": "lits", "case": case, "name": f"acs / conv2p5d peak memory, {fmt}",
                       "value": value, "target": None, "met": None})
    return {"rows": rows, "ratios": ratios}


# ---------------------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------------------
def _mib(value: Any) -> str:
    return f"{value / 2**20:.0f}" if isinstance(value, (int, float)) else ""


def _markdown(result: dict[str, Any]) -> str:
    meta = result["meta"]
    lines = [
        "# monai-acs benchmark",
        "",
        f"- command: `{meta['command']}`",
        f"- machine: {meta['machine']}; torch {meta['torch']}; device {meta['device']}; threads {meta['threads']}"
        + ("; AMP (torch.autocast)" if meta.get("amp") else ""),
        f"- load average (1, 5, 15 min) before: {meta['loadavg_before']}, after: {meta['loadavg_after']}",
        f"- repeats {meta['repeats']} (+{meta['warmup']} warm-up), medians; ratios are medians of per-round ratios",
    ]
    if meta.get("env"):
        lines.append("- environment: " + ", ".join(f"`{k}={v}`" for k, v in meta["env"].items()))
    lines.append("")
    for section, data in result["sections"].items():
        lines += [f"## {section}", ""]
        for note in data.get("notes", []):
            lines += [f"- {note}", ""]
        rows = data.get("rows", [])
        if section == "breakdown":
            lines += ["| case | candidate | operator | ms per step | calls per step |", "|---|---|---|---:|---:|"]
            for row in rows:
                lines.append(f"| {row['case']} | {row['candidate']} | {row['op']} | {row['ms_per_step']:.1f} | "
                             f"{row['calls_per_step']:g} |")
        elif section == "memory":
            lines += ["| case | candidate | saved for backward (MiB) | peak over baseline (MiB) | peak RSS (MiB) |",
                      "|---|---|---:|---:|---:|"]
            for row in rows:
                peak = row.get("cuda_peak_over_baseline", row.get("peak_over_baseline"))
                lines.append(f"| {row['case']} | {row['candidate']} | {_mib(row['saved_bytes'])} | {_mib(peak)} | "
                             f"{_mib(row.get('peak_rss'))} |")
        else:
            timed = [r for r in rows if r["section"] != "models-memory"]
            if timed:
                lines += ["| case | candidate | median (s) | min (s) | GFLOP/s | peak (MiB) |",
                          "|---|---|---:|---:|---:|---:|"]
                for row in timed:
                    gf = f"{row['gflops_per_s']:.1f}" if "gflops_per_s" in row else ""
                    lines.append(f"| {row['case']} | {row['candidate']} | {row['median_s']:.4f} | {row['min_s']:.4f} "
                                 f"| {gf} | {_mib(row.get('peak_bytes'))} |")
            mem = [r for r in rows if r["section"] == "models-memory"]
            if mem:
                header = "| case | candidate (one train step, fresh process) | peak over baseline (MiB) | "
                header += "peak RSS (MiB) |"
                lines += ["", header, "|---|---|---:|---:|"]
                for row in mem:
                    peak = row.get("cuda_peak_over_baseline", row.get("peak_over_baseline"))
                    lines.append(f"| {row['case']} | {row['candidate']} | {_mib(peak)} | {_mib(row.get('peak_rss'))} |")
        if data.get("ratios"):
            lines += ["", "| case | ratio | value | target | met |", "|---|---|---:|---:|---|"]
            for r in data["ratios"]:
                target = f"<= {r['target']}" if r.get("target") is not None else ""
                met = "" if r.get("met") is None else ("yes" if r["met"] else "no")
                lines.append(f"| {r['case']} | {r['name']} | {r['value']:.3f} | {target} | {met} |")
        lines.append("")
    return "\n".join(lines)


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` for the duration of the block, then the caller's count again."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def main(
    device: str = "cpu",
    repeats: int = 5,
    warmup: int = 1,
    threads: int = 2,
    out: str = "benchmark_results",
    sections: str | tuple = ",".join(SECTIONS),
    shapes: str | tuple = "a,b,c",
    formats: str | tuple = "contiguous,channels_last_3d",
    tiny: bool = False,
    script: bool = True,
    compile: bool = False,
    model_input: tuple[int, int, int] | int = (48, 48, 48),
    model_batch: int = 1,
    deeplesion_input: tuple[int, int, int] = (7, 256, 256),
    poc_input: tuple[int, int, int] = (48, 48, 48),
    poc_batch: int = 2,
    lits_train_input: tuple[int, int, int] = (16, 96, 96),
    lits_volume: tuple[int, int, int] = (128, 512, 512),
    lits_roi: tuple[int, int, int] = (64, 512, 512),
    lits_overlap: float = 0.25,
    lits_repeats: int = 1,
    models: str | tuple = "lidc_seg,deeplesion,poc,lits_train",
    amp: bool = False,
    quick: bool = False,
) -> str:
    """Run the benchmark and write ``<out>.json`` and ``<out>.md``.

    Args:
        device: ``"cpu"`` or ``"cuda"``. Default ``"cpu"``.
        repeats: timed rounds per table. Default 5.
        warmup: untimed rounds first. Default 1.
        threads: ``torch.set_num_threads`` (CPU). Default 2.
        out: output path without extension. Default ``benchmark_results``.
        sections: comma-separated subset of layers, views, breakdown (profiler: time by operator), memory, a3d,
            models, lits.
        shapes: comma-separated layer shapes among a, b, c (issue 7's) and d (16 channels, off by default).
        formats: memory formats to try, among contiguous and channels_last_3d.
        tiny: tiny shapes everywhere (checks that the script runs; the timings mean nothing).
        script: also time the TorchScript-compiled ACSConv in the layers section. Default True.
        compile: also time ``torch.compile`` (inductor) of ACSConv, of the plain three-conv ACS, of the 2.5D conv
            (layers section) and of A3DConv (a3d section). Needs a C++ compiler on CPU. Default False.
        model_input: (D, H, W) of the LIDC network input, 3 channels. Default 48^3.
        model_batch: batch size of the LIDC and DeepLesion train steps (LiTS: 2, as in its bundle). Default 1.
        deeplesion_input: (D, H, W) of the DeepLesion backbone input, 1 channel. Default 7x256x256.
        poc_input: (D, H, W) of the PoC UNet input, 1 channel (the bundle's 48^3). Default 48^3.
        poc_batch: batch size of the PoC UNet train step (the bundle's 2). Default 2.
        lits_train_input: (D, H, W) of the LiTS DeepLabV3-ResNet-101 train step, 3 channels (the bundle trains on
            64x224x224 crops; a CPU takes minutes per step there). Default 16x96x96.
        lits_volume: (D, H, W) of the LiTS volume. Default 128x512x512 (the issue's; heavy on a CPU).
        lits_roi: sliding-window ROI. Default 64x512x512.
        lits_overlap: sliding-window overlap. Default 0.25 (MONAI's).
        lits_repeats: fresh-process runs per LiTS candidate. Default 1.
        models: networks of the models section, among lidc_seg (LIDC ResNet-18 FCN), deeplesion (DenseNet
            backbone, A3D), poc (PoC UNet) and lits_train (LiTS DeepLab). Default all four.
        amp: run every timed forward under ``torch.autocast`` (float16 on CUDA, bfloat16 on CPU). Default False.
        quick: the "what users run" run in minutes on a CPU: sections layers, memory, a3d and models at smaller
            model inputs (LIDC 24^3, DeepLesion 7x96x96, PoC 32^3, LiTS 8x64x64), without the scripted layer and the
            models' peak-memory subprocesses, 3 rounds unless ``repeats`` is given. Explicit section, size and
            ``script`` arguments are overridden. Default False.

    Returns:
        The Markdown report (also printed by fire).
    """
    dev = torch.device(device)
    if quick:
        sections = "layers,memory,a3d,models"
        model_input, deeplesion_input, poc_input, lits_train_input = (24, 24, 24), (7, 96, 96), (32, 32, 32), (
            8, 64, 64)
        script = False
        if repeats == 5:
            repeats = 3
    _AMP[0] = bool(amp)

    def as_list(v: str | tuple) -> list[str]:
        return [s for s in (v.split(",") if isinstance(v, str) else v) if s]

    wanted = as_list(sections)
    unknown = sorted(set(wanted) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown sections {unknown}; choose from {SECTIONS}")
    fmts = as_list(formats)
    unknown_shapes = sorted(set(as_list(shapes)) - set(LAYER_SHAPES))
    if unknown_shapes:
        raise ValueError(f"unknown layer shapes {unknown_shapes}; choose from {sorted(LAYER_SHAPES)}")
    layer_shapes = {k: v for k, v in (TINY_LAYER_SHAPES if tiny else LAYER_SHAPES).items() if k in as_list(shapes)}
    a3d_shapes = TINY_A3D_SHAPES if tiny else A3D_SHAPES
    size = (model_input,) * 3 if isinstance(model_input, int) else tuple(model_input)
    model_specs = [
        ("lidc_seg", {"n": model_batch, "size": (8, 8, 8) if tiny else size}, "acs"),
        ("deeplesion", {"n": model_batch, "size": (3, 32, 32) if tiny else tuple(deeplesion_input)}, "a3d"),
        ("poc", {"n": 1 if tiny else poc_batch, "size": (16, 16, 16) if tiny else tuple(poc_input)}, "acs"),
        # batch 2 as in the bundle: DeepLab's image-pooling branch cannot train batch norm on one sample
        ("lits_train", {"n": 2, "size": (8, 16, 16) if tiny else tuple(lits_train_input)}, "acs"),
    ]
    unknown_models = sorted(set(as_list(models)) - {spec[0] for spec in model_specs})
    if unknown_models:
        raise ValueError(f"unknown models {unknown_models}; choose from {[spec[0] for spec in model_specs]}")
    model_specs = [spec for spec in model_specs if spec[0] in as_list(models)]
    if tiny:
        lits_volume, lits_roi = (8, 32, 32), (8, 32, 32)
    meta = {
        "command": " ".join(["python", "scripts/benchmark.py", *sys.argv[1:]]),
        "machine": _machine(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "threads": threads,
        "amp": bool(amp),
        "repeats": repeats,
        "warmup": warmup,
        "tiny": tiny,
        "loadavg_before": [round(v, 2) for v in os.getloadavg()],
        # allocator and threading settings change CPU timings (docs/benchmarks.md): recorded when set
        "env": {k: v for k, v in sorted(os.environ.items())
                if k.startswith(("MALLOC_", "OMP_", "MKL_", "KMP_", "DNNL_", "ONEDNN_")) or k == "LD_PRELOAD"},
    }
    result: dict[str, Any] = {"meta": meta, "sections": {}}
    started = time.time()
    with _torch_threads(threads):  # restored afterwards: main() also runs inside other processes (tests)
        if "layers" in wanted:
            result["sections"]["layers"] = _section_layers(layer_shapes, fmts, repeats, warmup, dev, script,
                                                              compile)
        if "views" in wanted:
            result["sections"]["views"] = _section_views(layer_shapes, fmts[-1], repeats, warmup, dev)
        if "breakdown" in wanted:
            result["sections"]["breakdown"] = _section_breakdown(layer_shapes, fmts[-1], repeats, dev)
        if "memory" in wanted:
            result["sections"]["memory"] = _section_memory(layer_shapes, fmts, dev, threads)
        if "a3d" in wanted:
            result["sections"]["a3d"] = _section_a3d(a3d_shapes, fmts, repeats, warmup, dev, compile)
        if "models" in wanted:
            result["sections"]["models"] = _section_models(model_specs, fmts, repeats, warmup, dev, threads,
                                                           not quick)
        if "lits" in wanted:
            result["sections"]["lits"] = _section_lits(tuple(lits_volume), tuple(lits_roi), lits_overlap, fmts,
                                                       lits_repeats, dev, threads)
    _AMP[0] = False  # main() also runs inside other processes (tests)
    meta["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
    meta["wall_s"] = round(time.time() - started, 1)
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.with_suffix(".json").write_text(json.dumps(result, indent=1))
    report = _markdown(result)
    out_path.with_suffix(".md").write_text(report)
    return report


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "_worker":
        _worker(sys.argv[2])
    else:
        fire.Fire(main)
