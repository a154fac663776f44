"""Pruning methods: each one a :class:`MaskMethod` registered under its name, with its training
contract (:class:`Recipe`, :class:`TrainingHooks`, ``density_role``)."""

from . import (edge_popup, fixed, hard_concrete, iterative, nm,  # noqa: F401  (register them)
               reparam, sensitivity, stochastic)
from .base import MaskMethod, Recipe, TrainingHooks, available, create, get, register

__all__ = ["MaskMethod", "Recipe", "TrainingHooks", "available", "create", "get", "register"]
