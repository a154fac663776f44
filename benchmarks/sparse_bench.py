"""`make bench-sparse`: sparse inference on this machine, in one process run.

  T8   4096x4096 float32, density 0.1, batch 1 and 32: >= 2x faster than dense F.linear and faster
       than torch.sparse CSR
  T9   the same at density 0.01: >= 8x faster than dense
  T10  format="auto" at density 0.5: never slower than 1.1x dense
  T16  the 4096x4096 layer at 2:4 (format "nm"), batch 1 / 32: >= 1.5x / >= 1.0x dense
  T17  MiniLM-L6 end to end, batch 1 x 128 tokens: density 0.1 >= 2x dense, 2:4 >= 1.2x; never
       below 1.0x at any measured batch
  T18  LeNet-300-100 at batch 1: >= 1.0x dense
  plus whole-model and per-layer latency, dense vs sparse, and file sizes, for pruned LeNet-300-100
  and Conv4 at several densities, and MiniLM-L6 (sparse_minilm.py; 2:4 float32 file <= 0.55x).

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
from torch import nn

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import sparseprune as sp  # noqa: E402

import common  # noqa: E402
import sparse_cases as cases  # noqa: E402
import sparse_minilm  # noqa: E402

RESULTS = HERE / "results"
README = HERE.parent / "README.md"
MARKERS = ("<!-- sparse-bench:start -->", "<!-- sparse-bench:end -->")


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, repeat: int) -> dict:
    """Median seconds per candidate over rounds * repeat interleaved calls (common.py), no grad."""
    with torch.no_grad():
        times = common.interleaved_medians(fns, rounds=rounds * repeat)
    return {name: seconds for name, seconds in times.items() if name in fns}


def auto_choice(weight: torch.Tensor, batch: int) -> str:
    """The format to_sparse(format="auto", batch_sizes=(batch,)) gives the layer."""
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        linear.weight.copy_(weight)
    return getattr(sp.to_sparse(linear, format="auto", batch_sizes=(batch,)), "format", "dense")


def layer_results(size: int, densities, batches, rounds: int, repeat: int) -> list[dict]:
    rows = []
    for density in densities:
        weight = cases.nm_weight(size) if density == "2:4" else cases.pruned_weight(size, density)
        for batch in batches:
            auto = auto_choice(weight, batch)
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
                formats = [layer.format for layer in sp.sparsity_report(model).layers]
                times = interleaved(fns, rounds, repeat)
                whole.append({"density": density, "batch": batch, "seconds": times, **sizes,
                              "formats": formats})
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


def minilm_results(sparsities, batches, rounds: int, compile: bool) -> list[dict]:
    if sparse_minilm.minilm.available() is not None:
        print(f"MiniLM skipped: {sparse_minilm.minilm.available()}")
        return []
    rows = []
    for sparsity in sparsities:
        per_batch, facts = sparse_minilm.candidates(sparsity, batches, compile)
        for batch, fns in per_batch.items():
            times = interleaved(fns, rounds, 1)
            rows.append({"sparsity": sparsity, "batch": batch, "seconds": times, **facts})
            print(f"minilm {sparsity} b={batch}x{sparse_minilm.TOKENS}: " + ", ".join(
                f"{k} {v * 1e3:.1f} ms" for k, v in times.items() if not k.endswith("_spread"))
                + f" formats {facts['formats']}", flush=True)
    return rows


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [f"Measured by `make bench-sparse` on {m['cpu']}, {m['threads']} threads, ISA "
             f"{r['isa']}, torch {m['torch']}; medians of {r['rounds']} interleaved rounds. "
             f"One {r['size']}x{r['size']} float32 layer, random weights under a random mask of "
             "the given density:", "",
             "| density | batch | dense F.linear ms | torch.sparse CSR ms | sp csr ms | sp bitmap ms "
             "| sp nm ms | auto (format) ms | auto vs dense | auto vs torch.sparse |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in r["layer"]:
        t = row["seconds"]
        nm = _ms(t["nm"]) if "nm" in t else "-"
        lines.append(f"| {row['density']} | {row['batch']} | {_ms(t['dense'])} | "
                     f"{_ms(t['torch.sparse'])} | {_ms(t['csr'])} | {_ms(t['bitmap'])} | {nm} | "
                     f"{_ms(t['auto'])} ({row['auto_format']}) | "
                     f"{t['dense'] / t['auto']:.2f}x faster | "
                     f"{t['torch.sparse'] / t['auto']:.2f}x faster |")
    lines += ["", "Targets (docs/PERFORMANCE.md): " + "; ".join(
        targets(r["layer"]) + model_targets(r)) + ".", "",
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
    if r.get("minilm"):
        lines += ["", "MiniLM-L6 (the 36 encoder linear layers pruned by magnitude, then "
                  "`to_sparse(format=\"auto\", batch_sizes=...)` for the measured token counts; "
                  "batch x 128 tokens; compiled = `torch.compile`, default mode; files: `sp.save` vs "
                  "the dense state dict in safetensors):", "",
                  "| pruning | batch | dense ms | sparse ms | speed-up | compiled dense ms | "
                  "compiled sparse ms | compiled speed-up | layer formats | dense file MiB | "
                  "sparse file MiB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in r["minilm"]:
            t = row["seconds"]
            comp = [_ms(t[k]) if k in t else "-" for k in ("dense_compiled", "sparse_compiled")]
            speed = f"{t['dense_compiled'] / t['sparse_compiled']:.2f}x" \
                if "sparse_compiled" in t else "-"
            formats = ", ".join(f"{k} {v}" for k, v in row["formats"].items())
            if "nm_forced" in t:
                formats += f" (format=\"nm\" forced: {_ms(t['nm_forced'])} ms, " \
                    f"{t['dense'] / t['nm_forced']:.2f}x)"
            lines.append(f"| {row['sparsity']} | {row['batch']}x128 | {_ms(t['dense'])} | "
                         f"{_ms(t['sparse'])} | {t['dense'] / t['sparse']:.2f}x | {comp[0]} | "
                         f"{comp[1]} | {speed} | {formats} | {row['dense_bytes'] / 2**20:.1f} | "
                         f"{row['sparse_bytes'] / 2**20:.1f} |")
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
    t16 = at("2:4")
    if t16:
        need = {1: 1.5, 32: 1.0}
        ok = all(r["seconds"]["dense"] / r["seconds"]["nm"] >= need.get(r["batch"], 1.0)
                 for r in t16)
        out.append(f"T16 {'met' if ok else 'NOT met'} (" + ", ".join(
            f"batch {r['batch']}: nm {r['seconds']['dense'] / r['seconds']['nm']:.2f}x dense, "
            f"auto ({r['auto_format']}) {r['seconds']['dense'] / r['seconds']['auto']:.2f}x"
            for r in t16) + ")")
    return out


def speed_up(row: dict) -> float:
    """Dense over sparse time; 1 where auto kept every layer dense (the converted model is then
    the dense model itself, and its measured ratio, within a few percent of 1, is noise)."""
    if set(row["formats"]) == {"dense"}:
        return 1.0
    return row["seconds"]["dense"] / row["seconds"]["sparse"]


def model_targets(r: dict) -> list[str]:
    out = []
    rows = r.get("minilm", [])
    if rows:
        speed = {(x["sparsity"], x["batch"]): speed_up(x) for x in rows}
        one = {s: v for (s, b), v in speed.items() if b == 1}
        ok = one.get("0.1", 0) >= 2 and one.get("2:4", 0) >= 1.2 and min(speed.values()) >= 1.0
        out.append(f"T17 {'met' if ok else 'NOT met'} (batch 1x128: " + ", ".join(
            f"{s} {v:.2f}x" for s, v in one.items()) + f"; lowest at any batch "
            f"{min(speed.values()):.2f}x)")
        nm = [x for x in rows if x["sparsity"] == "2:4" and "nm_weight_bytes" in x]
        if nm:
            x = nm[0]
            ratio = x["nm_weight_bytes"] / x["dense_weight_bytes"]
            out.append(f"2:4 float32 weights in format nm {ratio:.3f}x the dense bytes "
                       f"({'met' if ratio <= 0.55 else 'NOT met'}: <= 0.55x); the whole nm "
                       f"file {x['nm_file_bytes'] / x['dense_bytes']:.2f}x the dense file "
                       "(embeddings stay dense)")
    lenet = [x for x in r["models"].get("lenet300", {}).get("whole", []) if x["batch"] == 1]
    if lenet:
        worst = min(speed_up(x) for x in lenet)
        out.append(f"T18 {'met' if worst >= 1.0 else 'NOT met'} (LeNet-300-100 batch 1: lowest "
                   f"{worst:.2f}x dense over the densities)")
    if rows or lenet:
        out.append("(rows where auto kept every layer dense count 1.00x: the model is the dense "
                   "one; the table shows what was measured)")
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="fewer densities and rounds")
    parser.add_argument("--no-readme", action="store_true", help="do not rewrite README.md")
    parser.add_argument("--no-minilm", action="store_true", help="skip the MiniLM-L6 case")
    parser.add_argument("--no-compile", action="store_true",
                        help="MiniLM eager only (torch.compile takes minutes on 2 cores)")
    parser.add_argument("--smoke", action="store_true",
                        help="a few seconds: a 512x512 layer, one round, batch 1 and 4; checks "
                             "every candidate and prints the table, writes no files")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    densities = (0.5, 0.1, 0.01, "2:4")
    model_densities = (1.0, 0.5, 0.2, 0.1, 0.05, 0.01) if not (args.quick or args.smoke) else (0.1,)
    rounds = 1 if args.smoke else 3 if args.quick else args.rounds
    repeat = 1 if args.smoke else args.repeat
    size = 512 if args.smoke else args.size
    batches, model_batches = ((1, 4), (1, 4)) if args.smoke else ((1, 32), (1, 64))
    results = {"machine": common.machine(), "isa": sp.cpu_isa(), "size": size,
               "rounds": rounds,
               "layer": layer_results(size, densities, batches, rounds, repeat),
               "models": model_results(model_densities, model_batches, rounds,
                                       1 if args.smoke else 3, 0.1),
               "minilm": [] if args.no_minilm or args.smoke else minilm_results(
                   ("0.5", "0.1", "2:4"), (1, 8), rounds, not (args.no_compile or args.quick))}
    table = markdown(results)
    if args.smoke:
        print(table)
        return
    common.save_results(RESULTS, "sparse", results, table,
                        None if args.no_readme else README, MARKERS)


if __name__ == "__main__":
    main()
