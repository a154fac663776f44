"""Short probes of learned 2:4 on MiniLM-L6 (issue 12): the held-out teacher cosine of the
argmax (final) mask every few steps of benchmarks/nm_minilm.py's distillation, for one setting of
the logit learning rate, prior strength (alpha), hard / soft sampling and the tau / kappa
schedules (linear over --total steps through sp.set_progress). "changed" is the fraction of 2:4
groups whose argmax pattern is not the magnitude prior's.

    python benchmarks/nm_minilm_probe.py --steps 60 --every 20 --total 300 --lr 5e-4
"""
import argparse
import os
import pathlib
import random
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import nm_minilm as B
import sparseprune as sp
from sparseprune.runner import minilm
from sparseprune.runner.data import text

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=40)
p.add_argument("--every", type=int, default=10)
p.add_argument("--batch", type=int, default=16)
p.add_argument("--heldout", type=int, default=128)
p.add_argument("--lr", type=float, default=5e-3)
p.add_argument("--alpha", type=float, default=3.0)
p.add_argument("--hard", type=int, default=1)
p.add_argument("--kappa", type=str, default="100,500")
p.add_argument("--tau", type=str, default="4,0.05")
p.add_argument("--total", type=int, default=0, help="schedule length (0: steps)")
p.add_argument("--fp32", action="store_true")
p.add_argument("--threads", type=int, default=1)
p.add_argument("--tag", default="")
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
teacher, tok = minilm.load()
train, held = text.split(text.sentences())
held = held[:a.heldout]
hb = list(minilm.batches(tok, held, 64))
with torch.no_grad():
    ht = [minilm.embed(teacher, b) for b in hb]

@torch.no_grad()
def cos(m):
    m.eval()
    c = sum(float((minilm.embed(m, b) * t).sum()) for b, t in zip(hb, ht)) / len(held)
    m.train()
    return c

pair = lambda s: tuple(float(x) for x in s.split(",")) if "," in s else float(s)
kw = dict(hard=bool(a.hard), prior_strength=a.alpha, logit_scale=pair(a.kappa), temperature=pair(a.tau))
if not a.fp32:
    kw["scores_dtype"] = torch.bfloat16
torch.manual_seed(0)
model = B.learned_2to4(B.frozen_copy(teacher), **kw)
B.LOGIT_LR = a.lr
opt = B.optimizer(model)
from sparseprune.select import top_n_of_m
prior = {n: top_n_of_m(l.weight.detach().abs(), 2, 4) for n, l in sp.masked_layers(model)}
def changed():
    differ = groups = 0
    for n, l in sp.masked_layers(model):
        f = l.method.final_mask(l)
        differ += int((f != prior[n]).view(-1, 4).any(dim=1).sum())
        groups += f.numel() // 4
    return differ / groups
rng = random.Random(0)
total = a.total or a.steps
log = []
t0 = time.perf_counter()
def rec(step, loss):
    r = dict(step=step, cos=cos(model), changed=changed(), loss=loss, s=time.perf_counter() - t0, load=os.getloadavg()[0])
    log.append(r); print(a.tag, r, flush=True)
rec(0, None)
losses = []
for step in range(a.steps):
    sp.set_progress(model, min(step / total, 1.0))
    batch = minilm.encode(tok, rng.sample(train, a.batch))
    with torch.no_grad():
        target = minilm.embed(teacher, batch)
    loss = minilm.distillation_loss(model, target, batch)
    opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    losses.append(float(loss.detach()))
    if (step + 1) % a.every == 0:
        rec(step + 1, sum(losses[-a.every:]) / a.every)
