"""Checkpoints that resume a run exactly: model (weights, scores, scales, masks, buffers), each
masked layer's method state, optimizer and scheduler state, the global RNG state and the training
bookkeeping (epoch, history, best epoch, early-stopping counter, timings).

Files are written atomically (temporary file + rename) and read with ``weights_only=True``: they
hold only tensors and plain Python values, so loading one runs no code.
"""

from __future__ import annotations

import os
import pathlib
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import torch
from torch import nn

import sparseprune as sp

CHECKPOINT = "checkpoint.pt"
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


_SIMPLE = (type(None), bool, int, float, str, torch.Tensor)


def _simple(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(isinstance(v, _SIMPLE) for v in value)
    return isinstance(value, _SIMPLE)


def method_states(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Each masked layer's method attributes that are plain values or tensors (options and any
    state a method keeps between steps, e.g. a schedule position), by layer name."""
    return {name: {k: v for k, v in vars(layer.method).items() if _simple(v)}
            for name, layer in sp.masked_layers(model)}


def restore_method_states(model: nn.Module, states: dict[str, dict[str, Any]]) -> None:
    layers = dict(sp.masked_layers(model))
    missing = sorted(set(states) - set(layers))
    if missing:
        raise ValueError(f"checkpoint has method state for layers not in the model: {missing}")
    for name, state in states.items():
        for key, value in state.items():
            setattr(layers[name].method, key, value)


def _atomic_save(obj: Any, path: pathlib.Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save(directory: pathlib.Path, model: nn.Module, optimizer: torch.optim.Optimizer,
         scheduler: Optional[Any], state: TrainState) -> pathlib.Path:
    """Write ``directory/checkpoint.pt``; returns its path."""
    path = pathlib.Path(directory) / CHECKPOINT
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


def save_best(directory: pathlib.Path, model: nn.Module) -> None:
    """The model and method states of the best validation epoch (``best.pt``)."""
    _atomic_save({"format": FORMAT, "model": model.state_dict(), "methods": method_states(model)},
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
