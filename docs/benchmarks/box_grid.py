"""The grid behind the box rule of split (ACS) layers (issue 16, session 8): forward + backward of one layer on 2 CPU
threads, four ways: the fused views node ('fast'), the per-view autograd path ('generic'), one F.conv3d with the
block-sparse box kernel ('box', what `_box_conv_views` computes) and the 2.5D conv ('2p5d'). Medians of 11, ms.

    python docs/benchmarks/box_grid.py > docs/benchmarks/box_grid.txt   # about 4 minutes; also writes box_grid.json
"""
import sys, time, torch, torch.nn.functional as F, itertools, json
torch.set_num_threads(2)
from monai_acs.layers.acs import ACSConv
from monai_acs.layers import functional as Fn

Fn._BOX_MAX_MACS = 0  # 'fast' and 'generic' are the views paths: the layer's own box rule is off
CL=torch.channels_last_3d
def bench(fn, reps=11):
    fn(); fn(); ts=[]
    for _ in range(reps):
        t=time.perf_counter(); fn(); ts.append(time.perf_counter()-t)
    ts.sort(); return ts[len(ts)//2]*1e3
def box_weight(w, split):
    a,c,s=split
    wa=F.pad(w[:a].unsqueeze(2),(0,0,0,0,1,1)); wc=F.pad(w[a:a+c].unsqueeze(3),(0,0,1,1)); ws=F.pad(w[a+c:].unsqueeze(4),(1,1))
    return torch.cat([wa,wc,ws],0)
rows=[]
for n,ci,co,S,st in itertools.product([2],[1,8,16,32,64,128],[8,16,32,64,128],[4,8,16,32],[1,2]):
    if ci>co*2 or (ci==1 and co>16): continue
    if n*max(ci,co)*S**3 > 2*128*32**3: continue
    m=ACSConv(ci,co,3,stride=st,padding=1)
    x=torch.randn(n,ci,S,S,S)
    xin = x if ci==1 else x.contiguous(memory_format=CL)
    def step(f):
        xx=xin.detach().requires_grad_(); y=f(xx); y.backward(torch.ones_like(y))
    r={}
    r['fast']=bench(lambda: step(m))
    orig=Fn._fast_views_eligible; Fn._fast_views_eligible=lambda *a: False
    r['generic']=bench(lambda: step(m)); Fn._fast_views_eligible=orig
    split=m.split if hasattr(m,'split') else Fn.default_split(co)
    def boxf(t):
        wb=box_weight(m.weight, split)
        return F.conv3d(t if t.shape[1]==1 else t, wb, m.bias, st, 1)
    r['box']=bench(lambda: step(boxf))
    w3=m.weight.detach().unsqueeze(2).requires_grad_()
    r['2p5d']=bench(lambda: step(lambda t: F.conv3d(t,w3,None,st,(0,1,1))))
    # check box equals
    xx=xin.detach(); err=(m(xx)-boxf(xx)).abs().max().item()
    rows.append(dict(n=n,ci=ci,co=co,S=S,st=st,err=err,**r))
    print(n,ci,co,S,st,{k:round(v,2) for k,v in r.items()}, 'best', min(r,key=lambda k: r[k] if k!='2p5d' else 1e9), f'err {err:.1e}', flush=True)
json.dump(rows, open('docs/benchmarks/box_grid.json', 'w'))
