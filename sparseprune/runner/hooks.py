"""What the training loop runs besides forward, backward and step, asked of the methods:

- a budget toward ``--density`` when every masked layer's method learns its density
  (``density_role == "learned"``): by default the constrained :class:`sparseprune.budget.Budget`
  (own-rule density held by Lagrange multipliers along a cubic schedule over the first 80 % of
  the run's steps, then the masks committed at the exact count); with ``--budget-strength L`` > 0
  the penalty :class:`sparseprune.budget.BudgetLoss` of strength L instead (0: no budget, the
  final top-k alone imposes the density). The budget is told the run's length (steps per epoch
  times epochs) and counts its own steps; its state goes into every checkpoint;
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

BUDGET = "budget"  # the budget's key in the hooks' checkpoint state (no method has this name)


class TrainingHooks:
    """Built once per run from the converted model; the loop calls :meth:`extra_loss` before
    backward, :meth:`after_step` after the optimizer step and :meth:`end_of_epoch` after each
    epoch's metrics (:meth:`metrics` adds to its row). ``steps_per_epoch`` (the training batches
    of one epoch) gives schedules the run's length."""

    def __init__(self, model: nn.Module, config: RunConfig,
                 steps_per_epoch: Optional[int] = None):
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
        self.rounds = methods.rounds(config)
        if self.rounds and config.patience:
            raise ConfigError(f"--patience does not apply to --method {config.method}: each of its "
                              "rounds trains --epochs epochs")
        self.total_epochs = methods.total_epochs(config)
        self.total_steps = steps_per_epoch * self.total_epochs if steps_per_epoch else None
        self.budget: Optional[nn.Module] = None
        learned = bool(layers) and all(layer.method.density_role == "learned" for layer in layers)
        if config.density is not None and learned:
            if config.budget_strength is None:
                self.budget = sp.budget.Budget(model, config.density, scope=config.density_scope,
                                               total_steps=self.total_steps)
            elif config.budget_strength > 0:
                self.budget = sp.budget.BudgetLoss(model, config.density,
                                                   scope=config.density_scope,
                                                   strength=config.budget_strength)
        self._settled = self._budget_settled()

    def _budget_settled(self) -> bool:
        return isinstance(self.budget, sp.budget.Budget) and self.budget.settled()

    def extra_loss(self) -> Optional[Tensor]:
        return self.budget() if self.budget is not None else None

    def metrics(self) -> dict:
        """Extra columns of the epoch's metrics row: the constrained budget's scheduled target,
        the training masks' expected density and the density multiplier."""
        if not isinstance(self.budget, sp.budget.Budget):
            return {}
        dual = self.budget.dual
        return {"budget_target": self.budget.target(),
                "expected_density": self.budget.expected_density(),
                "budget_dual": float(dual[0]) if dual.numel() == 1 else float(dual.mean())}

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
        if not self._settled and self._budget_settled():
            # Epochs before this one trained toward a denser target: like a pruning, the final
            # model is selected from here on.
            self._settled = True
            lines.append(f"budget: the density schedule reached its target {self.budget.density:g} "
                         f"(own rule {self.budget.rule_density():.4f}); the final model is "
                         "selected from the next epochs")
        return "\n".join(lines) if lines else None

    def state_dict(self) -> dict:
        """What must survive a checkpoint (e.g. a plateau detector's memory, the budget's
        multipliers and step), by method (the budget under ``"budget"``)."""
        out = {name: state for name, hooks in self.hooks.items() if (state := hooks.state_dict())}
        if isinstance(self.budget, sp.budget.Budget):
            out[BUDGET] = dict(self.budget.state_dict())
        return out

    def load_state_dict(self, state: dict) -> None:
        for name, hooks in self.hooks.items():
            hooks.load_state_dict(state.get(name, {}))
        if isinstance(self.budget, sp.budget.Budget) and BUDGET in state:
            self.budget.load_state_dict(state[BUDGET])
            self._settled = self._budget_settled()
