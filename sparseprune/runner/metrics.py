"""What a run records and how it is read back: ``metrics.csv`` (one row per epoch), ``final.json``
(the final subnetwork's numbers), and the tables ``report`` and ``compare`` print."""

from __future__ import annotations

import csv
import json
import math
import pathlib
import statistics
from typing import Any, Iterable, Optional

from .config import ConfigError, RunConfig
from .methods import total_epochs

METRICS = "metrics.csv"
FINAL = "final.json"
FIXED_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "density",
                 "flop_density", "temperature", "epoch_seconds", "step_seconds"]


def write_metrics(directory: pathlib.Path, history: list[dict]) -> pathlib.Path:
    """Rewrite ``metrics.csv`` from the history (fixed columns, then ``density/<layer>`` and
    ``lr/<group>`` columns in first-seen order)."""
    extra: list[str] = []
    for row in history:
        extra += [k for k in row if k not in FIXED_COLUMNS and k not in extra]
    path = pathlib.Path(directory) / METRICS
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIXED_COLUMNS + extra, restval="")
        writer.writeheader()
        for row in history:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    tmp.replace(path)
    return path


def read_metrics(directory: pathlib.Path) -> list[dict[str, Optional[float]]]:
    """``metrics.csv`` as a list of rows of floats (None for empty cells)."""
    path = pathlib.Path(directory) / METRICS
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()}
                for row in csv.DictReader(f)]


def step_stats(seconds: list[float]) -> dict[str, Optional[float]]:
    """Median and mean seconds per training step (the first two of a run are warm-up)."""
    kept = seconds[2:] if len(seconds) > 4 else seconds
    if not kept:
        return {"step_seconds_median": None, "step_seconds_mean": None}
    return {"step_seconds_median": statistics.median(kept),
            "step_seconds_mean": sum(kept) / len(kept)}


def converged_epoch(history: list[dict], fraction: float = 0.99) -> Optional[int]:
    """First epoch whose val accuracy reaches ``fraction`` of the run's best (a convergence
    speed measure, comparable across runs of the same length)."""
    vals = [(h["epoch"], h.get("val_acc")) for h in history if h.get("val_acc") is not None]
    if not vals:
        return None
    best = max(v for _, v in vals)
    return next(int(e) for e, v in vals if v >= fraction * best)


def first_epoch_reaching(history: list[dict], accuracy: float) -> Optional[int]:
    """First epoch whose val accuracy is at least ``accuracy`` (a fraction); None if never."""
    return next((int(h["epoch"]) for h in history
                 if h.get("val_acc") is not None and h["val_acc"] >= accuracy), None)


def write_final(directory: pathlib.Path, final: dict) -> pathlib.Path:
    path = pathlib.Path(directory) / FINAL
    path.write_text(json.dumps(final, indent=2) + "\n")
    return path


def read_final(directory: pathlib.Path) -> Optional[dict]:
    path = pathlib.Path(directory) / FINAL
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: unreadable ({exc})") from exc


# ------------------------------------------------------------------------------- tables

def describe(config: RunConfig) -> str:
    """Short method label: ``aslp(rescale=smart)``, ``edge_popup`` ..."""
    opts = ",".join(f"{k}={v}" for k, v in sorted(config.options.items()))
    return f"{config.method}({opts})" if opts else config.method


