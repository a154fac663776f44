"""Learned N:M (2:4) masks on a real transformer: MiniLM-L6 (issue 12; docs/PERFORMANCE.md T14,
T15). Three parts, each a ratio or a score measured in one run:

  steps    T14: one training step (batch 8 x 128 tokens, AdamW, the machine's threads) of each
           variant against the dense fine-tune step, interleaved rounds, medians: learned 2:4
           (fused), the same with bfloat16 logits, the MaskLLM-style plain-PyTorch layer
           (sparseprune.reference.MaskLLMLinear: F.gumbel_softmax over the 6 candidates, @ the
           pattern matrix, W * mask, F.linear), learned unstructured ASLP, SR-STE fused and as its
           reference code.
  memory   T15: the extra peak resident memory of 3 training steps of each variant over the dense
           fine-tune's, per masked weight; each variant in a fresh process, glibc's allocator with
           a fixed mmap threshold (freed blocks go back to the OS, so RSS follows live memory),
           the peak (VmHWM) reset after the model, its batch and the teacher's embeddings are
           loaded.
  quality  the distillation table: the dense model is the teacher, a pruned copy the student,
           loss 1 - cos(student, teacher) on mean-pooled sentence embeddings, Debian fortunes
           sentences (hash split), held-out teacher cosine after a time budget per variant;
           one-shot magnitude, Wanda and SparseGPT 2:4 (``sp.prune_oneshot``, calibrated on
           train sentences) as the untrained rows. Concurrent ``--only`` runs of the same
           budget merge their rows into the results file.

Protocol shared by all parts: the 36 linear layers of the encoder are the prunable layers
(``sparseprune.runner.minilm.ENCODER``); everything else (embeddings, LayerNorms, pooler) is
frozen in every variant, so the variants differ only in how those layers train. Dense fine-tune:
their weights and biases train. Learned masks: only the mask parameters (weights frozen). SR-STE:
their weights and biases.

    python benchmarks/nm_minilm.py steps|memory|quality|all [--minutes M] [--rounds R]

Results: benchmarks/results/nm_minilm.{json,md}; the README table between its markers.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import pathlib
import random
import subprocess
import sys
import time
from typing import Callable

import torch

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import sparseprune as sp  # noqa: E402
from sparseprune import reference  # noqa: E402
from sparseprune.runner import minilm  # noqa: E402
from sparseprune.runner.data import text  # noqa: E402
from sparseprune.select import top_n_of_m  # noqa: E402

RESULTS = HERE / "results"
README = HERE.parent / "README.md"
MARKERS = ("<!-- nm:start -->", "<!-- nm:end -->")
BATCH, TOKENS = 8, 128
LOGIT_LR, WEIGHT_LR = 5e-3, 1e-4
# The distillation table's learned 2:4 logits train at a tenth of the recipe's 5e-3: the
# logits start at N(0, 0.01^2) plus the magnitude prior's +-0.03 (alpha 3 x std 0.01), and Adam's
# first steps move every logit by about the learning rate whatever its gradient's size, so at 5e-3
# a handful of noisy steps overturn the prior (measured: held-out cosine 0.59 at step 0, 0.34
# after 5 steps). At 5e-4 the prior holds and the cosine climbs from the first steps.
NM_LOGIT_LR = 5e-4
CALIBRATION_SENTENCES, CALIBRATION_BATCH = 128, 32  # as benchmarks/oneshot_minilm.py


# ---- the variants ---------------------------------------------------------------------------------

def frozen_copy(teacher):
    """A student whose every parameter is frozen (the variants unfreeze what they train)."""
    student = minilm.student(teacher)
    for p in student.parameters():
        p.requires_grad_(False)
    return student


def encoder_linears(model):
    return [m for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and name.startswith("encoder.")]


def dense(model):
    for layer in encoder_linears(model):
        layer.requires_grad_(True)
    return model


def learned_2to4(model, **options):
    return sp.convert(model, "aslp", pattern="2:4", include=minilm.ENCODER, prior="magnitude",
                      **options)


def maskllm_style(model):
    """MaskLLM's layer in plain PyTorch, with the same logits, at MaskLLM's first step (soft mode,
    its default, tau 4, kappa 100)."""
    return reference.nm_paper_copy(learned_2to4(model, hard=False))


def aslp_unstructured(model):
    """ASLP at 50 %: scores start from the weights' magnitude (3 standard deviations of |w| around
    its median per layer), so that the first masks are close to magnitude pruning."""
    sp.convert(model, "aslp", include=minilm.ENCODER)
    with torch.no_grad():
        for _, layer in sp.masked_layers(model):
            a = layer.weight.abs()
            layer.scores.copy_(3 * (a - a.median()) / a.std())
    return model


def srste(model):
    sp.convert(model, "srste", pattern="2:4", include=minilm.ENCODER)
    for _, layer in sp.masked_layers(model):
        layer.bias.requires_grad_(True)
    return model


def srste_paper(model):
    return reference.nm_paper_copy(srste(model))


def magnitude_fixed(model):
    """One-shot magnitude 2:4: the 2 largest |w| of every 4 inputs, as fixed masks."""
    sp.convert(model, "fixed", include=minilm.ENCODER)
    sp.set_masks(model, {name: top_n_of_m(layer.weight.detach().abs(), 2, 4)
                         for name, layer in sp.masked_layers(model)})
    for _, layer in sp.masked_layers(model):
        layer.requires_grad_(False)
    return model


def magnitude_finetuned(model):
    model = magnitude_fixed(model)
    for _, layer in sp.masked_layers(model):
        layer.requires_grad_(True)
    return model


STEP_VARIANTS: dict[str, Callable] = {
    "dense fine-tune": dense,
    "learned 2:4 (fused)": learned_2to4,
    "learned 2:4 (fused, bf16 logits)": lambda m: learned_2to4(m, scores_dtype=torch.bfloat16),
    "learned 2:4 (MaskLLM-style plain PyTorch)": maskllm_style,
    "ASLP unstructured (fused)": aslp_unstructured,
    "SR-STE (fused)": srste,
    "SR-STE (reference code)": srste_paper,
}


def optimizer(model, logit_lr: float | None = None):
    """AdamW: logits and scales at ``logit_lr`` (LOGIT_LR), weights at WEIGHT_LR, no weight
    decay."""
    masks = {id(p) for ps in sp.mask_parameters(model).values() for p in ps}
    gate = [p for name, p in model.named_parameters() if p.requires_grad and
            (id(p) in masks or name.endswith(".gate"))]
    rest = [p for p in model.parameters() if p.requires_grad and all(p is not g for g in gate)]
    groups = [g for g in ({"params": gate, "lr": logit_lr or LOGIT_LR},
                          {"params": rest, "lr": WEIGHT_LR})
              if g["params"]]
    return torch.optim.AdamW(groups, weight_decay=0.0)


def fixed_batch(tokenizer, sentences):
    """BATCH sentences padded (or cut) to exactly TOKENS tokens: the benchmark's shapes."""
    return dict(tokenizer(sentences[:BATCH], padding="max_length", truncation=True,
                          max_length=TOKENS, return_tensors="pt"))


