"""References of the N:M inference op (format ``"nm"``): the layout decoded slot by slot, written
apart from :mod:`sparseprune.ops.nm_format` so that the tests check one against the other."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def nm_dense_weight(values: Tensor, indices: Tensor, n: int, m: int,
                    weight_shape: Sequence[int]) -> Tensor:
    """The dense float32 weight of an nm-layout one: slot j of row r (group j // n) sits at column
    (j // n) * m + the bits-wide field j % (32 // bits) of word j // (32 // bits)."""
    rows, cols = weight_shape
    bits = 1 if m <= 2 else 2 if m <= 4 else 4
    per_word = 32 // bits
    slots = cols // m * n
    words = indices.to(torch.int64) & 0xFFFFFFFF
    j = torch.arange(slots)
    fields = (words[:, j // per_word] >> ((j % per_word) * bits)) & ((1 << bits) - 1)
    column = (j // n) * m + fields  # (rows, slots)
    weight = torch.zeros(rows, cols, dtype=torch.float32)
    weight.scatter_add_(1, column, values.float().view(rows, slots))
    return weight


def nm_linear(input: Tensor, values: Tensor, indices: Tensor, bias: Optional[Tensor], n: int,
              m: int, weight_shape: Sequence[int]) -> Tensor:
    """Reference for :func:`sparseprune.ops.nm_linear`: float32 math, the input's dtype out."""
    weight = nm_dense_weight(values.cpu(), indices.cpu(), n, m, weight_shape).to(input.device)
    out = F.linear(input.float(), weight, None if bias is None else bias.float())
    return out.to(input.dtype)
