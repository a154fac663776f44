"""The GPU benchmarks of `make gpu-check` (benchmarks/gpu_check.py runs this file in a child
process after building the extension), and the small workload it runs under compute-sanitizer.

    python3 benchmarks/gpu_bench.py --out bench.json              # on a CUDA device
    python3 benchmarks/gpu_bench.py --out bench.json --smoke      # any device: tiny sizes, every
                                                                  # code path once, no timing claims
    python3 benchmarks/gpu_bench.py --sanitizer-workload          # one small run of each kernel

Sections, each written to the JSON file as soon as it is measured (so a timeout keeps them):

  bandwidth       HBM floor: torch.add(a, b, out=c) on three float32 tensors of 2^26 elements,
                  best of 5 (docs/PERFORMANCE.md, "The floor")
  mask            fused mask forward + backward on an 8192x8192 float32 layer: ASLP, ASLP+SR,
                  Supermask+DWR, Edge-Popup (28 bytes per weight at the floor) and reparam (20)
  paper           the same against the seed papers' code paths (sparseprune.reference:
                  gumbel_softmax_weight, bernoulli_dwr_weight, kthvalue_weight) and reparam
                  against its pure-PyTorch reference
  minilm          a MiniLM-L6-sized BERT (random weights) training step: dense, ASLP (fused), ASLP
                  (seed paper's code), learned 2:4 masks (convert(..., pattern="2:4"), fused) and
                  the same as MaskLLM's plain-PyTorch layer (reference.nm_paper_copy)
  semi_structured 2:4 inference: torch.sparse.to_sparse_semi_structured vs dense F.linear,
                  float16, 4096^2 and 8192^2, batch 1 / 32 / 256 / 4096

Times are device times (CUDA events around each call), medians unless said otherwise.
"""

from __future__ import annotations

import argparse
import copy
import json
import pathlib
import statistics
import sys
import time
import traceback
from typing import Callable

import torch
import torch.nn.functional as F

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repository's sparseprune, built in place

import sparseprune as sp  # noqa: E402
from sparseprune import ops, reference  # noqa: E402
from sparseprune.ops.rng import rng_state  # noqa: E402

MASKS = {  # name: (method, rescale, density)
    "ASLP": ("aslp", "none", 1.0),
    "ASLP+SR": ("aslp", "smart", 1.0),
    "Supermask+DWR": ("supermask", "dwr", 1.0),
    "Edge-Popup": ("edge_popup", "none", 0.5),
}
MASK_BYTES = 12 + 16     # per weight: forward reads scores, weight, writes the masked weight;
                         # backward reads its gradient, scores, weight, writes the score gradient
REPARAM_BYTES = 8 + 12   # forward reads w, writes w_hat; backward reads grad, w, writes grad w
MINILM_L6 = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                 intermediate_size=1536, max_position_embeddings=512)
TINY_BERT = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=64, max_position_embeddings=64)


def log(msg: str) -> None:
    print(msg, flush=True)


# ---- timing ----------------------------------------------------------------------------------------

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


SMOKE = False  # set by run(): one call per measurement, the numbers mean nothing


def timed(fn: Callable[[], object], device: torch.device, *, repeat: int, warmup: int = 1,
          budget_s: float = 10.0) -> dict:
    """Median and best seconds of ``fn()`` on ``device`` (CUDA events: the stream's time between
    the two records, host syncs inside ``fn`` included), after ``warmup`` calls; fewer repeats
    when one call is slow, so that the whole stays near ``budget_s``."""
    if SMOKE:
        repeat, warmup = 1, 0
    start = time.perf_counter()
    for _ in range(warmup):
        fn()
    sync(device)
    one = (time.perf_counter() - start) / warmup if warmup else 0.0
    repeat = max(1, min(repeat, int(budget_s / max(one, 1e-6))))
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "best_s": min(times), "repeat": len(times)}


# ---- sections ------------------------------------------------------------------------------------

def bandwidth(device: torch.device, smoke: bool) -> dict:
    numel = 1 << (16 if smoke else 26)
    a, b = torch.rand(numel, device=device), torch.rand(numel, device=device)
    c = torch.empty(numel, device=device)
    t = timed(lambda: torch.add(a, b, out=c), device, repeat=5, warmup=2)
    return {"numel": numel, "best_s": t["best_s"], "bytes_per_s": 3 * 4 * numel / t["best_s"]}


