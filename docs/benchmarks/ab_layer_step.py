"""One process's median ACS layer step (forward + backward, as in scripts/benchmark.py's layer section) for shapes
a, b, c of docs/benchmarks.md, contiguous and channels-last input, 5 rounds after a warm-up. For a paired A/B of two
versions of monai_acs/layers/functional.py, run it alternately with each version in place.

Usage, from the repository root: python docs/benchmarks/ab_layer_step.py b a
"""
import time, sys, torch
torch.set_num_threads(2)
from monai_acs.layers import ACSConv
CL=torch.channels_last_3d
shapes={'a':(2,64,64,48,48,48,1),'b':(1,32,32,64,128,128,1),'c':(2,64,128,48,48,48,2)}
out=[]
for name in sys.argv[1:]:
    N,Ci,Co,D,H,W,s=shapes[name]
    for fmt in ('contig','cl'):
        x=torch.randn(N,Ci,D,H,W)
        if fmt=='cl': x=x.contiguous(memory_format=CL)
        x.requires_grad_()
        acs=ACSConv(Ci,Co,3,padding=1,stride=s)
        ins=[x]+list(acs.parameters())
        with torch.no_grad(): g=torch.randn_like(acs(x))
        st=lambda: torch.autograd.grad(acs(x),ins,g)
        st(); ts=[]
        for _ in range(5):
            t=time.perf_counter(); st(); ts.append(time.perf_counter()-t)
        out.append(f'{name}/{fmt} {sorted(ts)[2]:.3f}')
print(' | '.join(out))
