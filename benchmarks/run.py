"""`make bench`: measures the targets of docs/PERFORMANCE.md in one process run and writes
benchmarks/results/latest.{md,json} and the README's table.

  T1  ASLP fused mask forward + backward, 4096x4096, time / bandwidth floor      target <= 2.0
  T2  the same, seed-paper reference path / fused                                target >= 25
  T3  Conv4 training step (batch 64, 32x32x3), ASLP layers / dense layers        target <= 1.10
  T4  Supermask + DWR fused forward + backward: / floor, and vs the paper code    <= 2.5, >= 10
  T5  Smart Rescale vs DWR overhead, both fused, same layer                       SR <= DWR
  T6  Edge-Popup per-layer top-k selection vs torch.kthvalue                      >= 5x faster,
      and / the floor of one read of the scores                                  <= 3
  T7  peak memory of a 4096x4096 masked-linear step beyond a dense one           target <= scores
                                                                                 + one transient
  T11 whole training step masked / dense: LeNet-300-100, Conv4, MiniLM-L6        <= 1.05
  T12 the same, one 4096x4096 linear at batch 256                                <= 1.15
  T13 T1 on the public path (sp.functional + autograd, default allocator)        <= 2.5
T1-T3 are measured for every CPU ISA; the overhead suite (T4-T6, benchmarks/overhead.py) for the
best one. These raw-op figures run in this process, with the allocator tunables of the Makefile;
T11-T13 and the public-path T4 and T6 run in a child process with glibc's default allocator, as
users run them (benchmarks/user_path.py). Each is judged against the floor measured in its own
process.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import torch

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import sparseprune as sp  # noqa: E402

import cases  # noqa: E402
import common  # noqa: E402
import memory  # noqa: E402
import overhead  # noqa: E402
import user_path  # noqa: E402

RESULTS = HERE / "results"
README = HERE.parent / "README.md"
MARKERS = ("<!-- bench:start -->", "<!-- bench:end -->")


def run(size: int, repeat: int, quick: bool = False) -> dict:
    shape = (size, size)
    bytes_per_second = common.bandwidth()
    floor = common.mask_floor_seconds(size * size, bytes_per_second)
    reference = common.median_time(cases.mask_reference(shape), repeat=3, warmup=1)
    conv_dense = common.median_time(cases.conv_step("dense"), repeat=repeat)
    conv_reference = common.median_time(cases.conv_step("reference"), repeat=repeat)
    per_isa = {}
    for isa in sp.supported_cpu_isas():
        sp.set_cpu_isa(isa)
        fused = common.median_time(cases.mask_fused(shape), repeat=2 * repeat if isa != "scalar" else 2,
                                   warmup=1)
        conv_fused = common.median_time(cases.conv_step("fused"), repeat=repeat)
        per_isa[isa] = {
            "mask_fused_s": fused,
            "T1_floor_ratio": fused / floor,
            "T2_speedup_vs_reference": reference / fused,
            "conv4_fused_step_s": conv_fused,
            "T3_vs_dense": conv_fused / conv_dense,
        }
    mem = memory.measure(size)
    best = sp.supported_cpu_isas()[-1]
    sp.set_cpu_isa(best)
    return {
        "overhead_isa": best,
        "overhead": overhead.run(repeat),
        "user_path": user_path.run_default_allocator(repeat, quick, size),
        "machine": common.machine(),
        "size": size,
        "bandwidth_GBps": bytes_per_second / 1e9,
        "mask_floor_s": floor,
        "mask_reference_s": reference,
        "conv4_dense_step_s": conv_dense,
        "conv4_reference_step_s": conv_reference,
        "conv4_reference_vs_dense": conv_reference / conv_dense,
        "per_isa": per_isa,
        "memory": mem,
    }


def markdown(r: dict) -> str:
    m = r["machine"]
    mem = r["memory"]
    lines = [
        f"Measured by `make bench` on {m['cpu']}, {m['threads']} threads, torch {m['torch']}.",
        "",
        targets_table(r),
        "",
        f"Raw ops below: allocator {m['allocator']}; bandwidth floor `torch.add` at "
        f"{r['bandwidth_GBps']:.1f} GB/s, mask floor {r['mask_floor_s'] * 1e3:.1f} ms for "
        f"{r['size']}x{r['size']}.",
        "",
        "| ISA | T1 fused fwd+bwd 4096² (ms) | T1 / floor (≤ 2.0) | T2 speed-up vs paper code (≥ 25) "
        "| T3 Conv4 step vs dense (≤ 1.10) |",
        "|---|---|---|---|---|",
    ]
    for isa, v in r["per_isa"].items():
        lines.append(f"| {isa} | {v['mask_fused_s'] * 1e3:.1f} | {v['T1_floor_ratio']:.2f}× | "
                     f"{v['T2_speedup_vs_reference']:.0f}× | {v['T3_vs_dense']:.3f}× |")
    lines += [
        "",
        f"Paper code path (F.gumbel_softmax), mask fwd+bwd 4096²: {r['mask_reference_s'] * 1e3:.0f} "
        f"ms. Conv4 step (batch 64): dense {r['conv4_dense_step_s'] * 1e3:.1f} ms, paper-code "
        f"ASLP {r['conv4_reference_vs_dense']:.2f}× dense.",
        "",
        f"T7 (peak RSS of one 4096² masked-linear training step, batch 256, beyond a dense step; "
        f"1 weight = {mem['weight_bytes'] / 2**20:.0f} MiB): fused "
        f"{mem['beyond_dense_in_weights']['fused']:.2f} weights during the step, plus the scores "
        f"(1 weight, persistent); paper code {mem['beyond_dense_in_weights']['reference']:.1f} "
        f"weights plus the scores. Target: ≤ scores + one weight-sized transient.",
        "",
        targets_line(r),
        "",
        overhead.markdown(r["overhead"], r["overhead_isa"]),
    ]
    return "\n".join(lines)


def targets_table(r: dict) -> str:
    """Every target with the path it was measured on: the raw op (this process, allocator
    tunables) or the user's path (child process, default allocator; user_path.py)."""
    u = r["user_path"]
    big = "fc 4096x4096"
    rows = r["overhead"]["per_layer"]
    dwr = rows[f"{big} | Supermask+DWR"]
    t6 = r["overhead"]["topk_4096"]
    best = r["overhead_isa"]
    raw = f"raw op, tunables, {best}"
    public = "`sp.functional` + autograd, default allocator"
    layers = "layers (`sp.convert`, ASLP) + autograd + SGD, default allocator"
    n = f"{r['size']}²"
    out = [f"Targets (docs/PERFORMANCE.md). Raw ops: `torch.ops.sparseprune.*` with the allocator "
           f"tunables of `make bench`, floor {r['bandwidth_GBps']:.1f} GB/s. User path: a child "
           f"process with glibc's default allocator, floor {u['bandwidth_GBps']:.1f} GB/s measured "
           f"there; load average {u['load_before'][0]:.1f} before, {u['load_after'][0]:.1f} after.",
           "",
           "| target | path | measured | goal |",
           "|---|---|---|---|",
           f"| T1 ASLP mask fwd+bwd {n} / floor | {raw} | "
           f"{r['per_isa'][best]['T1_floor_ratio']:.2f}× | ≤ 2.0× |",
           f"| T13 = T1 on the public path | {public} | {u['mask ASLP']['floor_ratio']:.2f}× | "
           f"≤ 2.5× |",
           f"| T4 Supermask+DWR fwd+bwd {n} / floor | {raw} | {dwr['floor_ratio']:.2f}× | ≤ 2.5× |",
           f"| T4 on the public path | {public} | {u['mask Supermask+DWR']['floor_ratio']:.2f}× | "
           f"≤ 2.5× |",
           f"| T4 vs the seed code (autograd over reference.py) | {raw} | {dwr['speedup']:.0f}× "
           f"faster | ≥ 10× |",
           f"| T6 Edge-Popup selection {n}, density 0.5, vs `torch.kthvalue` | {raw} | "
           f"{t6['speedup']:.1f}× faster | ≥ 5× |",
           f"| T6 selection / one read of the scores | {raw} | {t6['read_floor_ratio']:.2f}× | ≤ 3× |",
           f"| T6 on the default allocator | `sparseprune::topk_threshold`, default allocator | "
           f"{u['selection']['speedup']:.1f}× faster, {u['selection']['read_floor_ratio']:.2f}× "
           f"floor | ≥ 5×, ≤ 3× |"]
    for name, v in u["steps"].items():
        number = "T12" if "linear" in name else "T11"
        out.append(f"| {number} training step {name}, masked / dense | {layers} | "
                   f"{v['ratio']:.3f}× ({v['masked_s'] * 1e3:.1f} vs {v['dense_s'] * 1e3:.1f} ms) "
                   f"| ≤ {v['target']:.2f}× |")
    return "\n".join(out)


