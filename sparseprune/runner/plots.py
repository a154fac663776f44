"""PNG plots of a run (training curves, per-layer density, score histogram) and of a comparison
(accuracy vs density with the Pareto front). Matplotlib with the Agg backend: no display needed."""

from __future__ import annotations

import pathlib
from typing import Optional

import torch

from .metrics import pareto_front


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def curves(history: list[dict], path: pathlib.Path, title: str,
           selected_epoch: Optional[int] = None) -> pathlib.Path:
    """Loss (left axis of the first panel), train/val accuracy and density over the epochs."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    marker = "o" if len(epochs) <= 30 else None
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    loss_ax.plot(epochs, [h["train_loss"] for h in history], marker=marker, label="train loss")
    if any(h.get("val_loss") is not None for h in history):
        loss_ax.plot(epochs, [h.get("val_loss") for h in history], marker=marker, label="val loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("cross-entropy")
    loss_ax.legend(fontsize=8)
    loss_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    acc_ax.plot(epochs, [100 * h["train_acc"] for h in history], marker=marker,
                label="train acc (training-mode masks)")
    if any(h.get("val_acc") is not None for h in history):
        acc_ax.plot(epochs, [None if h.get("val_acc") is None else 100 * h["val_acc"]
                             for h in history], marker=marker, label="val acc (eval mode)")
    if selected_epoch:
        acc_ax.axvline(selected_epoch, color="grey", ls=":", label=f"selected epoch {selected_epoch}")
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("accuracy (%)")
    acc_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    twin = acc_ax.twinx()
    twin.plot(epochs, [100 * h["density"] for h in history], ls="--", color="tab:red",
              marker=marker, label="density (weights)")
    twin.set_ylabel("density (% of weights kept)", color="tab:red")
    lines = acc_ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    acc_ax.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="lower right")
    fig.suptitle(title)
    fig.subplots_adjust(left=0.07, right=0.92, bottom=0.12, top=0.88, wspace=0.25)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def density_bars(sparsity: dict, path: pathlib.Path, title: str) -> pathlib.Path:
    """Per-layer density bars with the global density in weights and in FLOPs."""
    plt = _pyplot()
    layers = sparsity["layers"]
    names = [layer["name"] for layer in layers]
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(names) + 2), 4))
    bars = ax.bar(names, [100 * layer["density"] for layer in layers], color="tab:blue")
    ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.axhline(100 * sparsity["density"], color="tab:red", ls="--",
               label=f"global, weights: {100 * sparsity['density']:.2f} %")
    if sparsity.get("flop_density") is not None:
        ax.axhline(100 * sparsity["flop_density"], color="tab:green", ls=":",
                   label=f"global, FLOPs: {100 * sparsity['flop_density']:.2f} %")
    ax.set_ylim(0, 105)
    ax.set_ylabel("density (% kept)")
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="x", labelrotation=45 if len(names) > 6 else 0, labelsize=8)
    ax.legend(fontsize=8)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.2 if len(names) > 6 else 0.1, top=0.86)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def score_histogram(scores: list[torch.Tensor], masks: list[torch.Tensor], path: pathlib.Path,
                    title: str, xlabel: str = "score") -> pathlib.Path:
    """Histogram of all masked layers' ranking scores (the method's ``score_label``), kept vs
    pruned; the counts in the legend are over every weight, scored or not."""
    plt = _pyplot()
    flat = torch.cat([s.detach().float().reshape(-1).cpu() for s in scores])
    keep = torch.cat([m.reshape(-1).cpu() for m in masks])
    kept, pruned = int(keep.sum()), int((~keep).sum())
    finite = flat.isfinite()  # a fixed mask ranks its pruned weights -inf: they have no score
    unscored = int((~finite).sum())
    flat, keep = flat[finite], keep[finite]
    if flat.numel() == 0:
        flat, keep = torch.zeros(1), torch.zeros(1, dtype=torch.bool)
    fig, ax = plt.subplots(figsize=(7, 4))
    lo, hi = torch.quantile(flat[::max(1, flat.numel() // 1_000_000)],
                            torch.tensor([0.001, 0.999])).tolist()
    lo, hi = (lo - 1, hi + 1) if lo == hi else (lo, hi)
    clipped = flat.clamp(lo, hi).double()  # the tails land in the outer bins
    kept_counts, edges = torch.histogram(clipped[keep], bins=80, range=(lo, hi))
    pruned_counts, _ = torch.histogram(clipped[~keep], bins=80, range=(lo, hi))
    # Two filled step outlines (pruned stacked on kept): a few polygons, not 160 bar patches.
    note = f", {unscored:,} without a score" if unscored else ""
    ax.stairs((kept_counts + pruned_counts).numpy(), edges.numpy(), fill=True, color="tab:grey",
              label=f"pruned ({pruned:,}{note})")
    ax.stairs(kept_counts.numpy(), edges.numpy(), fill=True, color="tab:blue",
              label=f"kept ({kept:,})")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("weights")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.subplots_adjust(left=0.11, right=0.97, bottom=0.12, top=0.86)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


MARKERS = "osD^vP*Xh<>"


def pareto(runs: list[dict], path: pathlib.Path,
           title: str = "test accuracy vs density") -> pathlib.Path:
    """Accuracy vs density, one point per run (``density``, ``accuracy``, ``method``,
    ``model``): colour by method, marker by model, each model's Pareto front ringed (and joined
    by a dashed line when it has several points); no text on the points."""
    plt = _pyplot()
    methods = list(dict.fromkeys(r["method"] for r in runs))
    models = list(dict.fromkeys(r["model"] for r in runs))
    colours = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(8, 5))
    for r in runs:
        ax.scatter(100 * r["density"], 100 * r["accuracy"],
                   color=colours(methods.index(r["method"]) % colours.N),
                   marker=MARKERS[models.index(r["model"]) % len(MARKERS)], s=36, zorder=3)
    handles = [plt.Line2D([], [], ls="", marker="o", color=colours(i % colours.N), label=m)
               for i, m in enumerate(methods)]
    for j, model in enumerate(models):
        points = [(r["density"], r["accuracy"]) for r in runs if r["model"] == model]
        handles.append(plt.Line2D([], [], ls="", marker=MARKERS[j % len(MARKERS)],
                                  color="black", label=model))
        front = pareto_front(points)
        xs, ys = [100 * points[i][0] for i in front], [100 * points[i][1] for i in front]
        ax.scatter(xs, ys, s=130, facecolors="none", edgecolors="black", lw=1, zorder=4)
        if len(front) >= 2:
            ax.plot(xs, ys, color="black", lw=1, ls="--", zorder=2)
    handles.append(plt.Line2D([], [], ls="--", lw=1, marker="o", markersize=10, color="black",
                              markerfacecolor="none", label="Pareto front of a model"))
    ax.set_xlabel("density (% of weights kept)")
    ax.set_ylabel("test accuracy of the final subnetwork (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.subplots_adjust(left=0.09, right=0.72, bottom=0.11, top=0.92)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
