"""Calibration data and the block-by-block order of one-shot pruning.

Data: ``data`` is an iterable of batches; an item is a tensor (``model(x)``), a tuple or list
(``model(*x)``) or a mapping (``model(**x)``, e.g. a tokenizer's output). A single tensor or a
single mapping is one batch. At most ``batches`` items are read, once, and kept (so a one-shot
generator works); each is moved to the model's device when it is used. A mapping with a 2-D
``attention_mask`` gives the token mask of :mod:`.matrices`: padding tokens are not counted.

Order (docs/METHODS.md 14.3, 15.4): the blocks are the children of the outermost
``nn.ModuleList`` s that hold two or more children with prunable layers (a transformer's layer
stack), or the modules given as ``blocks=``. Prunable layers are split into stages in module
order: one per block, and one per run of layers outside any block. Each stage is calibrated by
forwarding the calibration batches through the whole model with hooks on that stage's layers
only, after the earlier stages were pruned: a block sees the pruned outputs of the blocks
before it, and within a block every layer sees the dense block, as in the references. The
forward stops right after the stage's block, so stage ``i`` costs the embedding plus ``i + 1``
block forwards and nothing is stored between stages (no activations; only the raw batches).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn

Blocks = Union[None, str, Sequence[Union[str, nn.Module]]]


def read_batches(data: Any, limit: Optional[int]) -> list[Any]:
    """The calibration batches (at most ``limit``), validated; ValueError when there is none."""
    if isinstance(data, (Tensor, Mapping)):
        data = [data]
    try:
        iterator = iter(data)
    except TypeError:
        raise TypeError("data must be an iterable of calibration batches (tensors, tuples or "
                        f"dicts of model inputs), got {type(data).__name__}") from None
    out = []
    for item in iterator:
        if limit is not None and len(out) >= limit:
            break
        if not isinstance(item, (Tensor, tuple, list, Mapping)):
            raise TypeError("each calibration batch must be a tensor (model(x)), a tuple or list "
                            "(model(*x)) or a dict (model(**x)), got an item of type "
                            f"{type(item).__name__}")
        out.append(item)
    if not out:
        raise ValueError("data yielded no calibration batch; pass a non-empty iterable of model "
                         "inputs")
    return out


def _to(value: Any, device: torch.device) -> Any:
    return value.to(device) if isinstance(value, Tensor) else value


def call(model: nn.Module, batch: Any, device: torch.device) -> Any:
    """``model`` applied to one calibration batch (moved to ``device``)."""
    if isinstance(batch, Mapping):
        return model(**{k: _to(v, device) for k, v in batch.items()})
    if isinstance(batch, (tuple, list)):
        return model(*(_to(v, device) for v in batch))
    return model(_to(batch, device))


def token_mask(batch: Any, device: torch.device) -> Optional[Tensor]:
    """The ``attention_mask`` of a mapping batch as a bool ``[batch, seq]`` tensor, or None."""
    if isinstance(batch, Mapping):
        mask = batch.get("attention_mask")
        if isinstance(mask, Tensor) and mask.dim() == 2:
            return mask.to(device=device).bool()
    return None


def _outermost(names: Iterable[str]) -> list[str]:
    names = list(dict.fromkeys(names))
    return [n for n in names
            if not any(o != n and (o == "" or n.startswith(o + ".")) for o in names)]


def find_blocks(model: nn.Module, layer_names: Sequence[str], blocks: Blocks = None) -> list[str]:
    """Qualified names of the blocks, in module order (see the module docstring).

    ``blocks``: None (find the ``nn.ModuleList`` stacks), a glob pattern over module names
    (``"encoder.layer.*"``; the outermost matches), or a sequence of module names or modules.
    """
    modules = dict(model.named_modules())

    def holds_layers(name: str) -> bool:
        return any(layer == name or layer.startswith(name + ".") or name == ""
                   for layer in layer_names)

    if blocks is None:
        found = []
        for name, module in modules.items():
            if isinstance(module, nn.ModuleList):
                children = [f"{name}.{c}" if name else c for c, _ in module.named_children()]
                children = [c for c in children if holds_layers(c)]
                if len(children) >= 2:
                    found += children
        return _outermost(found)
    if isinstance(blocks, str):
        found = [n for n in modules if n and fnmatch.fnmatchcase(n, blocks)]
        if not found:
            raise ValueError(f"blocks={blocks!r} matches no module of the model")
        return _outermost(found)
    ids = {id(m): n for n, m in modules.items()}
    names = []
    for b in blocks:
        name = ids.get(id(b)) if isinstance(b, nn.Module) else b
        if name is None or name not in modules:
            what = type(b).__name__ if isinstance(b, nn.Module) else repr(b)
            raise ValueError(f"blocks: {what} is not a submodule of the model")
        names.append(name)
    order = list(modules)
    return _outermost(sorted(set(names), key=order.index))


@dataclass
class Stage:
    """Layers calibrated and pruned together: one block's, or a run outside every block."""

    block: Optional[str]
    layers: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        if self.block is not None:
            return self.block
        return self.layers[0] if len(self.layers) == 1 else f"{self.layers[0]} .. {self.layers[-1]}"


def stages(layer_names: Sequence[str], blocks: Sequence[str]) -> list[Stage]:
    """Layers (in module order) grouped into stages by the block holding them."""
    out: list[Stage] = []
    for layer in layer_names:
        block = next((b for b in blocks if layer == b or layer.startswith(b + ".")), None)
        if not out or out[-1].block != block:
            out.append(Stage(block))
        out[-1].layers.append(layer)
    return out


class _StopForward(BaseException):
    """Raised after the stage's block ran: the rest of the forward is not needed. A
    BaseException so that a model's ``except Exception`` does not swallow it."""


@torch.no_grad()
def forward_all(model: nn.Module, batches: list[Any], device: torch.device,
                stop_after: Optional[nn.Module], on_batch) -> None:
    """Run every batch through ``model``, calling ``on_batch(batch)`` before each, stopping
    each forward right after ``stop_after`` ran (if given)."""
    handle = None
    if stop_after is not None:
        def stop(module, args, output):
            raise _StopForward
        handle = stop_after.register_forward_hook(stop)
    try:
        for batch in batches:
            on_batch(batch)
            try:
                call(model, batch, device)
            except _StopForward:
                pass
    finally:
        if handle is not None:
            handle.remove()
