"""Masked embeddings (opt-in: ``convert(..., embeddings=True)``): the whole table is masked each
forward, however few rows a batch reads."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ..methods import MaskMethod
from .masked import MaskedLayer, with_parameters

_GEOMETRY = ("num_embeddings", "embedding_dim", "padding_idx", "max_norm", "norm_type",
             "scale_grad_by_freq", "sparse")


class MaskedEmbedding(MaskedLayer, nn.Embedding):
    """``nn.Embedding`` with a learned mask over its table."""

    input_dim = None  # a table, not a map of inputs: no N:M groups

    bias = None  # the masked layers' common interface; an embedding has none

    @classmethod
    def from_dense(cls, embedding: nn.Embedding, method: str | MaskMethod = "aslp",
                   **options: Any) -> "MaskedEmbedding":
        layer = cls(*(getattr(embedding, k) for k in _GEOMETRY), device="meta")
        layer.weight = embedding.weight
        layer.set_method(method, **options)
        return layer.train(embedding.training)

    def to_dense(self, weight: Tensor) -> nn.Embedding:
        dense = nn.Embedding(*(getattr(self, k) for k in _GEOMETRY), device="meta")
        return with_parameters(dense, weight, None).train(self.training)

    def dense(self, input: Tensor, weight: Tensor) -> Tensor:
        return F.embedding(input, weight, self.padding_idx, self.max_norm, self.norm_type,
                           self.scale_grad_by_freq, self.sparse)

    def extra_repr(self) -> str:
        return f"{nn.Embedding.extra_repr(self)}, {self._method_repr()}"
