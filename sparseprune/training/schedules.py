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

from typing import Any, Callable, Optional

import torch
from torch import nn

from .. import _validate as V
from ..methods.iterative import (RoundResult, iterative_layers, mask_density, planned_rounds,
                                 prune_round, require_layers, rounds_done)

__all__ = ["RoundResult", "iterative_layers", "rounds_done", "planned_rounds", "prune_round",
           "iterative_prune"]


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
    layers = require_layers(model)
    V.callable_("train", train, "(model, round_index) -> Any")
    rounds = planned_rounds(model) if rounds is None else rounds
    V.positive_int("rounds", rounds, minimum=0)
    history = []
    if rounds_done(model) == 0:
        density, per_layer = mask_density(layers)
        history.append(RoundResult(0, density, per_layer, train(model, 0)))
    while rounds_done(model) < rounds:
        pruned = prune_round(model, optimizer)
        pruned.result = train(model, pruned.round)
        history.append(pruned)
    return history
