"""Pruning methods: each one a :class:`MaskMethod` registered under its name."""

from . import (edge_popup, fixed, hard_concrete, reparam, sensitivity,  # noqa: F401  (register them)
               stochastic)
from .base import MaskMethod, available, create, register

__all__ = ["MaskMethod", "available", "create", "register"]
