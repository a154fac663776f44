"""What the training loop runs besides forward, backward and step, asked of the methods:

- a budget term added to the loss (:class:`sparseprune.budget.BudgetLoss`) when ``--density`` is
  given, ``--budget-strength`` > 0 and every masked layer's method learns its density
  (``density_role == "learned"``);
- each method's :class:`~sparseprune.methods.TrainingHooks` (per-step constraints or decays,
  per-epoch pruning), built once per method class over its layers;
- pruning rounds: ``--epochs`` epochs per round, ``rounds + 1`` rounds in all (round 0 trains
  before the first pruning).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor, nn

import sparseprune as sp

from . import methods
from .config import ConfigError, RunConfig


class TrainingHooks:
    """Built once per run from the converted model; the loop calls :meth:`extra_loss` before
    backward, :meth:`after_step` after the optimizer step and :meth:`end_of_epoch` after each
    epoch's metrics."""

    def __init__(self, model: nn.Module, config: RunConfig):
        self.model = model
        layers = [layer for _, layer in sp.masked_layers(model)]
        by_class: dict[type, list] = {}
        for layer in layers:
            by_class.setdefault(type(layer.method), []).append(layer)
        self.hooks = {cls.name: cls.training_hooks(group, epochs_per_round=config.epochs)
                      for cls, group in by_class.items()}
        needs_val = [name for name, h in self.hooks.items() if h.needs_validation]
        if needs_val and config.val_fraction == 0:
            raise ConfigError(f"--method {needs_val[0]} needs a validation split (it reads the "
                              "validation loss): --val-fraction > 0")
        self.budget: Optional[sp.budget.BudgetLoss] = None
        learned = bool(layers) and all(layer.method.density_role == "learned" for layer in layers)
        if config.density is not None and config.budget_strength > 0 and learned:
            self.budget = sp.budget.BudgetLoss(model, config.density, scope=config.density_scope,
                                               strength=config.budget_strength)
        self.rounds = methods.rounds(config)
        if self.rounds and config.patience:
            raise ConfigError(f"--patience does not apply to --method {config.method}: each of its "
                              "rounds trains --epochs epochs")
        self.total_epochs = methods.total_epochs(config)

    def extra_loss(self) -> Optional[Tensor]:
        return self.budget() if self.budget is not None else None

    def after_step(self, inputs: Tensor, labels: Tensor) -> None:
        for hooks in self.hooks.values():
            hooks.after_step(self.model, inputs, labels)

    def end_of_epoch(self, epoch: int, optimizer: torch.optim.Optimizer, val_loss: Optional[float],
                     evaluate: Callable[[nn.Module], float]) -> Optional[str]:
        """Each method's end-of-epoch work (``evaluate(model)`` gives the validation loss);
        returns the lines for the log of what changed the model, or None."""
        lines = [line for hooks in self.hooks.values()
                 if (line := hooks.end_of_epoch(self.model, epoch, optimizer, val_loss,
                                                evaluate)) is not None]
        return "\n".join(lines) if lines else None

    def state_dict(self) -> dict:
        """What must survive a checkpoint (e.g. a plateau detector's memory), by method."""
        return {name: state for name, hooks in self.hooks.items() if (state := hooks.state_dict())}

    def load_state_dict(self, state: dict) -> None:
        for name, hooks in self.hooks.items():
            hooks.load_state_dict(state.get(name, {}))
