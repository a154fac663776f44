"""Masked multi-head attention: the packed input projection ``in_proj_weight`` of an
``nn.MultiheadAttention`` is the masked weight; its ``out_proj`` (an ``nn.Linear``) is a masked
layer of its own, converted beside it. Attention with separate query / key / value projections
(``kdim`` or ``vdim`` different from ``embed_dim``) is not covered."""

from __future__ import annotations

from typing import Any, Optional

import torch.nn.functional as F
from torch import Tensor, nn

from ..methods import MaskMethod
from .masked import MaskedLayer


def effective_weight(layer: nn.Module) -> Tensor:
    """The weight ``layer`` computes with now: its method's (masked) weight, or its own."""
    return layer.method.weight(layer) if isinstance(layer, MaskedLayer) else layer.weight


class MaskedMultiheadAttention(MaskedLayer, nn.MultiheadAttention):
    """``nn.MultiheadAttention`` whose ``in_proj_weight`` is masked (``weight`` is an alias of it,
    so ``state_dict`` keys stay the plain module's, plus the method's, e.g. ``scores``)."""

    @property
    def weight(self) -> nn.Parameter:
        return self.in_proj_weight

    @property
    def bias(self):
        return self.in_proj_bias

    @classmethod
    def from_dense(cls, mha: nn.MultiheadAttention, method: str | MaskMethod = "aslp",
                   **options: Any) -> "MaskedMultiheadAttention":
        """A masked layer carrying ``mha``'s own Parameters and ``out_proj`` module."""
        layer = cls(mha.embed_dim, mha.num_heads, mha.dropout, mha.in_proj_bias is not None,
                    mha.bias_k is not None, mha.add_zero_attn, mha.kdim, mha.vdim,
                    mha.batch_first, device="meta")
        for name in ("in_proj_weight", "in_proj_bias", "bias_k", "bias_v"):
            setattr(layer, name, getattr(mha, name))
        layer.out_proj = mha.out_proj
        layer.set_method(method, **options)
        return layer.train(mha.training)

    def to_dense(self, weight: Tensor) -> nn.MultiheadAttention:
        """A plain ``nn.MultiheadAttention`` with ``weight`` as ``in_proj_weight``, copies of the
        other Parameters and this module's ``out_proj``."""
        dense = nn.MultiheadAttention(self.embed_dim, self.num_heads, self.dropout,
                                      self.in_proj_bias is not None, self.bias_k is not None,
                                      self.add_zero_attn, self.kdim, self.vdim, self.batch_first,
                                      device="meta")
        dense.in_proj_weight = nn.Parameter(weight.detach().clone())
        for name in ("in_proj_bias", "bias_k", "bias_v"):
            value = getattr(self, name)
            setattr(dense, name, None if value is None else nn.Parameter(value.detach().clone()))
        dense.out_proj = self.out_proj
        return dense.train(self.training)

    def dense(self, input: Tensor, weight: Tensor) -> Tensor:
        out, _ = self._attention(input, input, input, weight, need_weights=False)
        return out

    def forward(self, query: Tensor, key: Tensor, value: Tensor,
                key_padding_mask: Optional[Tensor] = None, need_weights: bool = True,
                attn_mask: Optional[Tensor] = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Optional[Tensor]]:
        return self._attention(query, key, value, self.method.weight(self),
                               key_padding_mask=key_padding_mask, need_weights=need_weights,
                               attn_mask=attn_mask, average_attn_weights=average_attn_weights,
                               is_causal=is_causal)

    def _attention(self, query: Tensor, key: Tensor, value: Tensor, in_proj_weight: Tensor,
                   **kwargs: Any) -> tuple[Tensor, Optional[Tensor]]:
        """``nn.MultiheadAttention``'s computation with the given input projection and the
        out_proj's effective weight (the slow path: the fast one would read the raw weights)."""
        batched = query.dim() == 3
        if self.batch_first and batched:
            # Keep query / key / value identical objects where they were: one projection GEMM.
            same_kv = key is value
            same_qk = query is key
            query = query.transpose(1, 0)
            key = query if same_qk else key.transpose(1, 0)
            value = key if same_kv else value.transpose(1, 0)
        out, weights = F.multi_head_attention_forward(
            query, key, value, self.embed_dim, self.num_heads, in_proj_weight, self.in_proj_bias,
            self.bias_k, self.bias_v, self.add_zero_attn, self.dropout,
            effective_weight(self.out_proj), self.out_proj.bias, training=self.training,
            **kwargs)
        if self.batch_first and batched:
            out = out.transpose(1, 0)
        return out, weights

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
                f"batch_first={self.batch_first}, {self._method_repr()}")
