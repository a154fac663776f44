"""Helpers for a training loop of your own: budgets that hold a learned density at a target
(:mod:`.budget`: the constrained :class:`~.budget.Budget` and the penalty
:class:`~.budget.BudgetLoss`), the train–prune–retrain loop (:mod:`.schedules`), and training
across processes on torch.distributed (:mod:`.distributed`, :mod:`.dcp` for sharded checkpoints).
What a method needs from the loop is its training contract (:class:`sparseprune.methods.TrainingHooks`)."""

from . import budget, dcp, distributed, schedules

__all__ = ["budget", "dcp", "distributed", "schedules"]
