"""Demo: learn an ASLP subnetwork of a frozen random LeNet-300-100 on Fashion-MNIST, on the CPU.

Run ``python -m sparseprune.demo`` (``make demo``). Prints the result table, writes a plot and a
JSON file of the numbers, and times one training step of the fused kernels against the seed paper's
``F.gumbel_softmax`` code path and a dense network.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

import sparseprune as sp

from . import reference
from .data import Splits, load_idx_dataset, loader
from .models import LeNet300, kaiming_normal_

BATCH_SIZE = 256
DEFAULT_EPOCHS = 60  # about 1.5 minutes of training on 2 idle CPU cores (~1.5 s per epoch)
DEFAULT_MAX_MINUTES = 4.0  # training stops early past this: `make demo` on a clean clone, build
# included, stays under 10 minutes even on a busy machine
APT_PACKAGE = "dataset-fashion-mnist"


# ------------------------------------------------------------------------------------- data

def _try_apt_install() -> bool:
    """Install the dataset package once when we are root and have apt-get; True on success."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False
    print(f"Fashion-MNIST not found; running `apt-get install -y -qq {APT_PACKAGE}` ...",
          flush=True)
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", APT_PACKAGE]):
        if subprocess.run(cmd).returncode != 0:
            return False
    return True


def load_data(data_dir: Optional[str], seed: int) -> Splits:
    """Fashion-MNIST with a 10 % validation split; exits with status 2 if it cannot be found."""
    try:
        return load_idx_dataset("fashion-mnist", data_dir, seed=seed)
    except FileNotFoundError as first:
        if _try_apt_install():
            try:
                return load_idx_dataset("fashion-mnist", data_dir, seed=seed)
            except FileNotFoundError:
                pass
        print(f"error: {first}", file=sys.stderr)
        raise SystemExit(2)


# --------------------------------------------------------------------------------- training

def aslp_optimizer(scores: list[Tensor], scales: list[Tensor]) -> torch.optim.Optimizer:
    """METHODS.md 1.5: SGD (momentum 0.9), lr 50 on the mask logits, 1e-3 on the Smart Rescale
    scalars."""
    return torch.optim.SGD([{"params": scores, "lr": 50.0}, {"params": scales, "lr": 1e-3}],
                           momentum=0.9)


def masked_model_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    groups = sp.mask_parameters(model)
    return aslp_optimizer(groups["scores"], groups.get("scale", []))


def train_epoch(model: nn.Module, opt: torch.optim.Optimizer, data: torch.utils.data.DataLoader,
                desc: str) -> tuple[float, float]:
    """One pass over ``data``; returns (mean loss, accuracy) of the stochastic-mask forwards."""
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    bar = tqdm(data, desc=desc, leave=False, dynamic_ncols=True, mininterval=0.5)
    for step, (x, y) in enumerate(bar):
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total_loss += loss.item() * len(y)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
        if step % 20 == 0:  # the report walks every layer; a few times per epoch is enough
            bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}",
                            density=f"{sp.sparsity_report(model).density:.3f}")
    bar.close()
    return total_loss / seen, correct / seen


@torch.no_grad()
def evaluate(model: nn.Module, dataset: torch.utils.data.TensorDataset) -> float:
    """Accuracy in eval mode (for masked layers: the deterministic final mask)."""
    model.eval()
    correct = sum(int((model(x).argmax(1) == y).sum())
                  for x, y in loader(dataset, 2048, shuffle=False))
    return correct / len(dataset)


