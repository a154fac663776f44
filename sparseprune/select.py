"""Exact top-k selection across tensors, with deterministic tie-breaking, the kept counts a
density implies, and the density schedules of iterative pruning: the one implementation behind
``finalize(density=...)``, Edge-Popup's final mask, :func:`sparseprune.prune_at_init` and the
train-prune-retrain rounds. Also N:M patterns (docs/METHODS.md 13.0): the groups of M
consecutive weights along a layer's input, the candidate patterns, top-N-of-M and compliance."""

from __future__ import annotations

import itertools
import math
from typing import Optional, Sequence

import torch
from torch import Tensor

from . import _validate


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


def layer_floors(numels: Sequence[int], min_layer_density: float) -> list[int]:
    """``ceil(min_layer_density * N_l)`` per layer (so any positive minimum keeps >= 1 weight)."""
    if min_layer_density <= 0:
        return [0 for _ in numels]
    # round() first: 0.3 * 10 is 3.0000000000000004 in floating point, whose ceil would be 4.
    return [min(n, math.ceil(round(min_layer_density * n, 9))) for n in numels]


def keep_counts(numels: Sequence[int], density: float, scope: str = "global",
                min_layer_density: float = 0.0) -> tuple[int, list[int]]:
    """(total kept, per-layer floors) for ``scope="global"``; (total, per-layer counts) for
    ``"local"``. Global: ``round(density * N)``. Local: ``max(round(density * N_l), floor_l)``.
    ``round`` is Python's (ties to even), as the C++ ``top_k_count``."""
    floors = layer_floors(numels, min_layer_density)
    if scope == "local":
        counts = [max(round(density * n), f) for n, f in zip(numels, floors)]
        return sum(counts), counts
    total = round(density * sum(numels))
    if sum(floors) > total:
        raise ValueError(
            f"min_layer_density={min_layer_density} keeps at least {sum(floors)} weights "
            f"(ceil(min_layer_density * N) per layer), more than density={density} keeps in "
            f"total ({total} of {sum(numels)}); lower min_layer_density or raise density")
    return total, floors


def select_top(scores: Sequence[Tensor], density: float, *, scope: str = "global",
               min_layer_density: float = 0.0,
               alive: Optional[Sequence[Tensor]] = None) -> list[Tensor]:
    """Boolean keep-masks of the largest ``scores`` (one tensor per layer, in layer order).

    ``scope="global"`` keeps exactly ``round(density * N)`` entries over all layers; with
    ``min_layer_density`` each layer first reserves its own ``ceil(min_layer_density * N_l)``
    best and the rest is filled globally. ``scope="local"`` keeps
    ``max(round(density * N_l), ceil(min_layer_density * N_l))`` in each layer. With ``alive``
    (boolean masks), only alive entries can be kept: the selection runs over the alive scores
    alone, in order, so ties still break by position (earlier layer, then lower flat index) and
    late steps of a long schedule rank fewer entries. ``scores`` are not modified.
    """
    scope = _validate.scope(scope)
    scores = list(scores)
    total, per_layer = keep_counts([s.numel() for s in scores], density, scope,
                                   min_layer_density)
    if alive is None:
        return _pick(scores, scope, total, per_layer, scratch=False)
    # Schedules only shrink, so every count fits in the alive entries; min() guards the
    # contract rather than silently reviving.
    candidates = [s.detach()[a] for s, a in zip(scores, alive)]
    if scope == "local":
        per_layer = [min(k, c.numel()) for k, c in zip(per_layer, candidates)]
    total = min(total, sum(c.numel() for c in candidates))
    picked = _pick(candidates, scope, total, per_layer, scratch=True)
    masks = []
    for a, p in zip(alive, picked):
        mask = torch.zeros_like(a)
        mask[a] = p
        masks.append(mask)
    return masks


def _pick(scores: list[Tensor], scope: str, total: int, per_layer: list[int], *,
          scratch: bool) -> list[Tensor]:
    """Top-k masks: ``per_layer`` counts (local) or ``total`` with ``per_layer`` floors reserved
    first in each layer (global). ``scratch``: ``scores`` are copies that may be overwritten."""
    if scope == "local":
        return [top_k_masks([s], k)[0] for s, k in zip(scores, per_layer)]
    if any(per_layer):
        scores = [s if scratch or not floor else s.detach().clone()
                  for s, floor in zip(scores, per_layer)]
        for s, floor in zip(scores, per_layer):
            if floor:
                s.masked_fill_(top_k_masks([s], min(floor, s.numel()))[0], math.inf)
    return top_k_masks(scores, total)


