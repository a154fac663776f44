"""Fashion-MNIST comparison of the pruning-at-initialisation methods.

For each model, seed, density and method: prune a Kaiming-normal initialisation with
``sparseprune.prune_at_init`` (timed: the scoring time), train the sparse network with the mask
fixed under the same budget for every method, and measure test accuracy. Writes
``benchmarks/results/prune_at_init.json`` after every run (a rerun skips the runs already there)
and ``prune_at_init.md`` (the tables).

    python benchmarks/prune_at_init.py                       # the README's table
    python benchmarks/prune_at_init.py --models lenet300 --seeds 0 --epochs lenet300=1 \
        --out /tmp/quick --no-readme                         # a quick look
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import pathlib
import platform
import statistics
import sys
import time

import torch
import torch.nn.functional as F

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import common  # noqa: E402
import sparseprune as sp  # noqa: E402
from sparseprune.runner.data import load_idx_dataset, loader  # noqa: E402
from sparseprune.runner.models import build_model, kaiming_normal_  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

RESULTS = HERE / "results"
README = HERE.parent / "README.md"
MARKERS = ("<!-- pai:start -->", "<!-- pai:end -->")
METHODS = ("dense",) + sp.pruning.METHODS
DATA_METHODS = ("snip", "grasp", "iter_snip", "force")


def cpu_name() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def prune(model: torch.nn.Module, method: str, density: float, splits, args, seed: int) -> float:
    """Prune in place; returns the seconds ``prune_at_init`` took (scoring + selection)."""
    if method == "dense":
        return 0.0
    options: dict = {}
    if method in DATA_METHODS:
        options["data"] = loader(splits.train, args.score_batch, shuffle=True, seed=seed + 1000)
    if method == "synflow":
        options["input_shape"] = splits.input_shape
    if method == "random":
        options["generator"] = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    sp.prune_at_init(model, method, density=density, **options)
    return time.perf_counter() - start


@torch.no_grad()
def accuracy(model: torch.nn.Module, dataset) -> float:
    model.eval()
    correct = sum(int((model(x).argmax(1) == y).sum())
                  for x, y in loader(dataset, 1000, shuffle=False))
    return correct / len(dataset)


def train_subset(splits, size: int):
    """The first ``size`` images of a fixed (seed 0) permutation of the train split."""
    if size >= len(splits.train):
        return splits.train
    order = torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(0))[:size]
    return TensorDataset(*(t[order] for t in splits.train.tensors))


def train(model: torch.nn.Module, train_set, epochs: int, args, seed: int) -> float:
    """Adam on every parameter, fixed masks; returns the training seconds."""
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    data = loader(train_set, args.batch_size, shuffle=True, seed=seed)
    start = time.perf_counter()
    model.train()
    for _ in range(epochs):
        for x, y in data:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
    return time.perf_counter() - start


def check_pruned_zero(model: torch.nn.Module) -> None:
    for name, layer in sp.masked_layers(model):
        if bool((layer.weight[~layer.mask] != 0).any()):
            raise AssertionError(f"{name}: a pruned weight moved during training")


def run_one(name: str, method: str, density: float, seed: int, epochs: int, subset: int,
            splits, args) -> dict:
    torch.manual_seed(seed)
    model = kaiming_normal_(build_model(name, splits.input_shape, splits.num_classes))
    scoring = prune(model, method, density, splits, args, seed)
    report = sp.sparsity_report(model)
    train_seconds = train(model, train_subset(splits, subset), epochs, args, seed)
    if method != "dense":
        check_pruned_zero(model)
    return dict(model=name, method=method, density=density, seed=seed, epochs=epochs,
                train_images=min(subset, len(splits.train)),
                test_acc=accuracy(model, splits.test), val_acc=accuracy(model, splits.val),
                kept=report.kept, total=report.total,
                layer_density={layer.name: layer.density for layer in report.layers},
                empty_layers=[layer.name for layer in report.layers if layer.kept == 0],
                scoring_seconds=scoring, train_seconds=train_seconds)


def key(r: dict) -> tuple:
    return (r["model"], r["method"], r["density"], r["seed"], r["epochs"], r["train_images"])


def fmt_acc(values: list[float]) -> str:
    if not values:
        return "–"
    mean = 100 * statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {100 * statistics.stdev(values):.2f}"


def fmt_time(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}" if values else "–"


def markdown(doc: dict, per_layer: bool = True) -> str:
    runs = doc["runs"]
    meta = doc["meta"]
    lines = [
        "# Pruning at initialisation on Fashion-MNIST",
        "",
        f"Measured by `python benchmarks/prune_at_init.py` on {meta['cpu']}, "
        f"{meta['threads']} thread(s), torch {meta['torch']}.",
        "",
        "Protocol: Kaiming-normal init (`sparseprune.runner.models.kaiming_normal_`, the same for every "
        "method of a seed); `sparseprune.prune_at_init` with the library defaults (global scope; "
        "SynFlow 100 iterations, exponential schedule; Iter-SNIP and FORCE 10 iterations; GraSP "
        f"10 samples per class; SNIP / Iter-SNIP / FORCE one minibatch of {meta['score_batch']} "
        "per scoring step, from a shuffled train loader); then the same training budget for "
        f"every method: Adam (lr {meta['lr']}) on all weights and biases, batch "
        f"{meta['batch_size']}, "
        + "; ".join(f"{m}: {meta['epochs'][m]} epoch(s) over "
                    f"{meta['train_images'][m]:,} training images"
                    for m in meta["models"])
        + " (the train split is the official 60,000 minus a 10 % validation hold-out; a "
        "smaller number is a fixed random subset of it), no augmentation, no early stopping. "
        "Test accuracy (%) of the final weights on the 10,000 official test "
        "images; mean ± std over the seeds listed. Scoring time = wall time of the "
        "`prune_at_init` call (scores, selection, conversion), median over seeds, seconds.",
        "",
    ]
    for model in meta["models"]:
        model_runs = [r for r in runs if r["model"] == model
                      and r["epochs"] == meta["epochs"][model]
                      and r["train_images"] == meta["train_images"][model]]
        if not model_runs:
            continue
        seeds = sorted({r["seed"] for r in model_runs})
        total = model_runs[0]["total"]
        lines += [f"## {model} ({total:,} prunable weights; seeds {', '.join(map(str, seeds))})",
                  ""]
        header = "| method |" + "".join(f" acc @ d={d} | scoring s @ d={d} |"
                                         for d in meta["densities"])
        lines += [header, "|---|" + "---|---|" * len(meta["densities"])]
        for method in METHODS:
            if method not in meta["methods"]:
                continue
            cells = []
            for d in meta["densities"]:
                sel = [r for r in model_runs if r["method"] == method
                       and (method == "dense" or r["density"] == d)]
                empty = sorted({e for r in sel for e in r["empty_layers"]})
                note = f" (empty: {', '.join(empty)})" if empty else ""
                cells += [fmt_acc([r["test_acc"] for r in sel]) + note,
                          "–" if method == "dense"
                          else fmt_time([r["scoring_seconds"] for r in sel])]
            label = "dense (d = 1)" if method == "dense" else method
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
        if not per_layer:
            continue
        lines.append("Per-layer density (first seed):")
        lines.append("")
        layer_names = list(model_runs[0]["layer_density"])
        lines.append("| method | d | " + " | ".join(layer_names) + " |")
        lines.append("|---|---|" + "---|" * len(layer_names))
        for method in METHODS:
            for d in meta["densities"]:
                sel = [r for r in model_runs if r["method"] == method and r["density"] == d
                       and r["seed"] == seeds[0] and method != "dense"]
                for r in sel:
                    lines.append(f"| {method} | {d} | " + " | ".join(
                        f"{r['layer_density'][n]:.4f}" for n in layer_names) + " |")
        lines.append("")
    return "\n".join(lines)


def update_readme(doc: dict) -> None:
    """Put the accuracy / scoring-time tables between the README's markers."""
    body = markdown(doc, per_layer=False).split("\n", 2)[2].strip()  # without the title
    body = body.replace("\n## ", "\n### ")
    body += ("\n\nPer-layer densities: `benchmarks/results/prune_at_init.md`; "
             "numbers: `prune_at_init.json`.")
    common.write_between_markers(README, MARKERS, body)