def step_fn(model, opt, batch, target):
    def step():
        opt.zero_grad(set_to_none=True)
        minilm.distillation_loss(model, target, batch).backward()
        opt.step()
    return step


# ---- T14: step times ------------------------------------------------------------------------------

def steps(rounds: int, only: list[str] | None = None) -> dict:
    import common
    teacher, tokenizer = minilm.load()
    train, _ = text.split(text.sentences())
    batch = fixed_batch(tokenizer, train)
    with torch.no_grad():
        target = minilm.embed(teacher, batch)
    fns, masked = {}, 0
    for name, make in STEP_VARIANTS.items():
        if only and name not in only and name != "dense fine-tune":
            continue
        torch.manual_seed(0)
        model = make(frozen_copy(teacher)).train()
        fns[name] = step_fn(model, optimizer(model), batch, target)
    masked = sum(layer.weight.numel() for layer in encoder_linears(teacher))
    for fn in fns.values():  # warm-up: optimizer states, allocator
        fn()
    times = common.interleaved_medians(fns, rounds=rounds)
    base = times["dense fine-tune"]
    out = {"batch": BATCH, "tokens": TOKENS, "threads": torch.get_num_threads(),
           "masked_weights": masked, "rounds": rounds, "load_before": os.getloadavg(),
           "machine": common.machine(), "variants": {}}
    for name in fns:
        out["variants"][name] = {"step_s": times[name], "spread_s": times[name + "_spread"],
                                 "vs_dense": times[name] / base}
    fused, ref = (out["variants"][k]["step_s"] for k in
                  ("learned 2:4 (fused)", "learned 2:4 (MaskLLM-style plain PyTorch)"))
    out["fused_vs_maskllm_speedup"] = ref / fused
    out["load_after"] = os.getloadavg()
    return out


# ---- T15: peak memory ------------------------------------------------------------------------------

