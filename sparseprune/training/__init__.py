"""Helpers for a training loop of your own: budget losses that steer a learned density
(:mod:`.budget`) and the train–prune–retrain loop (:mod:`.schedules`). What a method needs from
the loop is its training contract (:class:`sparseprune.methods.TrainingHooks`)."""

from . import budget, schedules

__all__ = ["budget", "schedules"]