def parse_epochs(items: list[str]) -> dict[str, int]:
    """MODEL=N pairs (--epochs, --subset)."""
    out = {}
    for item in items:
        model, _, value = item.partition("=")
        if not value.isdigit() or int(value) < 1:
            raise SystemExit(f"expected MODEL=N with N >= 1, got {item!r}")
        out[model] = int(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["lenet300", "conv2"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--densities", nargs="+", type=float, default=[0.1, 0.02])
    parser.add_argument("--seeds", nargs="+", type=int, default=None,
                        help="default: 0 1 for lenet300, 0 for the others")
    parser.add_argument("--epochs", nargs="+", default=["lenet300=5", "conv2=1", "conv4=1"],
                        help="MODEL=N training epochs")
    parser.add_argument("--subset", nargs="+", default=["conv2=18000", "conv4=18000"],
                        help="MODEL=N: train on a fixed random N-image subset of the train split")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--score-batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=str(RESULTS / "prune_at_init"))
    parser.add_argument("--no-readme", action="store_true",
                        help="do not rewrite the README's table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    epochs = parse_epochs(args.epochs)
    subsets = parse_epochs(args.subset)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out.with_suffix(".json"), out.with_suffix(".md")
    doc = json.loads(json_path.read_text()) if json_path.exists() else {"runs": []}
    splits = load_idx_dataset("fashion-mnist", args.data_dir, seed=0)
    doc["meta"] = dict(cpu=cpu_name(), threads=args.threads, torch=torch.__version__,
                       models=args.models, methods=args.methods, densities=args.densities,
                       epochs={m: epochs[m] for m in args.models}, lr=args.lr,
                       train_images={m: min(subsets.get(m, 10**9), len(splits.train))
                                     for m in args.models},
                       batch_size=args.batch_size, score_batch=args.score_batch)
    done = {key(r) for r in doc["runs"]}
    for name in args.models:
        seeds = args.seeds if args.seeds is not None else ([0, 1] if name == "lenet300"
                                                           else [0])
        for seed in seeds:
            for method in args.methods:
                for density in ([1.0] if method == "dense" else args.densities):
                    images = doc["meta"]["train_images"][name]
                    k = (name, method, density, seed, epochs[name], images)
                    if k in done:
                        continue
                    r = run_one(name, method, density, seed, epochs[name], images, splits, args)
                    doc["runs"] = [x for x in doc["runs"] if key(x) != k] + [r]
                    json_path.write_text(json.dumps(doc, indent=1))
                    md_path.write_text(markdown(doc))
                    print(f"{name:9s} seed {seed} {method:9s} d={density:<5} "
                          f"test {100 * r['test_acc']:.2f} %  scoring {r['scoring_seconds']:.2f} s"
                          f"  train {r['train_seconds']:.0f} s", flush=True)
    md_path.write_text(markdown(doc))
    if not args.no_readme:
        update_readme(doc)
    print(md_path.read_text())


if __name__ == "__main__":
    main()