MEMORY_VARIANTS = ("dense fine-tune", "learned 2:4 (fused)", "learned 2:4 (fused, bf16 logits)",
                   "learned 2:4 (MaskLLM-style plain PyTorch)", "SR-STE (fused)",
                   "SR-STE (reference code)")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def _memory_child(name: str) -> dict:
    teacher, tokenizer = minilm.load()
    train, _ = text.split(text.sentences())
    batch = fixed_batch(tokenizer, train)
    with torch.no_grad():
        target = minilm.embed(teacher, batch)
    for p in teacher.parameters():
        p.requires_grad_(False)
    # Load every kernel and allocator path once on a tiny model, then reset the peak.
    tiny = STEP_VARIANTS[name](frozen_copy(teacher))
    step_fn(tiny, optimizer(tiny), batch, target)()
    del tiny
    model = teacher  # the student is the loaded model itself: no second copy
    before = _rss()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    torch.manual_seed(0)
    model = STEP_VARIANTS[name](model).train()
    step = step_fn(model, optimizer(model), batch, target)
    for _ in range(3):
        step()
    return {"variant": name, "extra_peak_bytes": _peak() - before}


def memory(only: list[str] | None = None) -> dict:
    env = dict(os.environ, GLIBC_TUNABLES="glibc.malloc.mmap_threshold=131072:"
               "glibc.malloc.trim_threshold=131072")
    out = {"allocator": env["GLIBC_TUNABLES"], "variants": {}}
    for name in MEMORY_VARIANTS:
        if only and name not in only and name != "dense fine-tune":
            continue
        proc = subprocess.run([sys.executable, __file__, "--memory-child", name],
                              capture_output=True, text=True, env=env)
        if proc.returncode:
            raise RuntimeError(f"memory child {name!r} failed:\n{proc.stderr[-3000:]}")
        out["variants"][name] = json.loads(proc.stdout.strip().splitlines()[-1])
    teacher, _ = minilm.load()
    masked = sum(layer.weight.numel() for layer in encoder_linears(teacher))
    base = out["variants"]["dense fine-tune"]["extra_peak_bytes"]
    out["masked_weights"] = masked
    for v in out["variants"].values():
        v["beyond_dense_bytes_per_weight"] = (v["extra_peak_bytes"] - base) / masked
    return out


# ---- quality: the distillation table --------------------------------------------------------------

_CALIBRATION: list = []  # calibration batches (train split), set by quality()


def oneshot(method: str) -> Callable:
    """One-shot 2:4 by ``sp.prune_oneshot`` with its defaults (block by block), calibrated on the
    first CALIBRATION_SENTENCES train sentences (never held-out ones), as oneshot_minilm.py."""
    def make(model):
        import warnings
        with warnings.catch_warnings():  # embeddings and pooler stay dense: the point of include
            warnings.simplefilter("ignore", UserWarning)
            return sp.prune_oneshot(model.eval(), method, pattern="2:4", data=_CALIBRATION,
                                    include=minilm.ENCODER, progress=False)
    return make


QUALITY_VARIANTS: dict[str, tuple[Callable, bool, float | None]] = {  # name: (make, trains, lr)
    "one-shot magnitude 2:4": (magnitude_fixed, False, None),
    "one-shot Wanda 2:4 (sp.prune_oneshot)": (oneshot("wanda"), False, None),
    "one-shot SparseGPT 2:4 (sp.prune_oneshot)": (oneshot("sparsegpt"), False, None),
    "learned 2:4, frozen weights (fused)": (
        lambda m: learned_2to4(m, scores_dtype=torch.bfloat16), True, NM_LOGIT_LR),
    "learned unstructured ASLP 50 %, frozen weights": (aslp_unstructured, True, None),
    "SR-STE 2:4 (weights train)": (srste, True, None),
    "magnitude 2:4 + fine-tuned weights": (magnitude_finetuned, True, None),
}


def distill(model, teacher, tokenizer, train, minutes: float, batch_size: int, seed: int = 0,
            budget_density: float | None = None, logit_lr: float | None = None) -> dict:
    opt = optimizer(model, logit_lr)
    budget = sp.budget.BudgetLoss(model, budget_density) if budget_density else None
    rng = random.Random(seed)
    start, steps, losses = time.perf_counter(), 0, []
    total = None
    while True:
        elapsed = time.perf_counter() - start
        if elapsed > minutes * 60:
            break
        if steps == 10:  # from the first steps' pace: the schedule's length
            total = max(20, int(minutes * 60 / (elapsed / 10)))
        sp.set_progress(model, min(steps / total, 1.0) if total else 0.0)
        batch = minilm.encode(tokenizer, rng.sample(train, batch_size))
        with torch.no_grad():
            target = minilm.embed(teacher, batch)
        loss = minilm.distillation_loss(model, target, batch)
        if budget is not None:
            loss = loss + budget()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        steps += 1
    return {"steps": steps, "seconds": time.perf_counter() - start,
            "final_loss": sum(losses[-20:]) / max(len(losses[-20:]), 1)}