def densities(density: float, iterations: int, schedule: str = "exponential") -> list[float]:
    """The fraction of weights kept after each of ``iterations`` pruning steps, ending at
    ``density``.

    ``"exponential"``: ``d_t = density ** (t / T)``; ``"linear"``:
    ``d_t = 1 - t (1 - density) / T``, for t = 1..T (SynFlow's ``(e + 1) / E`` for
    e = 0..E-1 and FORCE's ``t / T``: the same numbers). The last entry is ``density`` itself,
    exactly (``1 - (1 - d)`` may differ from ``d`` in the last bit, which could move
    ``round(d * N)``).
    """
    density = _validate.density(density)
    _validate.positive_int("iterations", iterations)
    _validate.choice("schedule", schedule, _validate.SCHEDULES)
    steps = range(1, iterations + 1)
    if schedule == "exponential":
        out = [density ** (t / iterations) for t in steps]
    else:
        out = [1.0 - t * (1.0 - density) / iterations for t in steps]
    out[-1] = float(density)
    return out


# ---- N:M patterns ---------------------------------------------------------------------------

def nm_groups(t: Tensor, m: int, *, layer: str = "layer") -> Tensor:
    """``t`` (a weight-shaped tensor, ``[out, in]`` or ``[out, in, kh, kw]``) as ``[G, m]`` rows of
    m consecutive input weights: ``t.view(-1, m)`` for a 2-D weight, ``[out, kh, kw, in]``
    regrouped for a convolution (m consecutive input channels at one kernel tap). A view where
    possible, else a copy. ValueError (naming ``layer``) when the input size is not a multiple
    of m."""
    inputs = t.shape[1] if t.dim() >= 2 else t.shape[-1]
    if t.dim() < 2 or inputs % m:
        raise ValueError(f"{layer}: an N:M pattern with M={m} needs the input size to be a "
                         f"multiple of {m}, got weight shape {list(t.shape)}; leave the layer "
                         "dense with exclude=")
    if t.dim() == 2:
        return t.reshape(-1, m)
    return t.movedim(1, -1).reshape(-1, m)


def nm_ungroup(groups: Tensor, shape: Sequence[int]) -> Tensor:
    """The inverse of :func:`nm_groups`: ``[G, m]`` back to the weight's ``shape``."""
    if len(shape) == 2:
        return groups.reshape(shape)
    out, inputs, *taps = shape
    return groups.reshape(out, *taps, inputs).movedim(-1, 1).contiguous()


def nm_candidates(n: int, m: int, device=None) -> Tensor:
    """The ``[C, m]`` 0/1 pattern matrix of the C(m, n) candidates, in
    ``itertools.combinations(range(m), n)`` order (float32)."""
    combos = list(itertools.combinations(range(m), n))
    out = torch.zeros(len(combos), m, device=device)
    for k, kept in enumerate(combos):
        out[k, list(kept)] = 1.0
    return out


def top_n_of_m(scores: Tensor, n: int, m: int, *, layer: str = "layer") -> Tensor:
    """Boolean mask keeping the ``n`` largest ``scores`` of every N:M group (ties: the lower
    index), the weight's shape. NaN scores raise ValueError."""
    if torch.isnan(scores).any():
        raise ValueError(f"{layer}: scores contain NaN; cannot rank them")
    groups = nm_groups(scores.detach(), m, layer=layer)
    order = torch.argsort(groups, dim=1, descending=True, stable=True)[:, :n]
    keep = torch.zeros(groups.shape, dtype=torch.bool, device=scores.device)
    keep.scatter_(1, order, True)
    return nm_ungroup(keep, scores.shape)


def is_nm(mask: Tensor, n: int, m: int) -> bool:
    """Whether ``mask`` keeps exactly ``n`` of every N:M group (False when the shape cannot be
    grouped)."""
    try:
        groups = nm_groups(mask, m)
    except ValueError:
        return False
    return bool((groups.sum(dim=1) == n).all())
