"""The training loop of a run: data, model and method, optimizer, epochs with a live progress bar,
validation, early stopping, a checkpoint per epoch, exact resume, and the final evaluation
(:mod:`.finish`).

Randomness: the global torch generator (weight init, the masks' noise) is seeded once and saved in
every checkpoint; each epoch's shuffling and augmentation use generators seeded from
``(seed, epoch)``. A resumed run therefore sees exactly the batches, noise and optimizer state of an
uninterrupted one (on the same thread count).
"""

from __future__ import annotations

import itertools
import math
import pathlib
import shutil
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

import sparseprune as sp

from . import data as D
from .data.download import DownloadError
from .data.augment import Augment
from .models import build_model
from . import checkpoint as ckpt
from . import methods
from .config import ConfigError, RunConfig, validate
from .hooks import TrainingHooks
from .metrics import write_metrics
from .optim import build_optimizer, init_weights

Log = Callable[[str], None]


def echo(message: str) -> None:
    """The default log: print and flush (runs are long; logs are often files)."""
    print(message, flush=True)

RUN_FILES = ("config.json", "metrics.csv", "final.json", ckpt.CHECKPOINT, ckpt.BEST,
             "subnetwork.safetensors", "curves.png", "density.png", "scores.png")
EVAL_BATCH = 1024


class RunError(RuntimeError):
    """Training itself failed (e.g. the loss diverged); not a usage error."""


@dataclass
class Session:
    """The live objects of a run being trained."""

    config: RunConfig
    directory: pathlib.Path
    splits: D.Splits
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Optional[torch.optim.lr_scheduler.LRScheduler]
    groups: list[str]
    augment: Optional[Augment]
    state: ckpt.TrainState
    hooks: TrainingHooks

    @property
    def total_epochs(self) -> int:
        return self.hooks.total_epochs


def one_line(message: str) -> str:
    """A multi-line message as one line (lines joined by '; ')."""
    return "; ".join(part.strip() for part in str(message).splitlines() if part.strip())


def load_splits(config: RunConfig, progress: bool = True) -> D.Splits:
    """The run's dataset; every data problem becomes a one-line ConfigError."""
    try:
        return D.load_dataset(config.dataset, config.data_dir, val_fraction=config.val_fraction,
                              seed=config.seed, download=config.download, progress=progress)
    except FileNotFoundError as exc:
        raise ConfigError(f"--dataset {config.dataset}: {one_line(exc)}") from exc
    except DownloadError as exc:
        raise ConfigError(f"--download {config.dataset}: {exc}") from exc
    except ValueError as exc:  # corrupt or inconsistent files
        raise ConfigError(f"--dataset {config.dataset}: {one_line(exc)}") from exc


def _epoch_seed(config: RunConfig, epoch: int) -> int:
    return config.seed * 1_000_003 + epoch


def _augment(config: RunConfig, splits: D.Splits) -> Optional[Augment]:
    if not config.augment:
        return None
    info = D.DATASETS[config.dataset]
    mean = splits.mean if isinstance(splits.mean, tuple) else (splits.mean,)
    std = splits.std if isinstance(splits.std, tuple) else (splits.std,)
    return Augment(info.augment_pad, info.augment_flip,
                   fill=tuple(-m / s for m, s in zip(mean, std)))  # raw black, normalised


