"""`make bench-sparse`: sparse inference on this machine, in one process run.

  T8   4096x4096 float32, density 0.1, batch 1 and 32: >= 2x faster than dense F.linear and faster
       than torch.sparse CSR
  T9   the same at density 0.01: >= 8x faster than dense
  T10  format="auto" at density 0.5: never slower than 1.1x dense
  plus whole-model and per-layer latency, dense vs sparse, and file sizes, for pruned LeNet-300-100
  and Conv4 at several densities.

Every candidate is checked against dense first. The machine may be shared: each figure is the
median over interleaved rounds (every candidate once per round, each round the median of a few
calls), so a burst of load hits all candidates alike. Writes benchmarks/results/sparse.{md,json}
and the README's table.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Callable

import torch

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import sparseprune as sp  # noqa: E402

import common  # noqa: E402
import sparse_cases as cases  # noqa: E402

RESULTS = HERE / "results"
README = HERE.parent / "README.md"
MARKERS = ("<!-- sparse-bench:start -->", "<!-- sparse-bench:end -->")


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, repeat: int) -> dict:
    """Median seconds per candidate over rounds * repeat interleaved calls (common.py), no grad."""
    with torch.no_grad():
        times = common.interleaved_medians(fns, rounds=rounds * repeat)
    return {name: seconds for name, seconds in times.items() if name in fns}


def layer_results(size: int, densities, batches, rounds: int, repeat: int) -> list[dict]:
    rows = []
    for density in densities:
        weight = cases.pruned_weight(size, density)
        auto = sp.inference.sparsify.auto_format(density, size, size)
        for batch in batches:
            times = interleaved(cases.layer_candidates(weight, batch), rounds, repeat)
            times["auto"] = times[auto]  # "auto" is one of the candidates, not another kernel
            rows.append({"density": density, "batch": batch, "auto_format": auto,
                         "seconds": times})
            print(f"layer d={density} b={batch}: " + ", ".join(
                f"{k} {v * 1e3:.3f} ms" for k, v in times.items()), flush=True)
    return rows


def model_results(densities, batches, rounds: int, repeat: int, per_layer_density: float) -> dict:
    out = {}
    for name in cases.MODELS:
        whole, layers = [], {}
        for density in densities:
            sizes = cases.file_sizes(name, density)
            for batch in batches:
                fns, layer_fns, model = cases.model_candidates(name, density, batch)
                times = interleaved(fns, rounds, repeat)
                whole.append({"density": density, "batch": batch, "seconds": times, **sizes,
                              "formats": [layer.format for layer in
                                          sp.sparsity_report(model).layers]})
                print(f"{name} d={density} b={batch}: dense {times['dense'] * 1e3:.3f} ms, "
                      f"sparse {times['sparse'] * 1e3:.3f} ms", flush=True)
                if density == per_layer_density:
                    report = {layer.name: layer.format for layer in
                              sp.sparsity_report(model).layers}
                    layers[batch] = [{"layer": layer, "format": report[layer],
                                      "seconds": interleaved(f, rounds, repeat)}
                                     for layer, f in layer_fns.items()]
        out[name] = {"whole": whole, "per_layer": layers, "per_layer_density": per_layer_density}
    return out


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [f"Measured by `make bench-sparse` on {m['cpu']}, {m['threads']} threads, ISA "
             f"{r['isa']}, torch {m['torch']}; medians of {r['rounds']} interleaved rounds. "
             f"One {r['size']}x{r['size']} float32 layer, random weights under a random mask of "
             "the given density:", "",
             "| density | batch | dense F.linear ms | torch.sparse CSR ms | sp csr ms | sp bitmap ms "
             "| auto (format) ms | auto vs dense | auto vs torch.sparse |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in r["layer"]:
        t = row["seconds"]
        lines.append(f"| {row['density']} | {row['batch']} | {_ms(t['dense'])} | "
                     f"{_ms(t['torch.sparse'])} | {_ms(t['csr'])} | {_ms(t['bitmap'])} | "
                     f"{_ms(t['auto'])} ({row['auto_format']}) | "
                     f"{t['dense'] / t['auto']:.2f}x faster | "
                     f"{t['torch.sparse'] / t['auto']:.2f}x faster |")
    lines += ["", "Targets (docs/PERFORMANCE.md): " + "; ".join(targets(r["layer"])) + ".", "",
              "Whole models (`to_sparse(format=\"auto\")` of a model finalized to the density in "
              "every layer; file = `sp.save`, against the dense state dict in safetensors):", "",
              "| model | density | batch | dense ms | sparse ms | speed-up | dense file KiB "
              "| sparse file KiB |", "|---|---|---|---|---|---|---|---|"]
    for name, res in r["models"].items():
        for row in res["whole"]:
            t = row["seconds"]
            lines.append(f"| {name} | {row['density']} | {row['batch']} | {_ms(t['dense'])} | "
                         f"{_ms(t['sparse'])} | {t['dense'] / t['sparse']:.2f}x | "
                         f"{row['dense_bytes'] / 1024:.0f} | {row['sparse_bytes'] / 1024:.0f} |")
    for name, res in r["models"].items():
        for batch, layers in res["per_layer"].items():
            lines += ["", f"Per layer, {name} at density {res['per_layer_density']}, batch "
                      f"{batch}: " + ", ".join(
                          f"{x['layer']} ({x['format']}) {_ms(x['seconds']['dense'])} -> "
                          f"{_ms(x['seconds']['sparse'])} ms" for x in layers) + "."]
    return "\n".join(lines)


def targets(layer_rows: list[dict]) -> list[str]:
    def at(density):
        return [row for row in layer_rows if row["density"] == density]

    out = []
    t8 = at(0.1)
    if t8:
        ok = all(r["seconds"]["dense"] / r["seconds"]["auto"] >= 2
                 and r["seconds"]["auto"] < r["seconds"]["torch.sparse"] for r in t8)
        out.append(f"T8 {'met' if ok else 'NOT met'} (" + ", ".join(
            f"batch {r['batch']}: {r['seconds']['dense'] / r['seconds']['auto']:.1f}x dense, "
            f"{r['seconds']['torch.sparse'] / r['seconds']['auto']:.1f}x torch.sparse"
            for r in t8) + ")")
    t9 = at(0.01)
    if t9:
        ok = all(r["seconds"]["dense"] / r["seconds"]["auto"] >= 8 for r in t9)
        out.append(f"T9 {'met' if ok else 'NOT met'} (" + ", ".join(
            f"batch {r['batch']}: {r['seconds']['dense'] / r['seconds']['auto']:.1f}x dense"
            for r in t9) + ")")
    t10 = at(0.5)
    if t10:
        ok = all(r["seconds"]["auto"] <= 1.1 * r["seconds"]["dense"] for r in t10)
        out.append(f"T10 {'met' if ok else 'NOT met'} (auto picks {t10[0]['auto_format']}; " +
                   ", ".join(f"batch {r['batch']}: "
                             f"{r['seconds']['auto'] / r['seconds']['dense']:.2f}x the dense time"
                             for r in t10) + ")")
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="fewer densities and rounds")
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite README.md")
    parser.add_argument("--smoke", action="store_true",
                        help="a few seconds: a 512x512 layer, one round, batch 1 and 4; checks "
                             "every candidate and prints the table, writes no files")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    densities = (0.5, 0.1, 0.01)
    model_densities = (1.0, 0.5, 0.2, 0.1, 0.05, 0.01) if not (args.quick or args.smoke) else (0.1,)
    rounds = 1 if args.smoke else 3 if args.quick else args.rounds
    repeat = 1 if args.smoke else args.repeat
    size = 512 if args.smoke else args.size
    batches, model_batches = ((1, 4), (1, 4)) if args.smoke else ((1, 32), (1, 64))
    results = {"machine": common.machine(), "isa": sp.cpu_isa(), "size": size,
               "rounds": rounds,
               "layer": layer_results(size, densities, batches, rounds, repeat),
               "models": model_results(model_densities, model_batches, rounds,
                                       1 if args.smoke else 3, 0.1)}
    table = markdown(results)
    if args.smoke:
        print(table)
        return
    common.save_results(RESULTS, "sparse", results, table,
                        None if args.no_readme else README, MARKERS)


if __name__ == "__main__":
    main()
