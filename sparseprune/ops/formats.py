"""Compressed weight formats of the sparse inference path, in pure PyTorch.

A weight is viewed as a 2-D ``rows x cols`` matrix (a Linear's ``out x in``; a Conv2d's
``out x in/groups*kh*kw``) and stored as three tensors:

- ``values``: float32, the kept (nonzero) weights in row-major order;
- ``row_ptr``: int32, ``rows + 1`` offsets: row n's values are ``values[row_ptr[n]:row_ptr[n+1]]``;
- ``indices``: for ``"csr"`` an int32 column per value (ascending within a row); for ``"bitmap"``
  int32 words of shape ``(rows, ceil(cols / 32))``, bit b of word w set iff column ``32 w + b``
  is kept (bits past ``cols`` are 0).

CSR costs 8 bytes per kept weight; the bitmap 4 bytes per kept weight plus 1 bit per weight, which
is smaller once more than 1/32 of the weights are kept, and its kernels cost the same at any
density. Structure is validated here, once (:func:`validate`); the kernels trust it.

The N:M formats (``"nm"``, and ``"semi_structured"`` which stores the same and runs PyTorch's 2:4
kernels on CUDA) have their layout in :mod:`.nm_format`; the functions here take their
``pattern`` ``(n, m)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from typing import Optional

from .. import _validate as V
from . import nm_format

FORMATS = ("csr", "bitmap")  # the row formats of sparse_linear / sparse_conv2d
NM_FORMATS = ("nm", "semi_structured")
LAYER_FORMATS = FORMATS + NM_FORMATS
_INT32_MAX = 2**31 - 1


def words_per_row(cols: int) -> int:
    return (cols + 31) // 32


def compress(weight: Tensor, format: str,
             pattern: Optional[tuple[int, int]] = None) -> tuple[Tensor, Tensor, Tensor]:
    """``(values, row_ptr, indices)`` of a dense 2-D weight; zeros are the pruned weights. The N:M
    formats take the weight's ``pattern`` (default: :func:`.nm_format.detect`)."""
    V.choice("format", format, LAYER_FORMATS)
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D (rows, cols), got shape {list(weight.shape)}")
    if format in NM_FORMATS:
        pattern = pattern or nm_format.detect(weight)
        if pattern is None:
            raise ValueError(f"format {format!r}: the weight is not N:M "
                             f"({nm_format.why_not(weight)})")
        return nm_format.compress(weight, pattern)
    weight = weight.detach()
    kept = weight != 0
    nnz = int(kept.sum())
    if nnz > _INT32_MAX:
        raise ValueError(f"a weight with {nnz} nonzeros does not fit 32-bit offsets "
                         f"(at most {_INT32_MAX})")
    rows, cols = weight.shape
    row_ptr = torch.zeros(rows + 1, dtype=torch.int32, device=weight.device)
    row_ptr[1:] = torch.cumsum(kept.sum(1), 0)
    values = weight[kept].to(torch.float32).contiguous()
    if format == "csr":
        return values, row_ptr, kept.nonzero()[:, 1].to(torch.int32).contiguous()
    return values, row_ptr, _pack_bits(kept, words_per_row(cols))


def _pack_bits(kept: Tensor, words: int) -> Tensor:
    rows, cols = kept.shape
    padded = torch.zeros(rows, words * 32, dtype=torch.int64, device=kept.device)
    padded[:, :cols] = kept
    weights = torch.bitwise_left_shift(torch.ones(32, dtype=torch.int64, device=kept.device),
                                       torch.arange(32, device=kept.device))
    packed = (padded.view(rows, words, 32) * weights).sum(-1)  # in [0, 2^32)
    return torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32)


def bitmap_mask(indices: Tensor, cols: int) -> Tensor:
    """The boolean mask of bitmap words, columns ``0 .. cols - 1`` (``cols`` may reach the
    padded width ``32 * words`` to see the unused bits of the last word)."""
    rows, words = indices.shape
    shifts = torch.arange(32, device=indices.device)
    bits = torch.bitwise_right_shift(indices.to(torch.int64).unsqueeze(-1) & 0xFFFFFFFF, shifts) & 1
    return bits.view(rows, words * 32)[:, :cols].bool()


