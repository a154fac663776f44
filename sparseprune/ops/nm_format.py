"""The N:M weight layout (format ``"nm"``) of the sparse inference path, in pure PyTorch.

A ``rows x cols`` weight keeping at most ``n`` of every ``m`` consecutive inputs (``cols % m == 0``;
the groups of :func:`sparseprune.select.nm_groups`) is stored as exactly ``n`` slots per group, in
the three tensors every format has:

- ``values``: ``rows * cols / m * n`` values (float32, or bfloat16 for a bfloat16 weight), row
  after row, group after group, the slots of a group in ascending position; a group keeping fewer
  than ``n`` fills its other slots with zeros at its lowest free positions;
- ``row_ptr``: int32 ``arange(rows + 1) * slots_per_row`` (every row holds as many slots);
- ``indices``: int32 words ``(rows, ceil(slots_per_row * bits / 32))``: slot ``j`` of a row has its
  in-group position in the ``bits``-wide field at bit ``(j % (32 / bits)) * bits`` of word
  ``j // (32 / bits)``; ``bits`` is 1 (m = 2), 2 (m <= 4) or 4 (m <= 8), so no field straddles
  two words. Unused bits are 0.

At 2:4 in float32 that is 4 bytes and 2 bits per kept weight: 0.53x the dense bytes. The kernels
(``sparseprune::nm_linear``) trust a validated layout (:func:`validate`).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

VALUE_DTYPES = (torch.float32, torch.bfloat16)
# The patterns :func:`detect` tries, in order: M = 4 then 8, with N the most any group keeps, up to
# M / 2 (denser weights gain nothing from the format).
DETECT_M = (4, 8)


def index_bits(m: int) -> int:
    return 1 if m <= 2 else 2 if m <= 4 else 4


def slots_per_row(cols: int, pattern: tuple[int, int]) -> int:
    n, m = pattern
    return cols // m * n


def words_per_row(cols: int, pattern: tuple[int, int]) -> int:
    return (slots_per_row(cols, pattern) * index_bits(pattern[1]) + 31) // 32


def _max_kept(weight: Tensor, m: int) -> int:
    rows, cols = weight.shape
    return int((weight != 0).view(rows, cols // m, m).sum(-1).max()) if weight.numel() else 0


def detect(weight: Tensor) -> Optional[tuple[int, int]]:
    """The N:M pattern a 2-D weight (zeros = pruned) follows, ``(n, m)``, or None: for M = 4, then
    8 (input size a multiple of M), N = the most any group of M consecutive inputs keeps, if at
    most M / 2."""
    if weight.dim() != 2:
        return None
    for m in DETECT_M:
        if weight.shape[1] % m == 0:
            n = _max_kept(weight, m)
            if n <= m // 2:
                return max(n, 1), m
    return None


def why_not(weight: Tensor) -> str:
    """Why :func:`detect` finds no pattern (for error messages and the sparsity report)."""
    if weight.dim() != 2:
        return f"the weight is {weight.dim()}-D"
    found = [f"a group of {m} keeps {_max_kept(weight, m)}" for m in DETECT_M
             if weight.shape[1] % m == 0]
    if not found:
        return f"in_features = {weight.shape[1]} is not a multiple of " \
            + " or ".join(map(str, DETECT_M))
    return "; ".join(found) + " (the format needs at most M / 2 of every M)"


def compress(weight: Tensor, pattern: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
    """``(values, row_ptr, indices)`` of a 2-D weight following ``pattern`` (ValueError if not)."""
    n, m = pattern
    rows, cols = weight.shape
    if cols % m:
        raise ValueError(f"nm format: in_features = {cols} is not a multiple of M = {m}")
    weight = weight.detach()
    dtype = weight.dtype if weight.dtype in VALUE_DTYPES else torch.float32
    groups = weight.reshape(rows, cols // m, m)
    kept = groups != 0
    if kept.numel() and int(kept.sum(-1).max()) > n:
        raise ValueError(f"nm format: the weight is not {n}:{m} (a group of {m} consecutive inputs "
                         f"keeps {int(kept.sum(-1).max())})")
    # n positions per group: the kept ones, then the lowest free ones; in ascending order.
    order = (~kept).to(torch.int64) * m + torch.arange(m, device=weight.device)
    positions = torch.sort(torch.argsort(order, dim=-1)[..., :n], dim=-1).values  # (rows, G, n)
    values = torch.gather(groups, -1, positions).to(dtype).reshape(-1).contiguous()
    k = slots_per_row(cols, pattern)
    row_ptr = (torch.arange(rows + 1, device=weight.device) * k).to(torch.int32)
    return values, row_ptr, _pack(positions.reshape(rows, k), index_bits(m),
                                  words_per_row(cols, pattern))


def _pack(positions: Tensor, bits: int, words: int) -> Tensor:
    rows, k = positions.shape
    per_word = 32 // bits
    padded = torch.zeros(rows, words * per_word, dtype=torch.int64, device=positions.device)
    padded[:, :k] = positions
    shifts = torch.arange(per_word, device=positions.device) * bits
    packed = (padded.view(rows, words, per_word) << shifts).sum(-1)  # in [0, 2^32)
    return torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32)


def positions(indices: Tensor, pattern: tuple[int, int], cols: int) -> Tensor:
    """The in-group position of every slot, ``(rows, slots_per_row)`` int64."""
    bits = index_bits(pattern[1])
    per_word = 32 // bits
    rows, words = indices.shape
    shifts = torch.arange(per_word, device=indices.device, dtype=torch.int32) * bits
    fields = (indices.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)  # arithmetic shift: low bits ok
    return fields.reshape(rows, words * per_word)[:, :slots_per_row(cols, pattern)].to(torch.int64)


def to_dense(values: Tensor, indices: Tensor, pattern: tuple[int, int], rows: int,
             cols: int) -> Tensor:
    """The dense ``rows x cols`` weight (the values' dtype), zeros where pruned."""
    n, m = pattern
    k = slots_per_row(cols, pattern)
    column = (torch.arange(k, device=values.device) // n * m) + positions(indices, pattern, cols)
    dense = torch.zeros(rows, cols, dtype=values.dtype, device=values.device)
    return dense.scatter_(1, column, values.view(rows, k))


def validate(values: Tensor, row_ptr: Tensor, indices: Tensor, pattern: Optional[tuple[int, int]],
             rows: int, cols: int, what: str) -> None:
    """Raise ValueError / TypeError unless the tensors are a well-formed ``rows x cols`` weight in
    the nm layout of ``pattern`` (the kernels then never read out of bounds)."""
    if pattern is None:
        raise ValueError(f"{what}: the nm format needs its pattern (N, M)")
    n, m = pattern
    if not (isinstance(n, int) and isinstance(m, int) and 1 <= n < m <= 8):
        raise ValueError(f"{what}: the nm pattern must have 1 <= N < M <= 8, got {pattern!r}")
    if cols % m:
        raise ValueError(f"{what}: an {n}:{m} weight needs in_features a multiple of {m}, got "
                         f"{cols}")
    for name, t, dtypes in (("values", values, VALUE_DTYPES), ("row_ptr", row_ptr, (torch.int32,)),
                            ("indices", indices, (torch.int32,))):
        if not isinstance(t, Tensor) or t.dtype not in dtypes:
            got = t.dtype if isinstance(t, Tensor) else type(t).__name__
            raise TypeError(f"{what}: nm {name} must be a {' or '.join(map(str, dtypes))} tensor, "
                            f"got {got}")
    k = slots_per_row(cols, pattern)
    if values.shape != (rows * k,):
        raise ValueError(f"{what}: nm values must have shape ({rows * k},) ({n} per group of {m}), "
                         f"got {list(values.shape)}")
    expected = (torch.arange(rows + 1) * k).to(torch.int32)
    if row_ptr.shape != (rows + 1,) or not torch.equal(row_ptr.cpu(), expected):
        raise ValueError(f"{what}: nm row_ptr must be 0, {k}, 2 * {k}, ... ({rows + 1} entries)")
    words = words_per_row(cols, pattern)
    if indices.shape != (rows, words):
        raise ValueError(f"{what}: nm indices must have shape ({rows}, {words}), got "
                         f"{list(indices.shape)}")
    if rows * k == 0:
        return
    pos = positions(indices, pattern, cols).view(rows, cols // m, n)
    if bool((pos >= m).any()):
        raise ValueError(f"{what}: nm indices hold an in-group position >= M = {m}")
    if n > 1 and bool((pos[..., 1:] <= pos[..., :-1]).any()):
        raise ValueError(f"{what}: nm positions must be strictly ascending within each group")
