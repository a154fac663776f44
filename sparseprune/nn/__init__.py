"""Modules: masked layers for training (:class:`MaskedLinear`, :class:`MaskedConv2d`,
:class:`MaskedConv1d`, :class:`MaskedHFConv1D`, :class:`MaskedMultiheadAttention`,
:class:`MaskedEmbedding`; :mod:`.coverage` says which plain module becomes which) and sparse layers
for inference (:class:`SparseLinear`, :class:`SparseConv2d`)."""

from .attention import MaskedMultiheadAttention
from .conv import MaskedConv1d, MaskedConv2d
from .embedding import MaskedEmbedding
from .masked import MaskedHFConv1D, MaskedLayer, MaskedLinear
from .sparse import SparseConv2d, SparseLayer, SparseLinear

__all__ = ["MaskedLayer", "MaskedLinear", "MaskedConv2d", "MaskedConv1d", "MaskedHFConv1D",
           "MaskedMultiheadAttention", "MaskedEmbedding", "SparseLayer", "SparseLinear",
           "SparseConv2d"]
