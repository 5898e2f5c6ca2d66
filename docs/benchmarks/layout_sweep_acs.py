"""Layout sweep of one ACS layer (docs/operators.md, the layout table; issue 16), CPU, 2 threads.

For each shape (N = 2, C -> C, 3 x 3 kernel, stride 1): forward + backward (input and parameter gradients) with a
contiguous or channels-last input, computed in the layout rule's channels-last ("compute-cl") or in the caller's
layout ("compute-contig": the rule switched off). Median ms. Output of session 7's run: layout_sweep_acs.txt.

Usage, from the repository root: python docs/benchmarks/layout_sweep_acs.py
"""
import time, sys, json, torch
torch.set_num_threads(2)
from monai_acs.layers import ACSConv
from monai_acs.layers import functional as Fn
CL=torch.channels_last_3d
orig=Fn._prefers_channels_last
def bench(fn, budget=1.0):
    fn(); t0=time.perf_counter(); fn(); one=time.perf_counter()-t0
    reps=max(3,min(15,int(budget/max(one,1e-4))))
    ts=[]
    for _ in range(reps):
        t=time.perf_counter(); fn(); ts.append(time.perf_counter()-t)
    ts.sort(); return ts[len(ts)//2]
rows=[]
shapes=[]
for C in (32,64,128,256,512):
    for sz in ((8,8,8),(8,16,16),(16,16,16),(8,32,32),(24,24,24),(32,32,32),(8,64,64),(48,48,48)):
        if C*sz[0]*sz[1]*sz[2] > 64*48**3: continue
        shapes.append((C,sz))
for C,sz in shapes:
    x=torch.randn(2,C,*sz)
    layer=ACSConv(C,C,3,padding=1)
    r={}
    for inf in ('contig','cl'):
        xi=(x if inf=='contig' else x.contiguous(memory_format=CL)).requires_grad_()
        ins=[xi]+list(layer.parameters())
        for rule in ('cl','contig'):
            Fn._prefers_channels_last = orig if rule=='cl' else (lambda t: False)
            with torch.no_grad(): g=torch.randn_like(layer(xi))
            r[f'in-{inf}/compute-{rule}']=bench(lambda: torch.autograd.grad(layer(xi),ins,g))
    Fn._prefers_channels_last=orig
    rows.append({'C':C,'size':sz,**r})
    best=min(r,key=r.get)
    print(C,sz,{k:round(v*1e3,1) for k,v in r.items()},'best',best,flush=True)
