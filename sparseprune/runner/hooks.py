"""What some methods need from the training loop besides forward, backward and step, in one place:

- a budget term added to the loss (:class:`sparseprune.budget.BudgetLoss`) for methods with a
  learned density (reparam, hard_concrete, aslp, supermask) when ``--density`` is given and the
  method does not take the density as an option; ``--budget-strength`` is its lambda (0: none);
- per-step parameter constraints (hard_concrete's log_alpha clamp);
- pruning rounds (magnitude, lottery): ``--epochs`` epochs per round, ``rounds + 1`` rounds in all
  (round 0 trains before the first pruning);
- sensitivity (Tartaglione et al.): the insensitivity-gated decay after every step, and the
  LOBSTER schedule at the end of each epoch: on a validation-loss plateau, the threshold search
  and pruning (:mod:`sparseprune.sensitivity`).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor, nn

import sparseprune as sp
from sparseprune.methods.base import MaskMethod
from sparseprune import sensitivity as sens
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
        kinds = {l.method.name: l.method for _, l in sp.masked_layers(model)}
        self.hard_concrete = "hard_concrete" in kinds
        self.plateau: Optional[sens.Plateau] = None
        if "sensitivity" in kinds:
            if config.val_fraction == 0:
                raise ConfigError("--method sensitivity needs a validation split (its threshold "
                                  "search measures the validation loss): --val-fraction > 0")
            self.plateau = sens.Plateau(kinds["sensitivity"].plateau_patience)
            self.tolerance = kinds["sensitivity"].threshold_tolerance
        self.rounds = methods.rounds(config)
        if self.rounds and config.patience:
            raise ConfigError(f"--patience does not apply to --method {config.method}: each of its "
                              "rounds trains --epochs epochs")
        self.epochs_per_round = config.epochs
        self.total_epochs = methods.total_epochs(config)

    def extra_loss(self) -> Optional[Tensor]:
        return self.budget() if self.budget is not None else None

    def after_step(self, inputs: Tensor, labels: Tensor) -> None:
        if self.hard_concrete:
            constrain_(self.model)
        if self.plateau is not None:
            sens.sensitivity_step(self.model, inputs, labels)

    def end_of_epoch(self, epoch: int, optimizer: torch.optim.Optimizer, val_loss: Optional[float],
                     evaluate: Callable[[nn.Module], float]) -> Optional[str]:
        """Prune if the schedule says so (the end of a round but the last; a sensitivity plateau
        of ``val_loss``, ``evaluate(model)`` giving the validation loss for the threshold
        search); returns a line for the log when something was pruned, else None."""
        if self.plateau is not None and val_loss is not None and self.plateau.update(val_loss):
            threshold = sens.search_threshold(self.model, evaluate, tolerance=self.tolerance)
            pruned = sum(sens.threshold_(self.model, threshold, optimizer=optimizer).values())
            return (f"validation loss plateau: pruned {pruned} weights below |w| < "
                    f"{threshold:.4g}, density {sp.sparsity_report(self.model).density:.4f}")
        if not self.rounds or epoch % self.epochs_per_round or epoch >= self.total_epochs:
            return None
        result = sp.schedules.prune_round(self.model, optimizer)
        return f"pruning round {result.round}/{self.rounds}: density {result.density:.4f}"

    def state_dict(self) -> dict:
        """What must survive a checkpoint (the plateau detector's memory)."""
        if self.plateau is None:
            return {}
        return {"plateau_best": self.plateau.best, "plateau_bad": self.plateau.bad_updates}

    def load_state_dict(self, state: dict) -> None:
        if self.plateau is not None and state:
            self.plateau.best, self.plateau.bad_updates = state["plateau_best"], state["plateau_bad"]