def _pct(x: Optional[float], unit: str = "") -> str:
    """A fraction as a percentage; "-" when there is none (no validation split, say)."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}{unit}"


def _ms(x: Optional[float]) -> str:
    return "-" if x is None else f"{1e3 * x:.1f}"


def format_run(directory: pathlib.Path) -> str:
    """The ``sparseprune report DIR`` text: configuration, result, per-layer table."""
    directory = pathlib.Path(directory)
    config = RunConfig.load(directory)
    final = read_final(directory)
    history = read_metrics(directory)
    lines = [f"run: {directory}",
             f"{describe(config)} on {config.model} / {config.dataset}, seed {config.seed}, "
             f"batch {config.batch_size}, {total_epochs(config)} epochs configured"]
    if final is None:
        done = int(history[-1]["epoch"]) if history else 0
        lines.append(f"unfinished: {done} of {total_epochs(config)} epochs recorded; continue with "
                     f"`sparseprune train --resume {directory}`")
        if history:
            last = history[-1]
            lines.append(f"last epoch: train loss {last['train_loss']:.4f}, val acc "
                         f"{_pct(last['val_acc'], ' %')}, density {last['density']:.4f}")
        return "\n".join(lines)
    sp_ = final["sparsity"]
    lines += [
        f"epochs run: {final['epochs_run']} (selected epoch {final['selected_epoch']}"
        f"{', ' + final['stop_reason'] if final['stop_reason'] else ''})",
        *[f"resumed after epoch {r['after_epoch']} with "
          + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in r["changed"].items())
          for r in final.get("resumes", [])],
        f"test accuracy of the final subnetwork: {_pct(final['test_acc'], ' %')}"
        f"   (best val acc {_pct(final['best_val_acc'], ' %')})",
        f"density: {sp_['density']:.4f} of weights ({sp_['kept']:,} of {sp_['total']:,}), "
        f"{sp_['flop_density']:.4f} of FLOPs ({sp_['flops_kept'] / 1e6:,.3f}M of "
        f"{sp_['flops_total'] / 1e6:,.3f}M per sample)",
        f"time: {final['wall_seconds']:.1f} s wall, {_ms(final['step_seconds_median'])} ms per "
        f"training step (median, batch {config.batch_size}, {final['threads']} threads, "
        f"CPU ISA {final['cpu_isa']})",
        "",
        layer_table(sp_),
    ]
    return "\n".join(lines)


def layer_table(sparsity: dict) -> str:
    """Per-layer Markdown table from a ``Report.to_dict()`` with FLOPs."""
    rows = ["| layer | shape | kept | total | density | FLOPs kept (M) | FLOPs total (M) |",
            "|---|---|---:|---:|---:|---:|---:|"]
    for layer in sparsity["layers"]:
        rows.append(f"| {layer['name']} | {'x'.join(map(str, layer['shape']))} | "
                    f"{layer['kept']:,} | {layer['total']:,} | {layer['density']:.4f} | "
                    f"{layer['flops_kept'] / 1e6:,.3f} | {layer['flops_total'] / 1e6:,.3f} |")
    rows.append(f"| **total** | | {sparsity['kept']:,} | {sparsity['total']:,} | "
                f"{sparsity['density']:.4f} | {sparsity['flops_kept'] / 1e6:,.3f} | "
                f"{sparsity['flops_total'] / 1e6:,.3f} |")
    return "\n".join(rows)


def load_runs(directories: Iterable[pathlib.Path]) -> list[tuple[pathlib.Path, RunConfig, dict]]:
    """(directory, config, final) for each finished run; unfinished ones raise ConfigError."""
    runs = []
    for d in directories:
        d = pathlib.Path(d)
        config = RunConfig.load(d)
        final = read_final(d)
        if final is None:
            raise ConfigError(f"{d}: the run has no {FINAL} yet (unfinished; resume it with "
                              f"`sparseprune train --resume {d}`)")
        runs.append((d, config, final))
    return runs


def compare_table(runs: list[tuple[pathlib.Path, RunConfig, dict]],
                  target: Optional[float] = None) -> str:
    """One Markdown row per run; with ``target`` (a val accuracy fraction) a column with the first
    epoch reaching it, a convergence-speed measure comparable across runs."""
    extra = f" epoch to val acc ≥ {100 * target:g} % |" if target is not None else ""
    rows = ["| run | method | model | dataset | epochs | test acc (%) | density (weights) | "
            "density (FLOPs) | epoch to 99 % of best val |" + extra + " ms / step |",
            "|---|---|---|---|---:|---:|---:|---:|---:|" + ("---:|" if extra else "") + "---:|"]
    for d, config, final in runs:
        s = final["sparsity"]
        conv = final.get("converged_epoch")
        cells = [d.name, describe(config), config.model, config.dataset, str(final["epochs_run"]),
                 _pct(final["test_acc"]), f"{s['density']:.4f}", f"{s['flop_density']:.4f}",
                 str(conv) if conv is not None else "-"]
        if target is not None:
            reached = first_epoch_reaching(read_metrics(d), target)
            cells.append(str(reached) if reached is not None else "never")
        cells.append(_ms(final["step_seconds_median"]))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (density, accuracy) points no other point beats (lower or equal density
    and higher or equal accuracy, one strictly), sorted by density."""
    front = []
    for i, (d, a) in enumerate(points):
        dominated = any((d2 <= d and a2 >= a) and (d2 < d or a2 > a)
                        for j, (d2, a2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def jsonable(value: Any) -> Any:
    """NaN/inf -> None so final.json stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value
