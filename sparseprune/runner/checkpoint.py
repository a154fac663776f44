"""Checkpoints that resume a run exactly: model (weights, scores, scales, masks, buffers), each
masked layer's method state, optimizer and scheduler state, the global RNG state and the training
bookkeeping (epoch, history, best epoch, early-stopping counter, timings).

Files are written atomically (temporary file + rename) and read with ``weights_only=True``: they
hold only tensors and plain Python values, so loading one runs no code. A model sharded by
``--fsdp`` checkpoints to the DCP directory ``checkpoint.dcp`` instead (every rank writes its
shards; :mod:`sparseprune.training.dcp`), and ``best.pt`` holds its gathered whole state.
"""

from __future__ import annotations

import os
import pathlib
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import torch
from torch import nn

import sparseprune as sp
from sparseprune.nn.sharded import fsdp_modules
from sparseprune.training import dcp
from sparseprune.training.dcp import method_states, restore_method_states

from .ranks import Ranks

CHECKPOINT = "checkpoint.pt"
SHARDED = "checkpoint.dcp"  # directory
BEST = "best.pt"
FORMAT = 1


@dataclass
class TrainState:
    """Training bookkeeping, saved with every checkpoint."""

    epoch: int = 0                      # epochs completed
    history: list[dict] = field(default_factory=list)  # one metrics row per epoch
    best_val: float = float("-inf")
    best_epoch: int = 0
    stale: int = 0                      # epochs since the last validation improvement
    step_seconds: list[float] = field(default_factory=list)
    wall_seconds: float = 0.0           # all sessions up to this checkpoint
    stop_reason: str = ""
    hooks: dict = field(default_factory=dict)  # the training hooks' state (runner/hooks.py)
    # settings --resume changed: {"after_epoch": E, "changed": {name: [old, new]}}, in order
    resumes: list[dict] = field(default_factory=list)


def _atomic_save(obj: Any, path: pathlib.Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def exists(directory: pathlib.Path) -> bool:
    """Whether ``directory`` holds a complete checkpoint (either kind)."""
    directory = pathlib.Path(directory)
    return (directory / CHECKPOINT).is_file() or (directory / SHARDED / ".metadata").is_file()


def save(directory: pathlib.Path, model: nn.Module, optimizer: torch.optim.Optimizer,
         scheduler: Optional[Any], state: TrainState, ranks: Ranks = Ranks()) -> pathlib.Path:
    """Write ``directory/checkpoint.pt`` (rank 0; every rank may call), or every rank's shards
    of a sharded model to ``directory/checkpoint.dcp``; returns its path."""
    if fsdp_modules(model):
        return dcp.save(pathlib.Path(directory) / SHARDED, model, optimizer, extra={
            "format": FORMAT, "rng": torch.get_rng_state(), "state": asdict(state),
            "scheduler": scheduler.state_dict() if scheduler is not None else None})
    path = pathlib.Path(directory) / CHECKPOINT
    if not ranks.main:
        return path
    _atomic_save({
        "format": FORMAT,
        "model": model.state_dict(),
        "methods": method_states(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": torch.get_rng_state(),
        "state": asdict(state),
    }, path)
    return path


def save_best(directory: pathlib.Path, model: nn.Module, ranks: Ranks = Ranks()) -> None:
    """The model and method states of the best validation epoch (``best.pt``; every rank may
    call, rank 0 writes; a sharded model's whole state is gathered first)."""
    state = sp.distributed.full_state_dict(model) if fsdp_modules(model) else model.state_dict()
    if ranks.main:
        _atomic_save({"format": FORMAT, "model": state, "methods": method_states(model)},
                     pathlib.Path(directory) / BEST)


def discard_best(directory: pathlib.Path) -> None:
    """Forget the best epoch (after pruning, an earlier, denser model must not be selected)."""
    (pathlib.Path(directory) / BEST).unlink(missing_ok=True)


def _read(path: pathlib.Path) -> dict:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or foreign file: say which, not the unpickler's internals
        raise ValueError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a sparseprune checkpoint of format {FORMAT}")
    return payload


def read_state(directory: pathlib.Path) -> TrainState:
    """The training bookkeeping of ``directory/checkpoint.pt`` alone (nothing is restored)."""
    return TrainState(**_read(pathlib.Path(directory) / CHECKPOINT)["state"])


def load(directory: pathlib.Path, model: nn.Module, optimizer: torch.optim.Optimizer,
         scheduler: Optional[Any]) -> TrainState:
    """Restore everything :func:`save` wrote into the given live objects and the global RNG;
    returns the training state."""
    if fsdp_modules(model):
        extra = dcp.load(pathlib.Path(directory) / SHARDED, model, optimizer)
        if extra.get("format") != FORMAT:
            raise ValueError(f"{directory / SHARDED}: not a sparseprune checkpoint of format "
                             f"{FORMAT}")
        if scheduler is not None and extra["scheduler"] is not None:
            scheduler.load_state_dict(extra["scheduler"])
        torch.set_rng_state(extra["rng"])
        return TrainState(**extra["state"])
    payload = _read(pathlib.Path(directory) / CHECKPOINT)
    model.load_state_dict(payload["model"])
    restore_method_states(model, payload["methods"])
    optimizer.load_state_dict(payload["optimizer"])
    if scheduler is not None and payload["scheduler"] is not None:
        scheduler.load_state_dict(payload["scheduler"])
    torch.set_rng_state(payload["rng"])
    return TrainState(**payload["state"])


def load_best(directory: pathlib.Path, model: nn.Module) -> bool:
    """Load ``best.pt`` into ``model`` if it exists; True if it did."""
    path = pathlib.Path(directory) / BEST
    if not path.is_file():
        return False
    payload = _read(path)
    model.load_state_dict(payload["model"])
    restore_method_states(model, payload["methods"])
    return True
