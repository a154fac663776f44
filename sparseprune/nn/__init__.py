"""Modules: masked layers for training (:class:`MaskedLinear`, :class:`MaskedConv2d`) and sparse
layers for inference (:class:`SparseLinear`, :class:`SparseConv2d`)."""

from .masked import MaskedConv2d, MaskedLayer, MaskedLinear
from .sparse import SparseConv2d, SparseLayer, SparseLinear

__all__ = ["MaskedLayer", "MaskedLinear", "MaskedConv2d", "SparseLayer", "SparseLinear",
           "SparseConv2d"]
