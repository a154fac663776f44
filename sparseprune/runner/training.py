"""The training loop of a run: data, model and method, optimizer, epochs with a live progress bar,
validation, early stopping, a checkpoint per epoch, exact resume, and the final evaluation
(:mod:`.finish`).

Randomness: the global torch generator (weight init, the masks' noise) is seeded once and saved in
every checkpoint; each epoch's shuffling and augmentation use generators seeded from
``(seed, epoch)``. A resumed run therefore sees exactly the batches, noise and optimizer state of an
uninterrupted one (on the same thread count).

Under torchrun (:mod:`.ranks`) every rank builds the same model from the same seed, DDP wraps it,
each rank trains on its share of every global batch and evaluates the whole validation split (so
early stopping and pruning decide alike everywhere), and rank 0 alone logs and writes files.
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
from . import sharding
from .ranks import Ranks, loss_for_rank

Log = Callable[[str], None]


def echo(message: str) -> None:
    """The default log: print and flush (runs are long; logs are often files)."""
    print(message, flush=True)

RUN_FILES = ("config.json", "metrics.csv", "final.json", ckpt.CHECKPOINT, ckpt.SHARDED, ckpt.BEST,
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
    pending: bool = True  # False: resume found a finished run and nothing to do
    ranks: Ranks = Ranks()
    wrapped: Optional[nn.Module] = None  # what the training forward calls (DDP); else model
    twin: Optional[nn.Module] = None     # --fsdp: the unsharded model, for the final work

    @property
    def forward(self) -> nn.Module:
        return self.wrapped if self.wrapped is not None else self.model

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


def steps_per_epoch(config: RunConfig, splits: D.Splits) -> int:
    """Training batches per epoch: a full pass, or ``--steps-per-epoch`` if fewer."""
    full = math.ceil(len(splits.train) / config.batch_size)
    return min(full, config.steps_per_epoch) if config.steps_per_epoch else full


def _wrap(model: nn.Module, ranks: Ranks) -> Optional[nn.Module]:
    """DDP around ``model`` on several ranks (it broadcasts rank 0's parameters and buffers,
    the masks' streams included), else None."""
    if not ranks.distributed:
        return None
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model)


def build(config: RunConfig, directory: pathlib.Path, *, progress: bool = True,
          ranks: Ranks = Ranks()) -> Session:
    """Validate, load the data, build model + method + optimizer from ``config`` (seeded)."""
    validate(config)
    methods.check(config.method, config.options, config.density)
    if config.threads:
        torch.set_num_threads(config.threads)
    splits = load_splits(config, progress and ranks.main)
    torch.manual_seed(config.seed)
    try:
        model = build_model(config.model, splits.input_shape, splits.num_classes)
    except ValueError as exc:
        raise ConfigError(f"--model {config.model}: {exc}") from exc
    init_weights(model, config)
    sample = D.loader(splits.train, config.batch_size, shuffle=True, seed=config.seed)
    model = methods.apply(model, config.method, config.options, density=config.density,
                          data=sample)
    hooks = TrainingHooks(model, config, steps_per_epoch(config, splits))  # before any step:
    # the budget measures the initial density
    twin = None
    if config.fsdp:  # before the optimizer: it must hold the shards
        sharding.check(config, ranks, hooks)
        twin = sharding.shard(model)
    optimizer, scheduler, groups = build_optimizer(model, config)
    wrapped = None if config.fsdp else _wrap(model, ranks)
    return Session(config, pathlib.Path(directory), splits, model, optimizer, scheduler, groups,
                   _augment(config, splits), ckpt.TrainState(), hooks, ranks=ranks,
                   wrapped=wrapped, twin=twin)


