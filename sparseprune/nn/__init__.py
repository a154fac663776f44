"""Modules: masked layers for training (:class:`MaskedLinear`, :class:`MaskedConv2d`)."""

from .masked import MaskedConv2d, MaskedLayer, MaskedLinear

__all__ = ["MaskedLayer", "MaskedLinear", "MaskedConv2d"]
