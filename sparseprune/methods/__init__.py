"""Pruning methods: each one a :class:`MaskMethod` registered under its name."""

from . import aslp, fixed  # noqa: F401  (registers "aslp", "fixed")
from .base import MaskMethod, available, create, register

__all__ = ["MaskMethod", "available", "create", "register"]