@torch.no_grad()
def heldout_cosine(model, batches, targets) -> float:
    """minilm.teacher_cosine with the teacher's held-out embeddings computed once."""
    model.eval()
    total = sum(float((minilm.embed(model, b) * t).sum()) for b, t in zip(batches, targets))
    return total / sum(t.shape[0] for t in targets)


def quality(minutes: float, batch_size: int, heldout_n: int, only: list[str] | None) -> dict:
    torch.manual_seed(0)
    teacher, tokenizer = minilm.load()
    train, heldout = text.split(text.sentences())
    heldout = heldout[:heldout_n]
    _CALIBRATION[:] = minilm.batches(tokenizer, train[:CALIBRATION_SENTENCES], CALIBRATION_BATCH)
    held_batches = list(minilm.batches(tokenizer, heldout, 64))
    with torch.no_grad():
        held_targets = [minilm.embed(teacher, b) for b in held_batches]
    out = {"minutes_per_variant": minutes, "batch": batch_size, "heldout": len(heldout),
           "train_sentences": len(train), "calibration_sentences": CALIBRATION_SENTENCES,
           "logit_lr": LOGIT_LR, "nm_logit_lr": NM_LOGIT_LR, "weight_lr": WEIGHT_LR,
           "threads": torch.get_num_threads(), "load_before": os.getloadavg(), "variants": {}}
    for name, (make, trains, logit_lr) in QUALITY_VARIANTS.items():
        if only and name not in only:
            continue
        torch.manual_seed(0)
        load_before = os.getloadavg()[0]
        began = time.perf_counter()
        model = make(frozen_copy(teacher))
        row = {"steps": 0, "seconds": time.perf_counter() - began}
        if trains:
            density = 0.5 if "unstructured" in name else None
            row = distill(model.train(), teacher, tokenizer, train, minutes, batch_size,
                          budget_density=density, logit_lr=logit_lr)
            if sp.mask_parameters(model):
                row["logit_lr"] = logit_lr or LOGIT_LR
        if "unstructured" in name:
            sp.finalize(model, density=0.5)
        else:
            sp.finalize(model)
        report = sp.sparsity_report(model, pattern="2:4")
        encoder = [lyr for lyr in report.layers if lyr.name.startswith("encoder.")]
        row["density"] = sum(lyr.kept for lyr in encoder) / sum(lyr.total for lyr in encoder)
        row["all_2to4"] = all(lyr.complies for lyr in encoder)
        row["heldout_cosine"] = heldout_cosine(model, held_batches, held_targets)
        row["trains"] = trains
        row["load"] = [load_before, os.getloadavg()[0]]
        out["variants"][name] = row
        print(f"  {name}: {row}", flush=True)
    out["load_after"] = os.getloadavg()
    return out


def gaps(q: dict) -> None:
    """Each row's share of the one-shot magnitude 2:4 -> dense gap closed (in place)."""
    oneshot = q["variants"].get("one-shot magnitude 2:4", {}).get("heldout_cosine")
    if oneshot is not None:
        for row in q["variants"].values():
            row["gap_closed"] = (row["heldout_cosine"] - oneshot) / (1.0 - oneshot)


# ---- tables ----------------------------------------------------------------------------------------