def targets_line(r: dict) -> str:
    rows = r["overhead"]["per_layer"]
    big = "fc 4096x4096"
    dwr, sr = rows[f"{big} | Supermask+DWR"], rows[f"{big} | ASLP+SR"]
    aslp_dwr = rows[f"{big} | ASLP+DWR"]
    t6 = r["overhead"]["topk_4096"]["speedup"]
    return (f"T4 Supermask+DWR 4096²: {dwr['floor_ratio']:.2f}× floor (≤ 2.5), "
            f"{dwr['speedup']:.0f}× faster than the paper code (≥ 10). "
            f"T5 SR vs DWR, fused, same layer: ASLP+SR {sr['fused_s'] * 1e3:.1f} ms vs ASLP+DWR "
            f"{aslp_dwr['fused_s'] * 1e3:.1f} ms and Supermask+DWR {dwr['fused_s'] * 1e3:.1f} ms "
            f"(SR ≤ DWR). T6 Edge-Popup selection: {t6:.1f}× faster than kthvalue (≥ 5).")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite README.md")
    parser.add_argument("--quick", action="store_true",
                        help="skip MiniLM in the user-path steps (a smoke run)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    results = run(args.size, args.repeat, args.quick)
    table = markdown(results)
    common.save_results(RESULTS, "latest", results, table,
                        None if args.no_readme else README, MARKERS)


if __name__ == "__main__":
    main()