def mask_step(shape, name: str, device: torch.device):
    """(forward, backward) of one fused mask: the raw ops, as the layers call them."""
    method, rescale, density = MASKS[name]
    weight, scores, grad = (torch.randn(shape, device=device) for _ in range(3))
    scale = torch.ones(1, device=device) if rescale == "smart" else None
    rng = rng_state(1, 2)
    need = [False, True, scale is not None]

    def forward():
        return ops.masked_weight(weight, scores, scale, method, rescale, 1.0, density, rng)

    def backward():
        return torch.ops.sparseprune.masked_weight_backward(grad, weight, scores, scale, method,
                                                            rescale, 1.0, density, rng, need)
    return forward, backward


def reparam_step(shape, device: torch.device, fused: bool):
    fn = sp.functional.reparam_weight if fused else reference.reparam_weight
    weight = (torch.randn(shape, device=device) * 0.05).requires_grad_()
    t = torch.tensor([30.0], device=device, requires_grad=True)
    grad = torch.randn(shape, device=device)

    def step():
        w_hat, h_sum = fn(weight, t, return_sum=True)
        torch.autograd.backward([w_hat, h_sum], [grad, torch.ones_like(h_sum)])
        weight.grad = t.grad = None
    return step


def mask(device: torch.device, smoke: bool, floor_bps: float) -> dict:
    size = 256 if smoke else 8192
    shape, numel = (size, size), size * size
    out = {"shape": list(shape)}
    for name in MASKS:
        forward, backward = mask_step(shape, name, device)
        fwd = timed(forward, device, repeat=20)
        bwd = timed(backward, device, repeat=20)
        both = timed(lambda: (forward(), backward()), device, repeat=20)
        floor = MASK_BYTES * numel / floor_bps
        out[name] = {"forward_s": fwd["median_s"], "backward_s": bwd["median_s"],
                     "fused_s": both["median_s"], "floor_s": floor,
                     "floor_ratio": both["median_s"] / floor}
        log(f"  mask {name}: {both['median_s'] * 1e3:.3f} ms fwd+bwd, "
            f"{both['median_s'] / floor:.2f}x the floor")
        del forward, backward
    step = reparam_step(shape, device, fused=True)
    t = timed(step, device, repeat=20)
    floor = REPARAM_BYTES * numel / floor_bps
    out["reparam"] = {"fused_s": t["median_s"], "floor_s": floor,
                      "floor_ratio": t["median_s"] / floor}
    log(f"  mask reparam: {t['median_s'] * 1e3:.3f} ms fwd+bwd, {t['median_s'] / floor:.2f}x "
        "the floor")
    return out


def paper_step(shape, name: str, device: torch.device) -> Callable[[], None]:
    """The seed paper's code path for ``name``, forward + autograd backward."""
    method, rescale, density = MASKS[name]
    weight, grad = torch.randn(shape, device=device), torch.randn(shape, device=device)
    scores = torch.randn(shape, device=device, requires_grad=True)
    scale = torch.ones(1, device=device, requires_grad=True) if rescale == "smart" else None
    if method == "aslp":
        def forward():
            return reference.gumbel_softmax_weight(weight, scores, scale)
    elif method == "supermask":
        def forward():
            return reference.bernoulli_dwr_weight(weight, scores, dwr=rescale == "dwr")
    else:
        def forward():
            return reference.kthvalue_weight(weight, scores, density=density)

    def step():
        forward().backward(grad)
        scores.grad = None
        if scale is not None:
            scale.grad = None
    return step


