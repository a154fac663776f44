"""What some methods need from the training loop besides forward, backward and step, in one place:

- a budget term added to the loss (:class:`sparseprune.budget.BudgetLoss`) for methods with a
  learned density (reparam, hard_concrete, aslp, supermask) when ``--density`` is given and the
  method does not take the density as an option; ``--budget-strength`` is its lambda (0: none);
- per-step parameter constraints (hard_concrete's log_alpha clamp);
- pruning rounds (magnitude, lottery): ``--epochs`` epochs per round, ``rounds + 1`` rounds in all
  (round 0 trains before the first pruning).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

import sparseprune as sp
from sparseprune.methods.base import MaskMethod
from sparseprune.methods.hard_concrete import constrain_

from . import methods
from .config import ConfigError, RunConfig


def _learns_density(model: nn.Module) -> bool:
    layers = sp.masked_layers(model)
    return bool(layers) and all(type(l.method).budget_mass is not MaskMethod.budget_mass
                                for _, l in layers)


class TrainingHooks:
    """Built once per run from the converted model; the loop calls :meth:`extra_loss` before
    backward, :meth:`after_step` after the optimizer step and :meth:`end_of_epoch` after each
    epoch's metrics."""

    def __init__(self, model: nn.Module, config: RunConfig):
        self.model = model
        self.budget: Optional[sp.budget.BudgetLoss] = None
        if config.density is not None and config.budget_strength > 0 \
                and methods.kind_of(config.method) == "mask" and not methods.takes_density(config.method) \
                and _learns_density(model):
            self.budget = sp.budget.BudgetLoss(model, config.density, scope=config.density_scope,
                                               strength=config.budget_strength)
        self.hard_concrete = any(l.method.name == "hard_concrete"
                                 for _, l in sp.masked_layers(model))
        self.rounds = methods.rounds(config)
        if self.rounds and config.patience:
            raise ConfigError(f"--patience does not apply to --method {config.method}: each of its "
                              "rounds trains --epochs epochs")
        self.epochs_per_round = config.epochs
        self.total_epochs = methods.total_epochs(config)

    def extra_loss(self) -> Optional[Tensor]:
        return self.budget() if self.budget is not None else None

    def after_step(self) -> None:
        if self.hard_concrete:
            constrain_(self.model)

    def end_of_epoch(self, epoch: int, optimizer: torch.optim.Optimizer) -> Optional[str]:
        """Prune at the end of each round but the last; returns a line for the log, or None."""
        if not self.rounds or epoch % self.epochs_per_round or epoch >= self.total_epochs:
            return None
        result = sp.schedules.prune_round(self.model, optimizer)
        return f"pruning round {result.round}/{self.rounds}: density {result.density:.4f}"