def train(model: nn.Module, splits: Splits, epochs: int, seed: int,
          max_seconds: float = math.inf) -> tuple[list[dict], int]:
    """Train the masks; keep the best validation epoch (as the reference does). Returns the
    per-epoch history and that epoch's number, with its state loaded into ``model``.

    Stops before an epoch that would likely end past ``max_seconds`` of training."""
    opt = masked_model_optimizer(model)
    train_data = loader(splits.train, BATCH_SIZE, shuffle=True, seed=seed)
    history, best, best_state = [], -1.0, None
    begin = time.perf_counter()
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        if history and start - begin + history[-1]["seconds"] > max_seconds:
            print(f"stopping after {epoch - 1} of {epochs} epochs: the time limit of "
                  f"{max_seconds / 60:.1f} min would be exceeded (see --max-minutes)", flush=True)
            break
        loss, train_acc = train_epoch(model, opt, train_data, f"epoch {epoch}/{epochs}")
        val_acc, density = evaluate(model, splits.val), sp.sparsity_report(model).density
        history.append(dict(epoch=epoch, train_loss=loss, train_acc=train_acc, val_acc=val_acc,
                            density=density, seconds=time.perf_counter() - start))
        print(f"epoch {epoch:3d}  loss {loss:.4f}  train acc {train_acc:.4f}  "
              f"val acc {val_acc:.4f}  density {density:.4f}  "
              f"({history[-1]['seconds']:.1f} s)", flush=True)
        if val_acc > best:
            best, best_state = val_acc, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return history, max(history, key=lambda h: h["val_acc"])["epoch"]


# ---------------------------------------------------------------------------------- timing

def _step_fn(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor,
             y: Tensor) -> Callable[[], None]:
    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return step


def time_steps(model: nn.Module, x: Tensor, y: Tensor, num_classes: int,
               repeats: int = 20) -> dict[str, float]:
    """Median seconds per training step (forward, backward, SGD step) on one batch for the fused
    kernels, the seed paper's code path and the dense network.

    The three are timed in turns, one step each per round, so that load from other processes
    affects them alike.
    """
    fused = copy.deepcopy(model).train()
    paper = reference.seed_paper_copy(model).train()
    paper_layers = [m for m in paper.modules() if isinstance(m, reference.SeedPaperLayer)]
    paper_opt = aslp_optimizer([m.scores for m in paper_layers],
                               [m.scale for m in paper_layers if m.scale is not None])
    dense = kaiming_normal_(LeNet300(tuple(x.shape[1:]), num_classes)).train()
    dense_opt = torch.optim.SGD(dense.parameters(), lr=0.01, momentum=0.9)
    steps = {"fused (sparseprune)": _step_fn(fused, masked_model_optimizer(fused), x, y),
             "seed paper (F.gumbel_softmax)": _step_fn(paper, paper_opt, x, y),
             "dense (trainable weights)": _step_fn(dense, dense_opt, x, y)}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_ in range(repeats + 3):  # the first rounds warm up allocators and caches
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if round_ >= 3:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def timing_table(times: dict[str, float]) -> str:
    fused = times["fused (sparseprune)"]
    width = max(map(len, times))
    lines = [f"{'training step (batch 256)':<{width}}  {'median ms':>9}  {'x fused':>7}"]
    lines += [f"{name:<{width}}  {t * 1e3:9.2f}  {t / fused:7.2f}" for name, t in times.items()]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- output

