"""The speed users get (issue 18; docs/PERFORMANCE.md T11-T13, and T1/T4/T6 on the public path).

`make bench` runs the raw-op figures (run.py, overhead.py) with the allocator tunables of the
Makefile; users run the layers and ``sp.functional`` under autograd with glibc's default
allocator. run.py therefore runs this file in a child process whose environment drops
GLIBC_TUNABLES, so that every figure here is the user's path, judged against the bandwidth floor
measured in that same process:

  mask fwd+bwd     ``sp.functional.<method>_weight(weight, scores)`` then ``.backward(grad)`` on a
                   4096x4096 layer (scores require grad, the weight is frozen): ASLP (T1/T13) and
                   Supermask + DWR (T4), / the floor of docs/PERFORMANCE.md (28 B per weight);
  selection        Edge-Popup's threshold alone (``sparseprune::topk_threshold``, the selection
                   masked_weight runs) vs ``torch.kthvalue`` of |scores| (T6), and / the floor of
                   one read of the scores (4 B per weight);
  training steps   forward + backward + SGD step of a whole model, ASLP-masked (``sp.convert``,
                   scores trained) / the same model dense (weights trained): LeNet-300-100 batch 256,
                   Conv4 batch 64, MiniLM-L6 batch 8 x 128 tokens (encoder linears masked; skipped
                   without its weights), one 4096x4096 linear at batch 256 (T11, T12). The median of
                   interleaved runs (dense and masked alternate, so drift hits both alike).

Run alone: ``python benchmarks/user_path.py [--rounds R] [--quick]`` prints JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
import warnings

import torch
import torch.nn.functional as F

import common
import sparseprune as sp

SIZE = 4096
STEP_TARGETS = {"LeNet-300-100 b256": 1.05, "Conv4 b64": 1.05, "MiniLM-L6 b8x128": 1.05,
                "linear": 1.15}  # T11, T11, T11, T12


def mask_fwd_bwd(method: str, rescale=None, size: int = SIZE):
    """The public functional path: forward under autograd, then backward of a given gradient."""
    weight = torch.randn(size, size)
    scores = torch.randn(size, size, requires_grad=True)
    grad = torch.randn(size, size)
    fn = {"aslp": sp.functional.aslp_weight, "supermask": sp.functional.supermask_weight}[method]
    gen = torch.Generator().manual_seed(0)

    def step():
        fn(weight, scores, rescale=rescale, generator=gen).backward(grad)
        scores.grad = None
    return step


def selection(size: int = SIZE, density: float = 0.5):
    """(Edge-Popup's selection alone, torch.kthvalue of |scores|), checked to agree first."""
    scores = torch.randn(size, size)
    k = round(density * scores.numel())
    threshold = torch.ops.sparseprune.topk_threshold(scores, density)
    assert threshold.item() == scores.abs().flatten().kthvalue(scores.numel() - k + 1).values.item()
    pruned = scores.numel() - k
    return (lambda: torch.ops.sparseprune.topk_threshold(scores, density),
            lambda: torch.kthvalue(scores.abs().flatten(), pruned))


def _train_step(model, params, loss_fn):
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model).backward()
        opt.step()
    return step


def step_pair(model: torch.nn.Module, loss_fn, **convert):
    """(dense step, ASLP-masked step) of the same model: dense trains the weights, masked trains
    the scores of every converted layer (and whatever else stays trainable)."""
    torch.manual_seed(0)
    with warnings.catch_warnings():  # MiniLM's embeddings stay dense, as intended here
        warnings.simplefilter("ignore", UserWarning)
        masked = sp.convert(copy.deepcopy(model), "aslp", **convert)
    dense = _train_step(model, [p for p in model.parameters() if p.requires_grad], loss_fn)
    fused = _train_step(masked, [p for p in masked.parameters() if p.requires_grad], loss_fn)
    return dense, fused


def image_loss(x, y):
    return lambda m: F.cross_entropy(m(x), y)


