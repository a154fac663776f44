"""Helpers for a training loop of your own: budgets that hold a learned density at a target
(:mod:`.budget`: the constrained :class:`~.budget.Budget` and the penalty
:class:`~.budget.BudgetLoss`) and the train–prune–retrain loop (:mod:`.schedules`). What a
method needs from the loop is its training contract (:class:`sparseprune.methods.TrainingHooks`)."""

from . import budget, schedules

__all__ = ["budget", "schedules"]