def plot(history: list[dict], best_epoch: int, report: sp.Report, test_acc: float,
         path: str) -> None:
    """Accuracy and density over training, and per-layer density bars, to a PNG."""
    import matplotlib
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), width_ratios=(1.6, 1))
    marker = "o" if len(epochs) <= 30 else None  # markers only clutter long runs
    left.plot(epochs, [100 * h["train_acc"] for h in history], marker=marker,
              label="train acc (sampled masks)")
    left.plot(epochs, [100 * h["val_acc"] for h in history], marker=marker,
              label="val acc (final mask)")
    left.axvline(best_epoch, color="grey", ls=":", label=f"best val epoch ({best_epoch})")
    left.set_xlabel("epoch")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_ylabel("accuracy (%)")
    twin = left.twinx()
    twin.plot(epochs, [100 * h["density"] for h in history], ls="--", marker=marker,
              color="tab:red", label="global density")
    twin.set_ylabel("density (% of weights kept)", color="tab:red")
    lines = left.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    left.legend(lines, [ln.get_label() for ln in lines], loc="lower right", fontsize=8)
    left.set_title(f"ASLP on Fashion-MNIST, LeNet-300-100 (test acc {100 * test_acc:.2f} %)")
    names = [layer.name for layer in report.layers]
    bars = right.bar(names, [100 * layer.density for layer in report.layers], color="tab:blue")
    right.bar_label(bars, fmt="%.1f %%", fontsize=8)
    right.axhline(100 * report.density, color="tab:red", ls="--",
                  label=f"global {100 * report.density:.1f} %")
    right.set_ylim(0, 100)
    right.set_ylabel("density (%)")
    right.set_title("final per-layer density")
    right.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sparseprune.demo", description=__doc__)
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                        help=f"training epochs (default {DEFAULT_EPOCHS})")
    parser.add_argument("--out", default="demo_out", help="output directory (default demo_out)")
    parser.add_argument("--data-dir", default=None,
                        help="Fashion-MNIST directory (default: $SPARSEPRUNE_DATA, then "
                             "/usr/share/datasets/fashion-mnist)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--max-minutes", type=float, default=DEFAULT_MAX_MINUTES,
                        help="stop training early past this many minutes "
                             f"(default {DEFAULT_MAX_MINUTES:g}; 0 for no limit)")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")
    if not args.max_minutes >= 0:
        parser.error(f"--max-minutes must be >= 0, got {args.max_minutes}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    wall = time.perf_counter()
    splits = load_data(args.data_dir, args.seed)
    print(f"Fashion-MNIST: {len(splits.train)} train / {len(splits.val)} val / "
          f"{len(splits.test)} test; {torch.get_num_threads()} threads, CPU ISA {sp.cpu_isa()}")

    torch.manual_seed(args.seed)
    model = kaiming_normal_(LeNet300(splits.input_shape, splits.num_classes))
    model = sp.convert(model, "aslp", rescale="smart")
    limit = args.max_minutes * 60 if args.max_minutes > 0 else math.inf
    history, best_epoch = train(model, splits, args.epochs, args.seed, limit)

    masked_acc = evaluate(model, splits.test)
    final = sp.finalize(copy.deepcopy(model))
    test_acc = evaluate(final, splits.test)
    report = sp.sparsity_report(model)

    x, y = splits.train.tensors[0][:BATCH_SIZE], splits.train.tensors[1][:BATCH_SIZE]
    times = time_steps(model, x, y, splits.num_classes)

    print(f"\n=== ASLP + Smart Rescale, LeNet-300-100, Fashion-MNIST ({len(history)} epochs, "
          f"best val epoch {best_epoch}) ===")
    print(f"test accuracy, final deterministic subnetwork: {100 * test_acc:.2f} %")
    print(f"  same as masked model in eval mode:           "
          f"{'yes' if test_acc == masked_acc else f'NO ({100 * masked_acc:.2f} %)'}")
    print(f"global density: {report.density:.4f} "
          f"({report.kept:,} of {report.total:,} weights kept)\n")
    print(report)
    print()
    print(timing_table(times))

    os.makedirs(args.out, exist_ok=True)
    png = os.path.abspath(os.path.join(args.out, "aslp_fashion_mnist.png"))
    plot(history, best_epoch, report, test_acc, png)
    results = dict(model="lenet300", method="aslp", rescale="smart", epochs=len(history),
                   seed=args.seed, best_epoch=best_epoch, test_acc=test_acc,
                   masked_test_acc=masked_acc, history=history, sparsity=report.to_dict(),
                   step_seconds=times, threads=torch.get_num_threads(),
                   step_ratio_vs_fused={k: t / times["fused (sparseprune)"]
                                        for k, t in times.items()},
                   wall_seconds=time.perf_counter() - wall)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nplot:    {png}\nresults: {os.path.abspath(os.path.join(args.out, 'results.json'))}")
    print(f"wall time: {results['wall_seconds']:.0f} s")
    return 0 if test_acc == masked_acc else 1


if __name__ == "__main__":
    raise SystemExit(main())