def steps(quick: bool, size: int = SIZE) -> dict:
    from sparseprune.runner.models import build_model
    pairs = {}
    torch.manual_seed(0)
    pairs["LeNet-300-100 b256"] = step_pair(
        build_model("lenet300", (1, 28, 28), 10),
        image_loss(torch.randn(256, 1, 28, 28), torch.randint(0, 10, (256,))))
    pairs["Conv4 b64"] = step_pair(
        build_model("conv4", (3, 32, 32), 10),
        image_loss(torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))))
    if not quick:
        minilm = minilm_pair()
        if minilm is not None:
            pairs["MiniLM-L6 b8x128"] = minilm
    x = torch.randn(256, size)
    pairs[f"linear {size}² b256"] = step_pair(torch.nn.Linear(size, size),
                                           lambda m: m(x).square().mean())
    return pairs


def minilm_pair():
    from sparseprune.runner import minilm
    if minilm.available() is not None:
        return None
    model, _ = minilm.load()
    model = minilm.student(model)
    ids = torch.randint(1000, 20000, (8, 128), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    return step_pair(model, lambda m: m(**batch).last_hidden_state.square().mean(),
                     include=minilm.ENCODER)


def step_times(dense, masked, rounds: int, seconds: float = 3.0) -> dict:
    """Interleaved medians of the two steps after three warm-up steps each (optimizer state,
    allocator, oneDNN primitives); fast steps get more rounds, up to about `seconds` in all."""
    for _ in range(3):
        dense()
        masked()
    t0 = time.perf_counter()
    dense()
    masked()
    per_round = time.perf_counter() - t0
    rounds = max(rounds, min(50, int(seconds / max(per_round, 1e-6))))
    times = common.interleaved_medians({"dense": dense, "masked": masked}, rounds=rounds)
    times["rounds"] = rounds
    return times


def run(rounds: int = 7, quick: bool = False, size: int = SIZE) -> dict:
    bytes_per_second = common.bandwidth()
    floor = common.mask_floor_seconds(size * size, bytes_per_second)
    read_floor = 4 * size * size / bytes_per_second
    out = {"allocator": os.environ.get("GLIBC_TUNABLES", "glibc default"),
           "load_before": os.getloadavg(), "bandwidth_GBps": bytes_per_second / 1e9,
           "mask_floor_s": floor, "read_floor_s": read_floor, "threads": torch.get_num_threads(),
           "isa": sp.cpu_isa(), "size": size}
    for name, (method, rescale) in {"ASLP": ("aslp", None),
                                    "Supermask+DWR": ("supermask", "dwr")}.items():
        t = common.median_time(mask_fwd_bwd(method, rescale, size), repeat=rounds, warmup=1)
        out[f"mask {name}"] = {"s": t, "floor_ratio": t / floor}
    fused, kth = selection(size)
    t_sel = common.median_time(fused, repeat=rounds, warmup=1)
    t_kth = common.median_time(kth, repeat=3, warmup=1)
    out["selection"] = {"s": t_sel, "kthvalue_s": t_kth, "speedup": t_kth / t_sel,
                        "read_floor_ratio": t_sel / read_floor}
    out["steps"] = {}
    for name, (dense, fused) in steps(quick, size).items():
        times = step_times(dense, fused, rounds)
        out["steps"][name] = {"dense_s": times["dense"], "masked_s": times["masked"],
                              "dense_spread_s": times["dense_spread"],
                              "masked_spread_s": times["masked_spread"],
                              "rounds": times["rounds"], "ratio": times["masked"] / times["dense"],
                              "target": STEP_TARGETS[name.split()[0] if "linear" in name
                                                      else name]}
    out["load_after"] = os.getloadavg()
    return out


def run_default_allocator(rounds: int, quick: bool = False, size: int = SIZE) -> dict:
    """run() in a child process with glibc's default allocator (GLIBC_TUNABLES removed)."""
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    args = [sys.executable, __file__, "--rounds", str(rounds), "--size", str(size)]
    args += ["--quick"] if quick else []
    done = subprocess.run(args, env=env, check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="skip MiniLM")
    parser.add_argument("--size", type=int, default=SIZE, help="the large layer's side")
    a = parser.parse_args()
    torch.manual_seed(0)
    print(json.dumps(run(a.rounds, a.quick, a.size), indent=2))
