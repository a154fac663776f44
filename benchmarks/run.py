"""`make bench`: measures the targets of docs/PERFORMANCE.md in one process run and writes
benchmarks/results/latest.{md,json} and the README's table.

  T1  ASLP fused mask forward + backward, 4096x4096, time / bandwidth floor      target <= 2.0
  T2  the same, seed-paper reference path / fused                                target >= 25
  T3  Conv4 training step (batch 64, 32x32x3), ASLP layers / dense layers        target <= 1.10
  T4  Supermask + DWR fused forward + backward: / floor, and vs the paper code    <= 2.5, >= 10
  T5  Smart Rescale vs DWR overhead, both fused, same layer                       SR <= DWR
  T6  Edge-Popup per-layer top-k selection vs torch.kthvalue                      >= 5x faster
  T7  peak memory of a 4096x4096 masked-linear step beyond a dense one           target <= scores
                                                                                 + one transient
T1-T3 are measured for every CPU ISA; the overhead suite (T4-T6, benchmarks/overhead.py) for the
best one.
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

RESULTS = HERE / "results"
README = HERE.parent / "README.md"
MARKERS = ("<!-- bench:start -->", "<!-- bench:end -->")


def run(size: int, repeat: int) -> dict:
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
        f"Measured by `make bench` on {m['cpu']}, {m['threads']} threads, torch {m['torch']}, "
        f"allocator: {m['allocator']}. Bandwidth floor: `torch.add` at "
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
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    results = run(args.size, args.repeat)
    table = markdown(results)
    common.save_results(RESULTS, "latest", results, table,
                        None if args.no_readme else README, MARKERS)


if __name__ == "__main__":
    main()