def _bar(iterable, *, total: int, desc: str, progress: Optional[bool], **kwargs) -> tqdm:
    """A transient tqdm bar (cleared when done); ``progress`` None: only on a terminal."""
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, mininterval=0.5,
                disable=(not progress) if progress is not None else None, **kwargs)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: torch.utils.data.TensorDataset, *,
             progress: Optional[bool] = False, desc: str = "eval") -> tuple[float, float]:
    """(accuracy, mean cross-entropy) in eval mode; (nan, nan) for an empty set. With
    ``progress`` a bar over the batches (shown once the pass has taken 0.5 s, so quick passes do
    not flicker)."""
    if len(dataset) == 0:
        return math.nan, math.nan
    was_training = model.training
    model.eval()
    correct, loss = 0, 0.0
    batches = D.loader(dataset, EVAL_BATCH, shuffle=False)
    for x, y in _bar(batches, total=len(batches), desc=desc, progress=progress, delay=0.5):
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
    bar = _bar(itertools.islice(batches, total), total=total,
               desc=f"epoch {epoch}/{s.total_epochs}", progress=progress if s.ranks.main else False)
    density, density_at = None, -math.inf
    for step, (x, y) in enumerate(bar):
        if s.augment is not None:
            x = s.augment(x, aug_gen)  # the whole global batch: the same draws as one process
        start = time.perf_counter()
        if s.ranks.distributed:
            logits, loss, batch_correct = _rank_step(s, x, y)
        else:
            logits = s.model(x)
            loss = F.cross_entropy(logits, y)
            _backward(s, loss)
            batch_correct = int((logits.argmax(1) == y).sum())
        s.hooks.after_step(x, y)
        times.append(time.perf_counter() - start)
        value = loss.item()
        if not math.isfinite(value):
            bar.close()
            raise RunError(f"training diverged: loss {value} at epoch {epoch}, step {step + 1}; "
                           "try a lower --lr")
        total_loss += value * len(y)
        correct += batch_correct
        seen += len(y)
        if not bar.disable and not s.ranks.distributed:  # a sharded count is collective
            # Every step, drawn at once only on the first: tqdm redraws at most every
            # mininterval, with the latest figures. The density (a pass over every mask) is
            # recomputed as often as that.
            now = time.perf_counter()
            if now - density_at >= bar.mininterval or step + 1 == total:
                density, density_at = current_density(s.model), now
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.3f}",
                            density=f"{density:.4f}", refresh=step == 0)
    bar.close()
    s.state.step_seconds += times
    return {"train_loss": total_loss / seen, "train_acc": correct / seen,
            "step_seconds": statistics.median(times)}


def _backward(s: Session, loss: torch.Tensor) -> None:
    extra = s.hooks.extra_loss()
    s.optimizer.zero_grad(set_to_none=True)
    (loss if extra is None else loss + extra).backward()
    s.optimizer.step()


def _rank_step(s: Session, x: torch.Tensor, y: torch.Tensor):
    """One step on this rank's share of the global batch ``(x, y)``; returns its logits, the
    global batch's mean loss and correct count (summed over ranks: one small collective)."""
    part = s.ranks.share(len(y))
    logits = s.forward(x[part])
    loss_sum = F.cross_entropy(logits, y[part], reduction="sum")
    _backward(s, loss_for_rank(loss_sum, len(y), s.ranks))
    total, correct = s.ranks.all_sum(loss_sum.item(), int((logits.argmax(1) == y[part]).sum()))
    return logits, torch.tensor(total / len(y)), int(correct)


def _temperature(model: nn.Module) -> Optional[float]:
    for _, layer in sp.masked_layers(model):
        t = getattr(layer.method, "temperature", None)
        if isinstance(t, (int, float)):
            return float(t)
    return None


def epoch_row(s: Session, epoch: int, train: dict, seconds: float,
              progress: Optional[bool] = False) -> dict:
    """The metrics.csv row of an epoch that just ended."""
    val_acc, val_loss = evaluate(s.model, s.splits.val, progress=progress and s.ranks.main,
                                 desc=f"epoch {epoch}/{s.total_epochs} validation")
    report = sp.sparsity_report(s.model, input_shape=s.splits.input_shape)
    row = {"epoch": epoch, "train_loss": train["train_loss"], "train_acc": train["train_acc"],
           "val_loss": None if math.isnan(val_loss) else val_loss,
           "val_acc": None if math.isnan(val_acc) else val_acc,
           "density": report.density, "flop_density": report.flop_density,
           "temperature": _temperature(s.model), "epoch_seconds": seconds,
           "step_seconds": train["step_seconds"]}
    row.update(s.hooks.metrics())
    row.update({f"density/{layer.name}": layer.density for layer in report.layers})
    row.update({f"lr/{g['name']}": g["lr"] for g in s.optimizer.param_groups})
    return row


