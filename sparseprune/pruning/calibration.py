"""Calibration data and the block-by-block order of one-shot pruning.

Data: ``data`` is an iterable of batches; an item is a tensor (``model(x)``), a tuple or list
(``model(*x)``) or a mapping (``model(**x)``, e.g. a tokenizer's output). A single tensor or a
single mapping is one batch. At most ``batches`` items are read, once, and kept (so a one-shot
generator works); each is moved to the model's device when it is used. A mapping with a 2-D
``attention_mask`` gives the token mask of :mod:`.matrices`: padding tokens are not counted.

Order (docs/METHODS.md 14.3, 15.4): the blocks are the children of the outermost
``nn.ModuleList`` s that hold two or more children with prunable layers (a transformer's layer
stack), or the modules given as ``blocks=``. Prunable layers are split into stages in module
order: one per block, and one per run of layers outside any block. Stages are calibrated and
pruned in order, each on the outputs of the stages before it *after* their pruning, and within
a stage every layer sees the dense stage: a block sees the pruned outputs of the blocks before
it, as in the references.

How the batches reach a stage (:class:`Forwarder`): the first stage runs the whole model (and
checks that every prunable layer is reached before anything changes). When a block calls the
next one directly (checked by hooks on that first forward: block j+1 called once, right after
block j, with block j's output object, unmodified, and block j's other arguments), the inputs
the block received are kept, the pruned block is run on them to make the next block's inputs,
and the next stage runs that block alone, as the references' block loop does: one block's
activations are held, and B blocks cost about 2B block forwards (plus one full forward).
Otherwise each stage runs the whole model again, stopped right after the stage's block (stage
i costs i + 1 block forwards; nothing is held between stages). Both give the same masks.
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


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return a is b
    try:
        return a is b or bool(a == b)
    except Exception:  # noqa: BLE001 - values that cannot be compared are not the same
        return False


class _ChainCheck:
    """Hooks on every block checking, for each batch, that block j+1 is called once, right
    after block j, with block j's output (or its first element) itself, untouched, as its
    first argument and block j's other arguments unchanged: then block j+1's inputs can be
    made from block j's without running the rest of the model."""

    def __init__(self, blocks: list[nn.Module]):
        self.ok = [True] * (len(blocks) - 1)      # pair j: block j -> block j+1
        self.first = [None] * (len(blocks) - 1)   # the next block takes output[0], not output
        self.handles = []
        for j, block in enumerate(blocks):
            self.handles.append(block.register_forward_pre_hook(
                lambda m, args, kwargs, j=j: self._before(j, args, kwargs), with_kwargs=True))
            self.handles.append(block.register_forward_hook(
                lambda m, args, kwargs, out, j=j: self._after(j, args, kwargs, out),
                with_kwargs=True))
        self.start()

    def start(self) -> None:
        self.last: Optional[tuple] = None
        self.calls = [0] * (len(self.ok) + 1)

    def _before(self, j: int, args: tuple, kwargs: dict) -> None:
        self.calls[j] += 1
        if j > 0 and self.ok[j - 1] and not self._follows(j, args, kwargs):
            self.ok[j - 1] = False

    def _follows(self, j: int, args: tuple, kwargs: dict) -> bool:
        if self.last is None or self.last[0] != j - 1 or not args:
            return False
        _, before_args, before_kwargs, out, version = self.last
        if args[0] is out:
            first = False
        elif isinstance(out, (tuple, list)) and out and args[0] is out[0]:
            first = True
        else:
            return False
        if args[0]._version != version or self.first[j - 1] not in (None, first):
            return False
        self.first[j - 1] = first
        return (len(args) == len(before_args) and set(kwargs) == set(before_kwargs)
                and all(_same(a, b) for a, b in zip(args[1:], before_args[1:]))
                and all(_same(v, before_kwargs[k]) for k, v in kwargs.items()))

    def _after(self, j: int, args: tuple, kwargs: dict, out: Any) -> None:
        head = out[0] if isinstance(out, (tuple, list)) and out else out
        version = head._version if isinstance(head, Tensor) else None
        self.last = (j, args, kwargs, out, version)

    def end(self) -> None:
        for j, n in enumerate(self.calls):
            if n != 1:
                for pair in (j - 1, j):
                    if 0 <= pair < len(self.ok):
                        self.ok[pair] = False

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


class Forwarder:
    """Runs the calibration batches for each stage (see the module docstring).

    A stage's statistics come from a forward of the whole model, stopped after the stage's block.
    The first block stage's forward also checks (:class:`_ChainCheck`) whether each block feeds
    the next directly; where it does, the inputs a block received are kept, and once the block is
    pruned it is run on them to make the next block's inputs, so the next stage runs that block
    alone: one block's activations are held, and a chained stack of B blocks costs about 2B
    block forwards instead of B(B+1)/2."""

    def __init__(self, model: nn.Module, batches: list[Any], device: torch.device,
                 blocks: list[str]):
        self.model, self.batches, self.device = model, batches, device
        modules = dict(model.named_modules())
        self.blocks = [modules[b] for b in blocks]
        self.index = {b: i for i, b in enumerate(blocks)}
        self.checked: Optional[_ChainCheck] = None
        self.cache: Optional[list[tuple[tuple, dict]]] = None  # inputs of self.cached, per batch
        self.cached: Optional[str] = None

    @torch.no_grad()
    def run(self, block: Optional[str], on_batch, *, to_the_end: bool = False) -> None:
        """Forward every batch, ``on_batch(batch)`` before each, for the stage of ``block``."""
        if block is not None and self.cached == block:
            module = self.blocks[self.index[block]]
            for batch, (args, kwargs) in zip(self.batches, self.cache):
                on_batch(batch)
                module(*args, **kwargs)
            return
        self.cache, self.cached = None, None
        handles, check, inputs = [], None, []
        if block is not None:
            module = self.blocks[self.index[block]]
            handles.append(module.register_forward_pre_hook(
                lambda m, args, kwargs: inputs.append((args, kwargs)), with_kwargs=True))
            if self.checked is None and len(self.blocks) > 1:
                check = self.checked = _ChainCheck(self.blocks)
                to_the_end = True
            if not to_the_end:
                def stop(m, args, output):
                    raise _StopForward
                handles.append(module.register_forward_hook(stop))
        try:
            for batch in self.batches:
                on_batch(batch)
                if check is not None:
                    check.start()
                try:
                    call(self.model, batch, self.device)
                except _StopForward:
                    pass
                if check is not None:
                    check.end()
        finally:
            for handle in handles:
                handle.remove()
            if check is not None:
                check.remove()
        if block is not None and len(inputs) == len(self.batches):
            self.cache, self.cached = inputs, block

    @torch.no_grad()
    def advance(self, block: Optional[str], next_block: Optional[str]) -> None:
        """After the stage of ``block`` was pruned: if the next stage is the next block and the
        two are chained, make its inputs by running the pruned block on the kept inputs."""
        i = self.index.get(block) if block is not None else None
        chained = (i is not None and self.cached == block and self.checked is not None
                   and i + 1 < len(self.blocks) and next_block is not None
                   and self.index.get(next_block) == i + 1 and self.checked.ok[i])
        if not chained:
            self.cache, self.cached = None, None
            return
        module, first = self.blocks[i], self.checked.first[i]
        cache = []
        for args, kwargs in self.cache:
            out = module(*args, **kwargs)
            cache.append(((out[0] if first else out, *args[1:]), kwargs))
        self.cache, self.cached = cache, next_block