def paper(device: torch.device, smoke: bool, fused: dict) -> dict:
    size = 256 if smoke else 8192
    shape = (size, size)
    out = {"shape": list(shape)}
    for name in MASKS:
        t = timed(paper_step(shape, name, device), device, repeat=5, budget_s=8.0)
        speedup = t["median_s"] / fused[name]["fused_s"]
        code = {"aslp": "gumbel_softmax_weight", "supermask": "bernoulli_dwr_weight",
                "edge_popup": "kthvalue_weight"}[MASKS[name][0]]
        out[name] = {"paper_code": code, "paper_s": t["median_s"], "fused_s": fused[name]["fused_s"],
                     "speedup": speedup}
        log(f"  paper {name} ({code}): {t['median_s'] * 1e3:.2f} ms, fused {speedup:.1f}x faster")
    t = timed(reparam_step(shape, device, fused=False), device, repeat=5, budget_s=8.0)
    out["reparam"] = {"paper_code": "reference.reparam_weight (pure PyTorch)",
                      "paper_s": t["median_s"], "fused_s": fused["reparam"]["fused_s"],
                      "speedup": t["median_s"] / fused["reparam"]["fused_s"]}
    log(f"  paper reparam (pure PyTorch): {t['median_s'] * 1e3:.2f} ms, fused "
        f"{out['reparam']['speedup']:.1f}x faster")
    return out


