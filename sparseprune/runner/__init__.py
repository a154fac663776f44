"""The experiment runner behind the ``sparseprune`` command: train a method on a model and
dataset into a run directory, resume it, report it, compare runs.

Run directory: ``config.json``, ``metrics.csv`` (per epoch), ``final.json`` (final subnetwork),
``checkpoint.pt`` (resume; ``checkpoint.dcp/`` with ``--fsdp``), ``best.pt`` (best validation
epoch), ``subnetwork.safetensors`` (finalized ``state_dict``), ``curves.png``, ``density.png``,
``scores.png``.
"""

from __future__ import annotations

import pathlib
from typing import Iterable, Optional

from .config import ConfigError, RunConfig, parse_pairs
from .finish import finish
from .metrics import compare_table, describe, format_run, load_runs, pareto_front, read_final
from .ranks import Ranks
from .sharding import gather
from .training import Log, RunError, Session, echo, resume, start

__all__ = ["ConfigError", "RunConfig", "RunError", "parse_pairs", "train", "resume_run",
           "report", "compare", "default_out"]


def default_out(config: RunConfig) -> pathlib.Path:
    """``runs/<dataset>-<model>-<method>[-key=value...]-s<seed>``."""
    opts = "".join(f"-{k}={v}" for k, v in sorted(config.options.items()))
    density = f"-d{config.density:g}" if config.density is not None else ""
    return pathlib.Path("runs") / (f"{config.dataset}-{config.model}-{config.method}{opts}"
                                   f"{density}-s{config.seed}")


def train(config: RunConfig, out: Optional[pathlib.Path] = None, *, overwrite: bool = False,
          progress: Optional[bool] = None, log: Log = echo,
          ranks: Ranks = Ranks()) -> Optional[dict]:
    """Train a new run and finish it; returns final.json's content (on rank 0; other ranks of a
    torchrun job return None once training ends)."""
    session = start(config, out or default_out(config), overwrite=overwrite, progress=progress,
                    log=log, ranks=ranks)
    return _finish(session, log, progress)


def resume_run(directory: pathlib.Path, *, epochs: Optional[int] = None,
               patience: Optional[int] = None, max_minutes: Optional[float] = None,
               progress: Optional[bool] = None, log: Log = echo,
               ranks: Ranks = Ranks()) -> Optional[dict]:
    """Continue a run from its checkpoint and finish it; returns final.json's content (None on
    ranks other than 0).

    ``epochs`` is the run's total (as for :func:`train`), not epochs to add; a finished run with
    nothing left to train is not finished again (its final.json is returned as it is)."""
    session = resume(directory, epochs=epochs, patience=patience, max_minutes=max_minutes,
                     progress=progress, log=log, ranks=ranks)
    if not session.pending:
        return read_final(pathlib.Path(directory)) if session.ranks.main else None
    return _finish(session, log, progress)


def _finish(session: Session, log: Log, progress: Optional[bool]) -> Optional[dict]:
    """The final evaluation and files, on rank 0 (after every rank helped gather a sharded
    model's whole state into its unsharded twin)."""
    session.model = gather(session.model, session.twin)
    session.wrapped = None
    return finish(session, log=log, progress=progress) if session.ranks.main else None


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