def prepare_directory(directory: pathlib.Path, overwrite: bool, ranks: Ranks = Ranks()) -> None:
    """Create the run directory; refuse to mix two runs unless ``overwrite`` (which removes only
    the files a run writes). Every rank checks, rank 0 writes once all have."""
    directory = pathlib.Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"--out {directory} exists and is not a directory")
    existing = [f for f in RUN_FILES if (directory / f).exists()]
    if existing and not overwrite:
        raise ConfigError(f"--out {directory} already holds a run ({existing[0]}); continue it "
                          f"with --resume {directory} or pass --overwrite")
    ranks.barrier()
    if not ranks.main:
        return
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
        row = epoch_row(s, epoch, train, seconds, progress)
        st.history.append(row)
        st.epoch = epoch
        improved = has_val and row["val_acc"] > st.best_val
        if improved or not has_val:
            st.best_val = row["val_acc"] if has_val else st.best_val
            st.best_epoch, st.stale = epoch, 0
            if has_val:
                ckpt.save_best(s.directory, s.model, s.ranks)
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
            if s.ranks.main:
                ckpt.discard_best(s.directory)
        st.wall_seconds = wall_before + time.perf_counter() - session_start
        ckpt.save(s.directory, s.model, s.optimizer, s.scheduler, st, s.ranks)
        if s.ranks.main:
            write_metrics(s.directory, st.history)
        if st.stop_reason:
            log(st.stop_reason)
            break
    st.wall_seconds = wall_before + time.perf_counter() - session_start


def _quiet(message: str) -> None:
    """The log of ranks other than 0."""


def start(config: RunConfig, directory: pathlib.Path, *, overwrite: bool = False,
          progress: Optional[bool] = None, log: Log = echo, ranks: Ranks = Ranks()) -> Session:
    """Build and train a new run in ``directory``; returns the trained session."""
    directory = pathlib.Path(directory)
    validate(config)
    methods.check(config.method, config.options, config.density)
    log = log if ranks.main else _quiet
    wall = time.perf_counter()
    s = build(config, directory, progress=bool(progress) if progress is not None else True,
              ranks=ranks)
    # After the data loaded: a failure keeps an old run.
    prepare_directory(directory, overwrite, ranks)
    if ranks.main:
        config.save(directory)
    s.state.wall_seconds = time.perf_counter() - wall  # data loading and setup count too
    lrs = ", ".join(f"{g['name']} lr {g['lr']:g}" for g in s.optimizer.param_groups)
    log(f"run {directory}: {config.method} on {config.model} / {config.dataset} "
        f"({len(s.splits.train)} train, {len(s.splits.val)} val, {len(s.splits.test)} test); "
        f"{lrs}")
    fit(s, progress=progress, log=log)
    return s


RESUMABLE = ("epochs", "patience", "max_minutes")  # what --resume may change


def _replan_cosine(s: Session) -> Optional[str]:
    """After ``--epochs`` changed the run's total: a cosine schedule continues on the curve of the
    new total (the learning rate an uninterrupted run of that length would use from here on),
    instead of the old curve's end (lr ~ 0, then rising again). Returns a line for the log."""
    sched = s.scheduler
    if not isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingLR) \
            or sched.T_max == s.config.epochs:
        return None
    old, sched.T_max, t = sched.T_max, s.config.epochs, sched.last_epoch
    cosine = (1 + math.cos(math.pi * t / sched.T_max)) / 2  # the closed form at epoch t
    for group, base in zip(s.optimizer.param_groups, sched.base_lrs):
        group["lr"] = sched.eta_min + (base - sched.eta_min) * cosine
    sched._last_lr = [group["lr"] for group in s.optimizer.param_groups]
    return f"cosine learning-rate schedule re-planned over {sched.T_max} epochs (was {old})"