def bert(config: dict, device: torch.device):
    """transformers' BertModel of ``config`` with seeded random weights, dropout off."""
    import transformers
    cfg = transformers.BertConfig(**config, hidden_dropout_prob=0.0,
                                  attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    return transformers.BertModel(cfg).to(device)


def bert_step(model, batch: int, seq: int, vocab: int, device: torch.device):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (batch, seq), generator=gen).to(device)
    mask = torch.ones(batch, seq, dtype=torch.long, device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(input_ids=ids, attention_mask=mask)
        (out.last_hidden_state.float().square().mean() + out.pooler_output.float().mean()).backward()
        opt.step()
    return step


def minilm(device: torch.device, smoke: bool) -> dict:
    """Dense vs masked training step of a MiniLM-L6-sized BERT (random weights, dropout off)."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        return {"status": "skipped: transformers is not installed"}
    config = TINY_BERT if smoke else MINILM_L6
    batch, seq = (2, 8) if smoke else (32, 256)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True  # both steps: TF32 GEMMs, as fp32 training runs
    out = {"config": config, "batch": batch, "seq": seq, "dtype": "float32 (TF32 matmuls)"}
    try:
        variants = {
            "dense": lambda m: m,
            "aslp (fused)": lambda m: sp.convert(m, "aslp"),
            "aslp (seed paper code)": lambda m: reference.seed_paper_copy(sp.convert(m, "aslp")),
            # Learned 2:4 masks (issue 12): fused, and MaskLLM's layer in plain PyTorch.
            "aslp 2:4 (fused)": lambda m: sp.convert(m, "aslp", pattern="2:4"),
            "aslp 2:4 (MaskLLM-style)": lambda m: reference.nm_paper_copy(
                sp.convert(m, "aslp", pattern="2:4")),
        }
        base = bert(config, torch.device("cpu"))
        for name, make in variants.items():
            try:
                model = make(copy.deepcopy(base)).to(device)
            except Exception as exc:
                status = "failed"
                out[name] = {"status": f"{status}: {type(exc).__name__}: {exc}"[:500]}
                log(f"  minilm {name}: {status} ({type(exc).__name__}: {str(exc)[:200]})")
                continue
            t = timed(bert_step(model, batch, seq, config["vocab_size"], device), device,
                      repeat=10, warmup=2, budget_s=10.0)
            out[name] = {"step_s": t["median_s"], "tokens_per_s": batch * seq / t["median_s"]}
            log(f"  minilm {name}: {t['median_s'] * 1e3:.2f} ms per step")
            del model
        dense = out["dense"]["step_s"]
        for name, v in out.items():
            if isinstance(v, dict) and "step_s" in v:
                v["vs_dense"] = v["step_s"] / dense
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return out


def two_four(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` with the 2 smallest |w| of every 4 consecutive inputs set to 0."""
    rows, cols = weight.shape
    groups = weight.view(rows, cols // 4, 4)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(-1, groups.abs().topk(2, dim=-1).indices, True)
    return (groups * keep).view(rows, cols)


def semi_structured_case(weight, sparse, batch: int, gen, device: torch.device) -> dict:
    size = weight.shape[1]
    x = torch.randn(batch, size, generator=gen).to(device, torch.float16)
    dense_out, sparse_out = F.linear(x, weight), F.linear(x, sparse)
    err = float((sparse_out.float() - dense_out.float()).norm()
                / dense_out.float().norm().clamp_min(1e-30))
    td = timed(lambda: F.linear(x, weight), device, repeat=20, warmup=3)
    ts = timed(lambda: F.linear(x, sparse), device, repeat=20, warmup=3)
    return {"dense_s": td["median_s"], "sparse_s": ts["median_s"],
            "speedup": td["median_s"] / ts["median_s"], "rel_error": err}


def semi_structured(device: torch.device, smoke: bool) -> dict:
    """2:4 inference through PyTorch's semi-structured sparse tensors against dense F.linear."""
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured
    sizes, batches = ([128], [1, 32]) if smoke else ([4096, 8192], [1, 32, 256, 4096])
    out = {"dtype": "float16", "cases": {}}
    cusparselt = getattr(torch.backends, "cusparselt", None)
    out["cusparselt"] = bool(cusparselt and cusparselt.is_available())
    for size in sizes:
        gen = torch.Generator().manual_seed(size)
        weight = two_four(torch.randn(size, size, generator=gen)).to(device, torch.float16)
        for backend in ("default", "cutlass"):
            key = f"{size}x{size} {backend}"
            before = SparseSemiStructuredTensor._FORCE_CUTLASS
            try:
                SparseSemiStructuredTensor._FORCE_CUTLASS = backend == "cutlass"
                sparse = to_sparse_semi_structured(weight)
                cases = {"backend": type(sparse).__name__}
                for batch in batches:
                    try:
                        cases[f"batch {batch}"] = semi_structured_case(weight, sparse, batch, gen,
                                                                       device)
                    except Exception as exc:  # one shape refused: the others may still run
                        cases[f"batch {batch}"] = {
                            "status": f"failed: {type(exc).__name__}: {exc}"[:500]}
                    v = cases[f"batch {batch}"]
                    log(f"  2:4 {key} batch {batch}: " + (
                        v["status"][:200] if "status" in v else
                        f"dense {v['dense_s'] * 1e6:.1f} us, semi-structured "
                        f"{v['sparse_s'] * 1e6:.1f} us ({v['speedup']:.2f}x), "
                        f"rel. error {v['rel_error']:.1e}"))
                out["cases"][key] = cases
            except Exception as exc:  # unsupported device / dtype / shape: report, go on
                out["cases"][key] = {"status": f"failed: {type(exc).__name__}: {exc}"[:500]}
                log(f"  2:4 {key}: failed ({type(exc).__name__}: {str(exc)[:200]})")
            finally:
                SparseSemiStructuredTensor._FORCE_CUTLASS = before
    return out


# ---- the runner ----------------------------------------------------------------------------------

SECTIONS = ("bandwidth", "mask", "paper", "minilm", "semi_structured")


def run(out_path: pathlib.Path, device: torch.device, smoke: bool, only=None) -> dict:
    global SMOKE
    SMOKE = smoke
    results = {"device": str(device), "smoke": smoke,
               "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
               else "cpu", "torch": torch.__version__, "sections": {}}
    sections = results["sections"]

    def save():
        out_path.write_text(json.dumps(results, indent=2))

    for name in SECTIONS:
        if only and name not in only:
            continue
        needs = {"mask": "bandwidth", "paper": "mask"}.get(name)
        if needs and "error" in sections.get(needs, {"error": "not run"}):
            sections[name] = {"error": f"needs the {needs} section, which did not run"}
            save()
            continue
        log(f"[bench] {name} ...")
        start = time.perf_counter()
        try:
            if name == "bandwidth":
                sections[name] = bandwidth(device, smoke)
                log(f"  bandwidth: {sections[name]['bytes_per_s'] / 1e9:.1f} GB/s")
            elif name == "mask":
                sections[name] = mask(device, smoke, sections["bandwidth"]["bytes_per_s"])
            elif name == "paper":
                sections[name] = paper(device, smoke, sections["mask"])
            elif name == "minilm":
                sections[name] = minilm(device, smoke)
            else:
                sections[name] = semi_structured(device, smoke)
        except Exception as exc:
            sections[name] = {"error": f"{type(exc).__name__}: {exc}"[:1000],
                              "traceback": traceback.format_exc()[-3000:]}
            log(f"  {name} failed: {type(exc).__name__}: {exc}")
        sections[name]["seconds"] = time.perf_counter() - start
        save()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return results


def sanitizer_workload(device: torch.device) -> None:
    """One small run of every kernel: each mask pass (vector and scalar paths), masked linear and
    conv2d, reparam, hard-concrete, the noise, sparse linear (spmv, spmm) and conv2d (direct and
    unfolded), csr and bitmap. compute-sanitizer watches it (gpu_check.py)."""
    from sparseprune.ops import formats
    log("workload start")

    def misaligned(t):
        buf = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
        view = buf[1:].view(t.shape)
        view.copy_(t)
        return view

    ops.philox_bits(4099, 1, 2, device)
    ops.logistic_noise(4099, 1, 2, device)
    rng = rng_state(3, 4)
    for (method, rescale, density) in list(MASKS.values()) + [("aslp", "dwr", 1.0),
                                                              ("supermask", "smart", 1.0)]:
        for dtypes in ((torch.float32, torch.float32), (torch.bfloat16, torch.float16)):
            for place in (lambda t: t, misaligned):
                w, s, g = (place(torch.randn(37, 211, device=device).to(d))
                           for d in (dtypes[1], dtypes[0], dtypes[1]))
                scale = torch.ones(1, device=device) if rescale == "smart" else None
                ops.masked_weight(w, s, scale, method, rescale, 0.7, density, rng)
                torch.ops.sparseprune.masked_weight_backward(g, w, s, scale, method, rescale, 0.7,
                                                             density, rng,
                                                             [True, True, scale is not None])
    x = torch.randn(5, 41, device=device, requires_grad=True)
    w = torch.randn(30, 41, device=device, requires_grad=True)
    s = torch.randn(30, 41, device=device, requires_grad=True)
    sp.functional.masked_linear(x, w, s, scale=torch.ones(1, device=device)).sum().backward()
    xc = torch.randn(2, 3, 9, 9, device=device, requires_grad=True)
    wc = torch.randn(4, 3, 3, 3, device=device, requires_grad=True)
    sc = torch.randn(4, 3, 3, 3, device=device, requires_grad=True)
    sp.functional.masked_conv2d(xc, wc, sc, padding=1, method="supermask",
                                rescale="dwr").sum().backward()
    for place in (lambda t: t, misaligned):
        wr = place(torch.randn(37, 211, device=device) * 0.05)
        t = torch.tensor([30.0], device=device)
        w_hat, h_sum = ops.reparam_weight(wr, t, 4, True)
        torch.ops.sparseprune.reparam_weight_backward(place(torch.randn_like(wr)), h_sum, wr, t, 4,
                                                      [True, True])
        la = place(torch.randn(37, 211, device=device))
        ops.hard_concrete_sample(la, 2 / 3, -0.1, 1.1, rng)
        torch.ops.sparseprune.hard_concrete_sample_backward(place(torch.randn_like(la)), la, 2 / 3,
                                                            -0.1, 1.1, rng, [True])
    for fmt in formats.FORMATS:
        weight = torch.randn(20, 45) * (torch.rand(20, 45) < 0.3)
        parts = [p.to(device) for p in formats.compress(weight, fmt)]
        for batch in (1, 5):
            ops.sparse_linear(torch.randn(batch, 45, device=device), *parts, None, fmt, (20, 45))
        cw = torch.randn(8, 3, 3, 3) * (torch.rand(8, 3, 3, 3) < 0.4)
        cparts = [p.to(device) for p in formats.compress(cw.reshape(8, -1), fmt)]
        for stride in (1, 2):
            ops.sparse_conv2d(torch.randn(2, 3, 10, 12, device=device), *cparts, None, fmt,
                              cw.shape, (stride, stride), (1, 1), (1, 1), 1)
    sync(device)
    log("workload ok")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, help="JSON file for the results")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes: check that every path runs (no timing claims)")
    parser.add_argument("--only", help="comma-separated sections (default: all)")
    parser.add_argument("--sanitizer-workload", action="store_true",
                        help="run each kernel once on small inputs and exit")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.sanitizer_workload:
        sanitizer_workload(device)
        return 0
    if args.out is None:
        parser.error("--out is required")
    torch.manual_seed(0)
    results = run(args.out, device, args.smoke, args.only.split(",") if args.only else None)
    failed = [k for k, v in results["sections"].items() if "error" in v]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
