"""Checkpoints of masked models sharded across processes, with torch.distributed.checkpoint (DCP).

:func:`save` writes what a resumed run needs to continue exactly: the model's state (weights,
scores or logits, scales, the masks' streams and buffers; each rank writes its own shards under
FSDP2, rank 0 the replicated tensors under DDP), the optimizer's state, each masked layer's method
state (:func:`method_states`) and any ``extra`` values. :func:`load` restores them into a model
built and wrapped the same way, on the same number of ranks or another (DCP reshards).

A checkpoint is a directory written whole: DCP writes ``<path>.tmp``, and rank 0 renames it to
``<path>`` once every rank has finished, so ``<path>`` is always the last complete checkpoint even
when a rank dies mid-write. Both functions are collectives (every rank calls them). Without an
initialized process group they work in one process too.
"""

from __future__ import annotations

import io
import pathlib
import shutil
import warnings
from typing import Any, Optional

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (get_model_state_dict,
                                                     get_optimizer_state_dict,
                                                     set_model_state_dict,
                                                     set_optimizer_state_dict)

from ..convert import masked_layers

_SIMPLE = (type(None), bool, int, float, str, torch.Tensor)


def _simple(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(isinstance(v, _SIMPLE) for v in value)
    return isinstance(value, _SIMPLE)


def method_states(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Each masked layer's method attributes that are plain values or tensors (options and any
    state a method keeps between steps, e.g. a schedule position), by layer name."""
    return {name: {k: v for k, v in vars(layer.method).items() if _simple(v)}
            for name, layer in masked_layers(model)}


def restore_method_states(model: nn.Module, states: dict[str, dict[str, Any]]) -> None:
    """Put :func:`method_states`' values back; layers the model lacks raise ValueError."""
    layers = dict(masked_layers(model))
    missing = sorted(set(states) - set(layers))
    if missing:
        raise ValueError(f"checkpoint has method state for layers not in the model: {missing}")
    for name, state in states.items():
        for key, value in state.items():
            setattr(layers[name].method, key, value)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _barrier() -> None:
    if _distributed():
        dist.barrier()


def _blob(value: Any) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    buffer.seek(0)
    return buffer


def _state(model: nn.Module, optimizer: Optional[torch.optim.Optimizer],
           blob: io.BytesIO) -> dict[str, Any]:
    state: dict[str, Any] = {"model": get_model_state_dict(model), "python": blob}
    if optimizer is not None:
        state["optimizer"] = get_optimizer_state_dict(model, optimizer)
    return state


def save(path: str | pathlib.Path, model: nn.Module,
         optimizer: Optional[torch.optim.Optimizer] = None, *,
         extra: Optional[dict[str, Any]] = None) -> pathlib.Path:
    """Write the checkpoint directory ``path`` (replacing an older one; see the module doc).
    ``extra``: plain values and tensors to restore with it (e.g. the step), rank 0's kept."""
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    rank0 = not _distributed() or dist.get_rank() == 0
    if rank0 and tmp.exists():
        shutil.rmtree(tmp)  # a write that a dead rank left half done
    _barrier()
    blob = _blob({"methods": method_states(model), "extra": dict(extra or {})})
    dcp.save(_state(model, optimizer, blob), checkpoint_id=str(tmp), no_dist=not _distributed())
    _barrier()
    if rank0:
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    _barrier()
    return path


def load(path: str | pathlib.Path, model: nn.Module,
         optimizer: Optional[torch.optim.Optimizer] = None) -> dict[str, Any]:
    """Restore :func:`save`'s checkpoint into ``model`` (and ``optimizer``), wrapped as when it was
    saved; returns the ``extra`` values. A missing directory raises FileNotFoundError."""
    path = pathlib.Path(path)
    if not (path / ".metadata").is_file():
        raise FileNotFoundError(f"no complete checkpoint at {path} (no {path / '.metadata'})")
    state = _state(model, optimizer, io.BytesIO())
    with warnings.catch_warnings():  # one process on purpose: torch warns that it assumes so
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(state, checkpoint_id=str(path), no_dist=not _distributed())
    set_model_state_dict(model, state["model"])
    if optimizer is not None:
        set_optimizer_state_dict(model, optimizer, state["optimizer"])
    state["python"].seek(0)
    python = torch.load(state["python"], weights_only=True)
    restore_method_states(model, python["methods"])
    return python["extra"]
