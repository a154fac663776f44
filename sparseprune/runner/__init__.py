"""The experiment runner behind the ``sparseprune`` command: train a method on a model and
dataset into a run directory, resume it, report it, compare runs.

Run directory: ``config.json``, ``metrics.csv`` (per epoch), ``final.json`` (final subnetwork),
``checkpoint.pt`` (resume), ``best.pt`` (best validation epoch), ``subnetwork.safetensors`` (finalized
``state_dict``), ``curves.png``, ``density.png``, ``scores.png``.
"""

from __future__ import annotations

import pathlib
from typing import Iterable, Optional

from .config import ConfigError, RunConfig, parse_pairs
from .finish import finish
from .metrics import compare_table, describe, format_run, load_runs, pareto_front
from .training import Log, RunError, echo, resume, start

__all__ = ["ConfigError", "RunConfig", "RunError", "parse_pairs", "train", "resume_run",
           "report", "compare", "default_out"]


def default_out(config: RunConfig) -> pathlib.Path:
    """``runs/<dataset>-<model>-<method>[-key=value...]-s<seed>``."""
    opts = "".join(f"-{k}={v}" for k, v in sorted(config.options.items()))
    density = f"-d{config.density:g}" if config.density is not None else ""
    return pathlib.Path("runs") / (f"{config.dataset}-{config.model}-{config.method}{opts}"
                                   f"{density}-s{config.seed}")


def train(config: RunConfig, out: Optional[pathlib.Path] = None, *, overwrite: bool = False,
          progress: Optional[bool] = None, log: Log = echo) -> dict:
    """Train a new run and finish it; returns final.json's content."""
    session = start(config, out or default_out(config), overwrite=overwrite, progress=progress,
                    log=log)
    return finish(session, log=log)


def resume_run(directory: pathlib.Path, *, epochs: Optional[int] = None,
               patience: Optional[int] = None, max_minutes: Optional[float] = None,
               progress: Optional[bool] = None, log: Log = echo) -> dict:
    """Continue a run from its checkpoint and finish it; returns final.json's content."""
    session = resume(directory, epochs=epochs, patience=patience, max_minutes=max_minutes,
                     progress=progress, log=log)
    return finish(session, log=log)


def report(directory: pathlib.Path) -> str:
    """The text ``sparseprune report DIR`` prints."""
    return format_run(pathlib.Path(directory))


def compare(directories: Iterable[pathlib.Path], plot: Optional[pathlib.Path] = None,
            target: Optional[float] = None) -> str:
    """One Markdown table over finished runs (with ``target``, the first epoch each reaches that
    val accuracy), and a Pareto plot (accuracy vs density) if ``plot``."""
    if target is not None and not 0 < target <= 1:
        raise ConfigError(f"--target-acc must be in (0, 1], got {target!r}")
    runs = load_runs(directories)
    if plot is not None:
        from .plots import pareto
        pareto([{"density": f["sparsity"]["density"], "accuracy": f["test_acc"],
                 "method": describe(c), "model": f"{c.model} / {c.dataset}"} for _, c, f in runs],
               pathlib.Path(plot))
    return compare_table(runs, target)
