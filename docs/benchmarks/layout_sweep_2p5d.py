"""Layout sweep of one 2.5D layer (``Conv2p5d``; docs/operators.md, the layout table; issue 16), CPU, 2 threads.

For each (C, size, stride): forward + backward with a contiguous or channels-last input, computed in channels-last
("cl", the multi-view layers' rule) or in the caller's layout ("keep"). Median ms. Session 7's run
(layout_sweep_2p5d.txt) was made before ``Conv2p5d`` kept the caller's layout, with the layout rule's switch choosing
between the two inside the layer; this form re-lays the input out in the timed step instead (the same copy).

Usage, from the repository root: python docs/benchmarks/layout_sweep_2p5d.py
"""
import time, sys, json, torch
torch.set_num_threads(2)
from monai_acs.layers import Conv2p5d
CL=torch.channels_last_3d
def bench(fn, budget=1.0):
    fn(); t0=time.perf_counter(); fn(); one=time.perf_counter()-t0
    reps=max(3,min(15,int(budget/max(one,1e-4))))
    ts=[]
    for _ in range(reps):
        t=time.perf_counter(); fn(); ts.append(time.perf_counter()-t)
    ts.sort(); return ts[len(ts)//2]
shapes=[(32,(8,16,16),1),(32,(24,24,24),1),(32,(48,48,48),1),(64,(7,96,96),1),(64,(16,16,16),1),(64,(32,32,32),1),(64,(48,48,48),1),(64,(48,48,48),2),(128,(7,24,24),1),(128,(24,24,24),1),(256,(7,12,12),1),(256,(16,16,16),1),(512,(8,8,8),1),(32,(64,128,128),1)]
for C,sz,s in shapes:
    x=torch.randn(2 if C>32 or sz[0]<64 else 1,C,*sz)
    layer=Conv2p5d(C,C,3,padding=1,stride=s)
    r={}
    for inf in ('contig','cl'):
        xi=(x if inf=='contig' else x.contiguous(memory_format=CL)).requires_grad_()
        ins=[xi]+list(layer.parameters())
        for rule in ('cl','keep'):
            # "cl": the input laid out channels-last inside the timed step (what the rule did before Conv2p5d kept
            # the caller's layout); "keep": the caller's layout
            run = (lambda t: layer(t.contiguous(memory_format=CL))) if rule=='cl' else layer
            with torch.no_grad(): g=torch.randn_like(run(xi))
            r[f'in-{inf}/{rule}']=bench(lambda: torch.autograd.grad(run(xi),ins,g))
    print(C,sz,s,{k:round(v*1e3,1) for k,v in r.items()},flush=True)