def to_dense(values: Tensor, row_ptr: Tensor, indices: Tensor, format: str, rows: int,
             cols: int, pattern: Optional[tuple[int, int]] = None) -> Tensor:
    """The dense ``rows x cols`` weight (the values' dtype), zeros where pruned."""
    if format in NM_FORMATS:
        return nm_format.to_dense(values, indices, pattern, rows, cols)
    dense = torch.zeros(rows, cols, dtype=values.dtype, device=values.device)
    if format == "csr":
        counts = (row_ptr[1:] - row_ptr[:-1]).to(torch.int64)
        row = torch.repeat_interleave(torch.arange(rows, device=values.device), counts)
        dense[row, indices.to(torch.int64)] = values
    else:
        dense[bitmap_mask(indices, cols)] = values
    return dense


def validate(values: Tensor, row_ptr: Tensor, indices: Tensor, format: str, rows: int,
             cols: int, *, what: str = "weight", pattern: Optional[tuple[int, int]] = None) -> None:
    """Raise ValueError / TypeError unless the tensors are a well-formed ``rows x cols`` weight
    in ``format`` (so that the kernels never read out of bounds)."""
    V.choice(f"{what}: format", format, LAYER_FORMATS)
    if format in NM_FORMATS:
        return nm_format.validate(values, row_ptr, indices, pattern, rows, cols, what)
    for name, t, dtype in (("values", values, torch.float32), ("row_ptr", row_ptr, torch.int32),
                           ("indices", indices, torch.int32)):
        if not isinstance(t, Tensor) or t.dtype != dtype:
            got = t.dtype if isinstance(t, Tensor) else type(t).__name__
            raise TypeError(f"{what}: {name} must be a {dtype} tensor, got {got}")
    if values.dim() != 1:
        raise ValueError(f"{what}: values must be 1-D, got shape {list(values.shape)}")
    if row_ptr.shape != (rows + 1,):
        raise ValueError(f"{what}: row_ptr must have shape ({rows + 1},), got {list(row_ptr.shape)}")
    counts = (row_ptr[1:] - row_ptr[:-1]).to(torch.int64)
    if int(row_ptr[0]) != 0 or int(row_ptr[-1]) != values.numel() or bool((counts < 0).any()):
        raise ValueError(f"{what}: row_ptr must rise from 0 to the number of values "
                         f"({values.numel()}), got {int(row_ptr[0])} .. {int(row_ptr[-1])}"
                         + (" and decreasing steps" if bool((counts < 0).any()) else ""))
    if format == "csr":
        _validate_csr(indices, counts, values.numel(), rows, cols, what)
    else:
        _validate_bitmap(indices, counts, rows, cols, what)


def _validate_csr(indices: Tensor, counts: Tensor, nnz: int, rows: int, cols: int,
                  what: str) -> None:
    if indices.shape != (nnz,):
        raise ValueError(f"{what}: csr indices must have one column per value ({nnz}), got shape "
                         f"{list(indices.shape)}")
    if nnz == 0:
        return
    if int(indices.min()) < 0 or int(indices.max()) >= cols:
        raise ValueError(f"{what}: csr column indices must lie in [0, {cols}), got "
                         f"{int(indices.min())} .. {int(indices.max())}")
    # Strictly ascending within each row: every step is positive except where a new row starts.
    steps = indices[1:].to(torch.int64) - indices[:-1].to(torch.int64)
    row_start = torch.zeros(nnz, dtype=torch.bool, device=indices.device)
    starts = torch.cumsum(counts, 0)[:-1]
    row_start[starts[starts < nnz]] = True
    if bool(((steps <= 0) & ~row_start[1:]).any()):
        raise ValueError(f"{what}: csr column indices must be strictly ascending within each row")


def _validate_bitmap(indices: Tensor, counts: Tensor, rows: int, cols: int, what: str) -> None:
    words = words_per_row(cols)
    if indices.shape != (rows, words):
        raise ValueError(f"{what}: bitmap indices must have shape ({rows}, {words}), got "
                         f"{list(indices.shape)}")
    bits = bitmap_mask(indices, words * 32)
    if bool(bits[:, cols:].any()):
        raise ValueError(f"{what}: bitmap has bits set past the last column ({cols})")
    if not torch.equal(bits.sum(1), counts):
        raise ValueError(f"{what}: bitmap bit counts do not match row_ptr")
