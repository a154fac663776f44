"""Pruning methods: each one a :class:`MaskMethod` registered under its name."""

from . import aslp  # noqa: F401  (registers "aslp")
from .base import MaskMethod, available, create, register

__all__ = ["MaskMethod", "available", "create", "register"]
