"""Pruning methods: each one a :class:`MaskMethod` registered under its name."""

from . import (edge_popup, fixed, hard_concrete, iterative, reparam,  # noqa: F401  (register them)
               sensitivity, stochastic)
from .base import MaskMethod, available, create, register

__all__ = ["MaskMethod", "available", "create", "register"]
