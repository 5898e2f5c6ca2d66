"""Instance norm of a channels-last CPU float32 tensor, forward + backward on 2 threads, medians of 31 (ms):
F.group_norm with one group per channel ('gn', the layer before session 8), F.batch_norm per sample on the
(D*H*W, C) rows ('bn') and F.instance_norm on a contiguous copy, copied back ('in+copy').

    python docs/benchmarks/instance_norm_cl.py
"""
import time, torch, torch.nn.functional as F
torch.set_num_threads(2)
CL=torch.channels_last_3d
def bench(fn, reps=31):
    fn(); fn(); ts=[]
    for _ in range(reps):
        t=time.perf_counter(); fn(); ts.append(time.perf_counter()-t)
    ts.sort(); return round(ts[len(ts)//2]*1e3,3)
def bn_cl(t, w, b, eps=1e-5):
    n, c = t.shape[:2]
    flat = t.permute(0, 2, 3, 4, 1).reshape(n, -1, c)
    outs = [F.batch_norm(flat[i], None, None, w, b, True, 0.0, eps) for i in range(n)]
    out = torch.stack(outs, 0)
    return out.view(n, *t.shape[2:], c).permute(0, 4, 1, 2, 3)
def in_copy(t, w, b):
    return F.instance_norm(t.contiguous(), None, None, w, b, True, 0.1, 1e-5).contiguous(memory_format=CL)
for shp in [(2,6,32,32,32),(2,6,48,48,48),(2,8,32,32,32),(2,12,32,32,32),(2,16,32,32,32),(2,16,16,16,16),(2,24,16,16,16),(2,32,16,16,16),(2,64,8,8,8)]:
    xcl=torch.randn(shp).contiguous(memory_format=CL)
    w=torch.randn(shp[1],requires_grad=True); b=torch.randn(shp[1],requires_grad=True)
    gcl=torch.randn(shp).contiguous(memory_format=CL)
    def step(f):
        xx=xcl.detach().requires_grad_(); y=f(xx); y.backward(gcl)
    r={'gn':bench(lambda: step(lambda t: F.group_norm(t, t.shape[1], w, b, 1e-5))),
       'bn':bench(lambda: step(lambda t: bn_cl(t,w,b))),
       'in+copy':bench(lambda: step(lambda t: in_copy(t,w,b)))}
    print(shp, r, flush=True)