def _check_resume(directory: pathlib.Path, saved: RunConfig, config: RunConfig, done: int,
                  epochs: Optional[int]) -> None:
    """``--epochs`` on resume is the run's total (as in ``train``), never epochs to add: a total
    below what the run already trained is an error, and so is a change of the epochs per round
    of a method that prunes in rounds once it started (its rounds would shift)."""
    if epochs is None or epochs == saved.epochs:
        return
    rounds = methods.rounds(config)
    if rounds and done:
        raise ConfigError(f"--epochs {epochs}: --method {config.method} trains {rounds + 1} "
                          f"pruning rounds of --epochs epochs each; {directory} trained {done} "
                          f"epochs at {saved.epochs} per round, and its rounds cannot change "
                          "once started (start a new run)")
    total = methods.total_epochs(config)
    if total < done:
        raise ConfigError(f"--epochs {epochs}: {directory} already trained {done} epochs; "
                          "--epochs is the run's total, not epochs to add (to train "
                          f"{epochs} more: --epochs {done + epochs})")


def resume(directory: pathlib.Path, *, epochs: Optional[int] = None,
           patience: Optional[int] = None, max_minutes: Optional[float] = None,
           progress: Optional[bool] = None, log: Log = echo, ranks: Ranks = Ranks()) -> Session:
    """Continue the run in ``directory`` from its checkpoint exactly where it stopped.

    ``epochs`` is the run's new total (the same meaning as in :func:`start`: per pruning round for
    methods that prune in rounds), not a number of epochs to add; below the epochs already trained
    it raises ConfigError. ``patience`` and ``max_minutes`` replace the run's. A change is logged,
    written to ``config.json`` and recorded in the training state (``final.json``'s ``resumes``);
    without one ``config.json`` is left alone. ``session.pending`` is False when there is nothing
    left to train and the run was already finished (``final.json`` exists)."""
    directory = pathlib.Path(directory)
    log = log if ranks.main else _quiet
    if not directory.is_dir():
        raise ConfigError(f"--resume {directory}: no such directory")
    saved = RunConfig.load(directory)
    config = RunConfig.load(directory)
    for name, value in (("epochs", epochs), ("patience", patience), ("max_minutes", max_minutes)):
        if value is not None:
            setattr(config, name, value)
    validate(config)
    setup = time.perf_counter()
    s = build(config, directory, progress=bool(progress) if progress is not None else True,
              ranks=ranks)
    has_checkpoint = ckpt.exists(directory)
    if has_checkpoint:
        try:
            s.state = ckpt.load(directory, s.model, s.optimizer, s.scheduler)
            s.hooks.load_state_dict(s.state.hooks)
        except (ValueError, RuntimeError, KeyError) as exc:
            raise ConfigError(f"--resume {directory}: {one_line(exc)}") from exc
    st, total = s.state, s.total_epochs
    _check_resume(directory, saved, config, st.epoch, epochs)
    changed = {name: [getattr(saved, name), getattr(config, name)] for name in RESUMABLE
               if getattr(saved, name) != getattr(config, name)}
    if st.stop_reason.startswith("time budget") or patience is not None \
            or ("epochs" in changed and total > st.epoch):
        st.stop_reason = ""  # a new session has its own budget; more epochs continue a run
    st.wall_seconds += time.perf_counter() - setup
    if changed:
        what = ", ".join(f"{name} {a} -> {b}" for name, (a, b) in changed.items())
        st.resumes.append({"after_epoch": st.epoch, "changed": changed})
        lines = [f"{directory}/config.json: {what} (recorded in final.json 'resumes')"]
        if "epochs" in changed and (line := _replan_cosine(s)):
            lines.append(line)
        if has_checkpoint:  # the record survives an interruption before the next epoch ends
            ckpt.save(directory, s.model, s.optimizer, s.scheduler, st, s.ranks)
        ranks.barrier()  # every rank has read config.json and the checkpoint before rank 0 writes
        if ranks.main:
            config.save(directory)
        for line in lines:
            log(line)
    to_train = total - st.epoch if not st.stop_reason else 0
    if to_train:
        log(f"resuming {directory} after epoch {st.epoch} of {total}")
        fit(s, progress=progress, log=log)
        return s
    why = f" ({st.stop_reason})" if st.stop_reason else ""
    if not changed and (directory / "final.json").is_file():
        s.pending = False
        log(f"nothing to do: {directory} already trained {st.epoch} of {total} epochs{why}; "
            f"to train more, pass a total above {st.epoch} with --epochs")
    else:
        log(f"nothing left to train in {directory} ({st.epoch} of {total} epochs{why}); "
            "finishing it")
    return s