def build(config: RunConfig, directory: pathlib.Path, *, progress: bool = True) -> Session:
    """Validate, load the data, build model + method + optimizer from ``config`` (seeded)."""
    validate(config)
    methods.check(config.method, config.options, config.density)
    if config.threads:
        torch.set_num_threads(config.threads)
    splits = load_splits(config, progress)
    torch.manual_seed(config.seed)
    try:
        model = build_model(config.model, splits.input_shape, splits.num_classes)
    except ValueError as exc:
        raise ConfigError(f"--model {config.model}: {exc}") from exc
    init_weights(model, config)
    sample = D.loader(splits.train, config.batch_size, shuffle=True, seed=config.seed)
    model = methods.apply(model, config.method, config.options, density=config.density,
                          data=sample)
    hooks = TrainingHooks(model, config)  # before any step: the budget measures C_initial
    optimizer, scheduler, groups = build_optimizer(model, config)
    return Session(config, pathlib.Path(directory), splits, model, optimizer, scheduler, groups,
                   _augment(config, splits), ckpt.TrainState(), hooks)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: torch.utils.data.TensorDataset) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) in eval mode; (nan, nan) for an empty set."""
    if len(dataset) == 0:
        return math.nan, math.nan
    was_training = model.training
    model.eval()
    correct, loss = 0, 0.0
    for x, y in D.loader(dataset, EVAL_BATCH, shuffle=False):
        logits = model(x)
        correct += int((logits.argmax(1) == y).sum())
        loss += F.cross_entropy(logits, y, reduction="sum").item()
    model.train(was_training)
    return correct / len(dataset), loss / len(dataset)


def current_density(model: nn.Module) -> float:
    return sp.sparsity_report(model).density


def train_epoch(s: Session, epoch: int, progress: Optional[bool]) -> dict:
    """One pass over the training split (or its first ``--steps-per-epoch`` batches, in the
    epoch's own seeded order); returns the epoch's training numbers."""
    s.model.train()
    seed = _epoch_seed(s.config, epoch)
    batches = D.loader(s.splits.train, s.config.batch_size, shuffle=True, seed=seed)
    total = len(batches)
    if s.config.steps_per_epoch is not None:
        total = min(total, s.config.steps_per_epoch)
    aug_gen = torch.Generator().manual_seed(seed + 500_009)
    total_loss, correct, seen, times = 0.0, 0, 0, []
    bar = tqdm(itertools.islice(batches, total), total=total,
               desc=f"epoch {epoch}/{s.total_epochs}", leave=False, dynamic_ncols=True,
               mininterval=0.5, disable=(not progress) if progress is not None else None)
    for step, (x, y) in enumerate(bar):
        if s.augment is not None:
            x = s.augment(x, aug_gen)
        start = time.perf_counter()
        logits = s.model(x)
        loss = F.cross_entropy(logits, y)
        extra = s.hooks.extra_loss()
        s.optimizer.zero_grad(set_to_none=True)
        (loss if extra is None else loss + extra).backward()
        s.optimizer.step()
        s.hooks.after_step(x, y)
        times.append(time.perf_counter() - start)
        value = loss.item()
        if not math.isfinite(value):
            bar.close()
            raise RunError(f"training diverged: loss {value} at epoch {epoch}, step {step + 1}; "
                           "try a lower --lr")
        total_loss += value * len(y)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
        if step % 20 == 0 and not bar.disable:
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.3f}",
                            density=f"{current_density(s.model):.4f}")
    bar.close()
    s.state.step_seconds += times
    return {"train_loss": total_loss / seen, "train_acc": correct / seen,
            "step_seconds": statistics.median(times)}


def _temperature(model: nn.Module) -> Optional[float]:
    for _, layer in sp.masked_layers(model):
        t = getattr(layer.method, "temperature", None)
        if isinstance(t, (int, float)):
            return float(t)
    return None


def epoch_row(s: Session, epoch: int, train: dict, seconds: float) -> dict:
    """The metrics.csv row of an epoch that just ended."""
    val_acc, val_loss = evaluate(s.model, s.splits.val)
    report = sp.sparsity_report(s.model, input_shape=s.splits.input_shape)
    row = {"epoch": epoch, "train_loss": train["train_loss"], "train_acc": train["train_acc"],
           "val_loss": None if math.isnan(val_loss) else val_loss,
           "val_acc": None if math.isnan(val_acc) else val_acc,
           "density": report.density, "flop_density": report.flop_density,
           "temperature": _temperature(s.model), "epoch_seconds": seconds,
           "step_seconds": train["step_seconds"]}
    row.update({f"density/{layer.name}": layer.density for layer in report.layers})
    row.update({f"lr/{g['name']}": g["lr"] for g in s.optimizer.param_groups})
    return row


def prepare_directory(directory: pathlib.Path, overwrite: bool) -> None:
    """Create the run directory; refuse to mix two runs unless ``overwrite`` (which removes only
    the files a run writes)."""
    directory = pathlib.Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"--out {directory} exists and is not a directory")
    existing = [f for f in RUN_FILES if (directory / f).exists()]
    if existing and not overwrite:
        raise ConfigError(f"--out {directory} already holds a run ({existing[0]}); continue it "
                          f"with --resume {directory} or pass --overwrite")
    for f in existing:
        path = directory / f
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    directory.mkdir(parents=True, exist_ok=True)


def fit(s: Session, *, progress: Optional[bool], log: Log) -> None:
    """Train from ``s.state.epoch + 1`` to the last epoch with checkpoints, early stopping and
    the methods' pruning rounds."""
    c, st, total = s.config, s.state, s.total_epochs
    has_val = len(s.splits.val) > 0
    budget = c.max_minutes * 60 if c.max_minutes else math.inf
    session_start, wall_before = time.perf_counter(), st.wall_seconds
    spent: list[float] = []  # this session's epochs: the time budget is per session
    for epoch in range(st.epoch + 1, total + 1):
        if spent and sum(spent) + spent[-1] > budget:
            st.stop_reason = (f"time budget: stopped after {st.epoch} of {total} epochs "
                              f"(--max-minutes {c.max_minutes:g})")
            log(st.stop_reason)
            break
        start = time.perf_counter()
        train = train_epoch(s, epoch, progress)
        seconds = time.perf_counter() - start
        spent.append(seconds)
        row = epoch_row(s, epoch, train, seconds)
        st.history.append(row)
        st.epoch = epoch
        improved = has_val and row["val_acc"] > st.best_val
        if improved or not has_val:
            st.best_val = row["val_acc"] if has_val else st.best_val
            st.best_epoch, st.stale = epoch, 0
            if has_val:
                ckpt.save_best(s.directory, s.model)
        else:
            st.stale += 1
        if s.scheduler is not None:
            s.scheduler.step()
        val = f"{100 * row['val_acc']:.2f} %" if has_val else "-"
        log(f"epoch {epoch:3d}/{total}  loss {row['train_loss']:.4f}  "
            f"train acc {100 * row['train_acc']:.2f} %  val acc {val}  "
            f"density {row['density']:.4f}  ({seconds:.1f} s){'  *' if improved else ''}")
        if c.patience and st.stale >= c.patience:
            st.stop_reason = (f"early stopping: val accuracy did not improve for {c.patience} "
                              f"epochs (best {100 * st.best_val:.2f} % at epoch {st.best_epoch})")
        pruned = s.hooks.end_of_epoch(epoch, s.optimizer, row["val_loss"],
                                      lambda model: evaluate(model, s.splits.val)[1])
        st.hooks = s.hooks.state_dict()
        if pruned:
            log(pruned)
            # The final model comes from after the last pruning (the sparsest): the pruned
            # model itself unless a later epoch improves on it.
            st.best_val, st.stale, st.best_epoch = float("-inf"), 0, 0
            ckpt.discard_best(s.directory)
        st.wall_seconds = wall_before + time.perf_counter() - session_start
        ckpt.save(s.directory, s.model, s.optimizer, s.scheduler, st)
        write_metrics(s.directory, st.history)
        if st.stop_reason:
            log(st.stop_reason)
            break
    st.wall_seconds = wall_before + time.perf_counter() - session_start


def start(config: RunConfig, directory: pathlib.Path, *, overwrite: bool = False,
          progress: Optional[bool] = None, log: Log = echo) -> Session:
    """Build and train a new run in ``directory``; returns the trained session."""
    directory = pathlib.Path(directory)
    validate(config)
    methods.check(config.method, config.options, config.density)
    wall = time.perf_counter()
    s = build(config, directory, progress=bool(progress) if progress is not None else True)
    prepare_directory(directory, overwrite)  # after the data loaded: a failure keeps an old run
    config.save(directory)
    s.state.wall_seconds = time.perf_counter() - wall  # data loading and setup count too
    lrs = ", ".join(f"{g['name']} lr {g['lr']:g}" for g in s.optimizer.param_groups)
    log(f"run {directory}: {config.method} on {config.model} / {config.dataset} "
        f"({len(s.splits.train)} train, {len(s.splits.val)} val, {len(s.splits.test)} test); "
        f"{lrs}")
    fit(s, progress=progress, log=log)
    return s


def resume(directory: pathlib.Path, *, epochs: Optional[int] = None,
           patience: Optional[int] = None, max_minutes: Optional[float] = None,
           progress: Optional[bool] = None, log: Log = echo) -> Session:
    """Continue the run in ``directory`` from its checkpoint (optionally with more epochs, another
    patience or time budget) exactly where it stopped."""
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"--resume {directory}: no such directory")
    config = RunConfig.load(directory)
    for name, value in (("epochs", epochs), ("patience", patience), ("max_minutes", max_minutes)):
        if value is not None:
            setattr(config, name, value)
    validate(config)
    setup = time.perf_counter()
    s = build(config, directory, progress=bool(progress) if progress is not None else True)
    if (directory / ckpt.CHECKPOINT).is_file():
        try:
            s.state = ckpt.load(directory, s.model, s.optimizer, s.scheduler)
            s.hooks.load_state_dict(s.state.hooks)
        except (ValueError, RuntimeError, KeyError) as exc:
            raise ConfigError(f"--resume {directory}: {one_line(exc)}") from exc
    if s.state.stop_reason.startswith("time budget") or patience is not None \
            or (epochs is not None and s.total_epochs > s.state.epoch):
        s.state.stop_reason = ""  # a new session has its own budget; more epochs continue a run
    s.state.wall_seconds += time.perf_counter() - setup
    config.save(directory)
    log(f"resuming {directory} after epoch {s.state.epoch} of {s.total_epochs}")
    if not s.state.stop_reason:
        fit(s, progress=progress, log=log)
    return s
