"""Exact top-k selection across tensors, with deterministic tie-breaking."""

from __future__ import annotations

import torch
from torch import Tensor


def top_k_masks(scores: list[Tensor], k: int) -> list[Tensor]:
    """Boolean masks keeping exactly the ``k`` largest entries over all of ``scores`` together.

    Ties at the threshold are broken by position: earlier tensors first, then lower flat index.
    NaN scores raise ValueError.
    """
    dtype = torch.float64 if any(s.dtype == torch.float64 for s in scores) else torch.float32
    flat = torch.cat([s.detach().reshape(-1).to(dtype) for s in scores])
    n = flat.numel()
    if not 0 <= k <= n:
        raise ValueError(f"k must be in [0, {n}], got {k}")
    if torch.isnan(flat).any():
        raise ValueError("scores contain NaN; cannot rank them")
    if k == n:
        keep = torch.ones(n, dtype=torch.bool, device=flat.device)
    elif k == 0:
        keep = torch.zeros(n, dtype=torch.bool, device=flat.device)
    else:
        threshold = torch.kthvalue(flat.cpu(), n - k + 1).values.to(flat.device)
        keep = flat > threshold
        ties = torch.nonzero(flat == threshold).flatten()
        keep[ties[: k - int(keep.sum())]] = True
    masks, start = [], 0
    for s in scores:
        masks.append(keep[start:start + s.numel()].reshape(s.shape))
        start += s.numel()
    return masks
