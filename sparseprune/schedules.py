"""Training schedules of the train–prune–retrain methods ("magnitude", "lottery").

Python::

    model = sp.convert(model, "lottery", rate=0.2, output_rate=0.1, rounds=5)

    def train(model, round_index):          # your usual loop; a fresh optimizer per round
        opt = torch.optim.Adam(model.parameters(), lr=1.2e-3)
        for x, y in loader:
            opt.zero_grad(); F.cross_entropy(model(x), y).backward(); opt.step()
        return evaluate(model)

    history = sp.schedules.iterative_prune(model, train)   # rounds 0..5
    print(history[-1])                                      # round 5: density 0.8**5 per layer

The experiment runner runs the same rounds: ``sparseprune train --method lottery --rounds 5
--epochs E`` trains E epochs per round.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import nn

from .convert import masked_layers
from .methods.iterative import IterativeMask

__all__ = ["RoundResult", "iterative_layers", "rounds_done", "planned_rounds", "prune_round",
           "iterative_prune"]


@dataclass
class RoundResult:
    """What one round of :func:`iterative_prune` ended with."""

    round: int
    density: float                  # kept fraction over the iterative layers
    layer_density: dict[str, float] = field(default_factory=dict)
    result: Any = None              # what the training callable returned

    def __str__(self) -> str:
        return f"round {self.round}: density {self.density:.4f}" + (
            f", {self.result}" if self.result is not None else "")


def iterative_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The masked layers of ``model`` whose method prunes by rounds, in module order. They must
    all use one method with the same ``rounds`` (ValueError otherwise)."""
    layers = [(n, l) for n, l in masked_layers(model) if isinstance(l.method, IterativeMask)]
    kinds = {(type(l.method), l.method.rounds) for _, l in layers}
    if len(kinds) > 1:
        got = sorted(f"{l.method.name}(rounds={l.method.rounds})" for _, l in layers)
        raise ValueError(f"the iterative layers must share one method and rounds, got "
                         f"{', '.join(dict.fromkeys(got))}")
    return layers


def _require(model: nn.Module) -> list[tuple[str, nn.Module]]:
    layers = iterative_layers(model)
    if not layers:
        raise ValueError("model has no layers of an iterative method; convert it first, e.g. "
                         "sp.convert(model, 'lottery') or sp.convert(model, 'magnitude')")
    return layers


def rounds_done(model: nn.Module) -> int:
    """Pruning rounds already applied to ``model`` (0 before the first; stored in the layers'
    ``rounds_done`` buffers, so it survives a checkpoint)."""
    return int(_require(model)[0][1].rounds_done)


def planned_rounds(model: nn.Module) -> int:
    """The method's ``rounds`` option."""
    return _require(model)[0][1].method.rounds


def _density(layers) -> tuple[float, dict[str, float]]:
    kept = {n: int(l.mask.sum()) for n, l in layers}
    total = sum(l.mask.numel() for _, l in layers)
    return sum(kept.values()) / total, {n: kept[n] / l.mask.numel() for n, l in layers}


@torch.no_grad()
def prune_round(model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None) -> RoundResult:
    """Apply the next pruning round to every iterative layer of ``model``: new masks from the
    method's rule (pruned weights set to exactly 0, never revived), then the method's
    after-round step (the lottery ticket's rewind). With ``optimizer``, its state (momentum,
    Adam moments) is cleared, so a pruned weight's old momentum cannot move it."""
    layers = _require(model)
    index = rounds_done(model) + 1
    modules = [l for _, l in layers]
    masks = type(modules[0].method).next_masks(modules, index)
    for layer, mask in zip(modules, masks):
        layer.method.set_mask(layer, mask & layer.mask)  # & : masks only shrink
        layer.method.after_round(layer)
        layer.rounds_done.fill_(index)
    if optimizer is not None:
        optimizer.state.clear()
    density, per_layer = _density(layers)
    return RoundResult(index, density, per_layer)


def iterative_prune(model: nn.Module, train: Callable[[nn.Module, int], Any], *,
                    rounds: Optional[int] = None,
                    optimizer: Optional[torch.optim.Optimizer] = None) -> list[RoundResult]:
    """Train, then ``rounds`` times prune and retrain: ``train(model, 0)``, then for r = 1..R
    :func:`prune_round` and ``train(model, r)``. Returns one :class:`RoundResult` per training
    (round 0 is the dense or initial training).

    ``train(model, round_index)`` is the caller's loop; whatever it returns (e.g. a validation
    accuracy) is kept in the result. ``rounds`` defaults to the method's ``rounds`` option.
    ``optimizer``: one that ``train`` reuses across rounds; its state is cleared after each
    pruning round. A model already pruned ``k >= 1`` rounds is taken as trained in round k: it
    continues with pruning round k + 1.
    """
    layers = _require(model)
    if not callable(train):
        raise TypeError(f"train must be a callable (model, round_index) -> Any, "
                        f"got {type(train).__name__}")
    rounds = planned_rounds(model) if rounds is None else rounds
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise ValueError(f"rounds must be an int >= 0, got {rounds!r}")
    history = []
    if rounds_done(model) == 0:
        density, per_layer = _density(layers)
        history.append(RoundResult(0, density, per_layer, train(model, 0)))
    while rounds_done(model) < rounds:
        pruned = prune_round(model, optimizer)
        pruned.result = train(model, pruned.round)
        history.append(pruned)
    return history
