"""Per-view profiler breakdown of one ACS forward + backward (docs/benchmarks.md, issue 16), CPU, 2 threads.

Usage, from the repository root: python docs/benchmarks/profile_views.py c contiguous   (shape a, b or c; contiguous or cl)


Wraps the fused node's per-view helpers in torch.profiler.record_function labels (monkeypatched for this run only)."""
import sys, types, statistics, collections, time
import torch, torch.nn.functional as TF
sys.path.insert(0, '.')
torch.set_num_threads(2)
import monai_acs.layers.functional as LF
from monai_acs.layers import ACSConv
VIEW = {2: "axial", 3: "coronal", 4: "sagittal"}
def view_of(w):
    for d in (2, 3, 4):
        if w.shape[d] == 1: return VIEW[d]
    return "?"
def wrap(fn, label, wpos):
    def inner(*a, **k):
        with torch.profiler.record_function(f"{label} {view_of(a[wpos])}"):
            return fn(*a, **k)
    return inner
LF._view_kernel_grad = wrap(LF._view_kernel_grad, "bwd kernel grad (3D)", 2)
LF._folded_kernel_grad = wrap(LF._folded_kernel_grad, "bwd kernel grad (folded 2D)", 2)
LF._view_input_grad = wrap(LF._view_input_grad, "bwd input grad", 4)
conv3d = TF.conv3d
F2 = types.SimpleNamespace(**{k: getattr(TF, k) for k in dir(TF) if not k.startswith("__")})
F2.conv3d = wrap(conv3d, "fwd conv", 1)
LF.F = F2
shape = sys.argv[1] if len(sys.argv) > 1 else "c"
spec = {"a": (2, 64, 64, 48, 1), "b": (1, 32, 32, (64, 128, 128), 1), "c": (2, 64, 128, 48, 2)}[shape]
n, cin, cout, size, s = spec
size = (size,) * 3 if isinstance(size, int) else size
fmt = sys.argv[2] if len(sys.argv) > 2 else "contiguous"
layer = ACSConv(cin, cout, 3, stride=s, padding=1)
x = torch.randn(n, cin, *size)
if fmt == "cl": x = x.contiguous(memory_format=torch.channels_last_3d)
x.requires_grad_(True)
grad = torch.randn_like(layer(x))
def step():
    out = layer(x); torch.autograd.grad(out, [x, *layer.parameters()], grad)
step()
R = 3
with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
    for _ in range(R): step()
rows = [(e.key, e.cpu_time_total / 1e3 / R, e.count / R) for e in prof.key_averages() if e.key.startswith(("fwd ", "bwd "))]
tot = sum(e.self_cpu_time_total for e in prof.key_averages()) / 1e3 / R
print(f"| shape {shape}, {fmt} input | ms per step | calls |")
print("|---|---:|---:|")
for k, ms, c in sorted(rows):
    print(f"| {k} | {ms:.1f} | {c:g} |")
covered = sum(ms for _, ms, _ in rows)
print(f"| everything else (copies of the input / output-gradient slices, output assembly, bias, autograd) | {tot - covered:.1f} | |")
print(f"| total operator time | {tot:.1f} | |")
# the 2.5D conv in its fastest layout, same profiler
conv = torch.nn.Conv3d(cin, cout, (1, 3, 3), stride=s, padding=(0, 1, 1))
conv.weight.data = conv.weight.data.contiguous(memory_format=torch.channels_last_3d)
xl = x.detach().contiguous(memory_format=torch.channels_last_3d).requires_grad_(True)
g2 = torch.randn_like(conv(xl))
def step2():
    out = conv(xl); torch.autograd.grad(out, [xl, *conv.parameters()], g2)
step2()
with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
    for _ in range(R): step2()
ka = {e.key: e for e in prof.key_averages()}
tot2 = sum(e.self_cpu_time_total for e in prof.key_averages()) / 1e3 / R
for key in ("aten::mkldnn_convolution", "aten::convolution_backward"):
    if key in ka: print(f"| 2.5D conv (channels-last) {key} | {ka[key].cpu_time_total/1e3/R:.1f} | {ka[key].count/R:g} |")
print(f"| 2.5D conv total operator time | {tot2:.1f} | |")