def markdown(r: dict) -> str:
    lines = []
    if "steps" in r:
        s = r["steps"]
        lines += [f"Training step, MiniLM-L6, batch {s['batch']} x {s['tokens']} tokens, AdamW, "
                  f"{s['threads']} threads, {s['masked_weights']:,} masked weights (the "
                  f"encoder's 36 linears), median of {s['rounds']} interleaved rounds; load "
                  f"average {s['load_before'][0]:.1f} before, {s['load_after'][0]:.1f} after:", "",
                  "| variant | step (ms) | vs dense fine-tune |", "|---|---|---|"]
        for name, v in s["variants"].items():
            lines.append(f"| {name} | {v['step_s'] * 1e3:.0f} (±{v['spread_s'] * 5e2:.0f}) | "
                         f"{v['vs_dense']:.2f}× |")
        lines += ["", f"Learned 2:4, fused vs MaskLLM-style: {s['fused_vs_maskllm_speedup']:.2f}× "
                  "faster.", ""]
    if "memory" in r:
        m = r["memory"]
        lines += ["Extra peak RSS of 3 training steps beyond the dense fine-tune's, per masked "
                  f"weight (fresh process per variant; {m['allocator']}):", "",
                  "| variant | extra peak (MB) | beyond dense (B / masked weight) |",
                  "|---|---|---|"]
        for name, v in m["variants"].items():
            lines.append(f"| {name} | {v['extra_peak_bytes'] / 2**20:.0f} | "
                         f"{v['beyond_dense_bytes_per_weight']:+.1f} |")
        lines.append("")
    if "quality" in r:
        q = r["quality"]
        loads = [x for v in q["variants"].values() for x in v.get("load", [])]
        lines += [f"Sentence-embedding distillation (teacher: the dense model; student: a pruned "
                  f"copy, loss 1 - cos on mean-pooled embeddings; held-out teacher cosine on "
                  f"{q['heldout']} fortunes sentences the training never sees). Each trained "
                  f"variant had the same wall-clock budget, {q['minutes_per_variant']:g} min, "
                  f"batch {q['batch']}, AdamW without weight decay, {q['threads']} thread(s); "
                  f"load average (1 min) {min(loads):.1f} to {max(loads):.1f} at the rows' starts and "
                  f"ends:" if loads else "", ""]
        lines += ["| method | density | 2:4 | steps | time (s) | held-out cosine | gap closed |",
                  "|---|---|---|---|---|---|---|",
                  "| dense (the teacher) | 1.000 | – | – | – | 1.0000 | – |"]
        order = list(QUALITY_VARIANTS)  # concurrent --only runs finish in any order
        rows = sorted(q["variants"].items(),
                      key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
        for name, v in rows:
            closed = f"{v['gap_closed'] * 100:.0f} %" if "gap_closed" in v else "–"
            steps_ = v["steps"] if v.get("trains", v["steps"] > 0) else "–"
            lines.append(f"| {name} | {v['density']:.3f} | {'yes' if v['all_2to4'] else 'no'} | "
                         f"{steps_} | {v['seconds']:.0f} | {v['heldout_cosine']:.4f} | "
                         f"{closed} |")
        lines += ["", "Gap closed: (cosine - one-shot magnitude 2:4) / (1 - one-shot magnitude "
                  "2:4). Time: the training budget as spent (trained rows) or the pruning call "
                  f"(one-shot rows; Wanda and SparseGPT calibrate on the first "
                  f"{q.get('calibration_sentences', CALIBRATION_SENTENCES)} train sentences, "
                  f"block by block, `sp.prune_oneshot`'s default). Learning rates: learned 2:4 "
                  f"logits {q.get('nm_logit_lr', NM_LOGIT_LR):g} (a tenth of the recipe's 5e-3, which "
                  f"overturned the magnitude prior within 5 steps in short probes), ASLP scores "
                  f"{q.get('logit_lr', LOGIT_LR):g}, weights (SR-STE, fine-tune) "
                  f"{q.get('weight_lr', WEIGHT_LR):g}; constant."]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--memory-child":
        print(json.dumps(_memory_child(sys.argv[2])))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("part", choices=("steps", "memory", "quality", "all"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--heldout", type=int, default=1024)
    parser.add_argument("--only", action="append", help="only these variants (and the dense baseline)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = RESULTS / "nm_minilm.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    computed = ("steps", "memory", "quality") if args.part == "all" else (args.part,)
    if args.part in ("steps", "all"):
        results["steps"] = steps(args.rounds, args.only)
    if args.part in ("memory", "all"):
        results["memory"] = memory(args.only)
    if args.part in ("quality", "all"):
        results["quality"] = quality(args.minutes, args.batch, args.heldout, args.only)
    import common
    import fcntl
    lock = open(__file__)  # concurrent runs: one read-merge-write at a time
    fcntl.flock(lock, fcntl.LOCK_EX)
    # Parts run in separate processes may finish in any order: keep the others' latest results.
    latest = json.loads(path.read_text()) if path.exists() else {}
    if args.part == "quality" and args.only:
        # --only runs of the same protocol (budget, batch, held-out set), possibly concurrent:
        # rows the file holds now and this run did not redo are kept, the others dropped.
        mine, theirs = results["quality"], latest.get("quality", {})
        if all(theirs.get(k) == mine[k] for k in ("minutes_per_variant", "batch", "heldout")):
            mine["variants"] = {**theirs.get("variants", {}), **mine["variants"]}
    if "quality" in computed:
        gaps(results["quality"])
    results = {**latest, **{k: v for k, v in results.items() if k in computed}}
    common.save_results(RESULTS, "nm_minilm", results, markdown(results), README, MARKERS)
    lock.close()


if __name__ == "__main__":
    main()
