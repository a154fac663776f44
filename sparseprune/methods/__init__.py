"""Pruning methods: each one a :class:`MaskMethod` registered under its name."""

from . import edge_popup, stochastic  # noqa: F401  (register "aslp", "supermask", "edge_popup")
from .base import MaskMethod, available, create, register

__all__ = ["MaskMethod", "available", "create", "register"]
