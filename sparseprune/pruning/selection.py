"""Turning per-layer scores into masks with exact kept counts (global or per layer), optional
per-layer minimum densities, and the rule that pruned weights may not come back.

Every count goes through :func:`sparseprune.select.top_k_masks`: exact, ties broken by position
(layers in module order, then flat index).
"""

from __future__ import annotations

import math
import warnings
from typing import Optional, Sequence

import torch
from torch import Tensor

from ..select import top_k_masks

SCOPES = ("global", "local")


def layer_floors(numels: Sequence[int], min_layer_density: float) -> list[int]:
    """``ceil(min_layer_density * N_l)`` per layer (so any positive minimum keeps >= 1 weight)."""
    if min_layer_density <= 0:
        return [0 for _ in numels]
    # round() first: 0.3 * 10 is 3.0000000000000004 in floating point, whose ceil would be 4.
    return [min(n, math.ceil(round(min_layer_density * n, 9))) for n in numels]


def keep_counts(numels: Sequence[int], density: float, scope: str,
                min_layer_density: float = 0.0) -> tuple[int, list[int]]:
    """(total kept, per-layer floors) for ``scope="global"``; (total, per-layer counts) for
    ``"local"``. Global: ``round(density * N)``. Local: ``max(round(density * N_l), floor_l)``."""
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


def select_masks(names: Sequence[str], scores: list[Tensor], density: float, *,
                 scope: str = "global", min_layer_density: float = 0.0,
                 alive: Optional[list[Tensor]] = None, method: str = "") -> list[Tensor]:
    """Boolean keep-masks: the largest ``scores`` win.

    ``scope="global"`` keeps exactly ``round(density * N)`` weights over all layers; with
    ``min_layer_density`` each layer first reserves its own ``ceil(min_layer_density * N_l)``
    best weights and the rest is filled globally. ``scope="local"`` keeps
    ``max(round(density * N_l), ceil(min_layer_density * N_l))`` in each layer. With ``alive``
    (the previous masks), only alive weights can be kept (no revival): the selection runs over
    the alive scores alone (in order, so ties still break by position), which also makes late
    steps of a long schedule cheaper. ``scores`` must be finite (ValueError naming the layer
    otherwise) and may be overwritten (used as scratch space).
    """
    for name, s in zip(names, scores):
        # amin/amax propagate NaN and need no temporary, unlike isfinite().all().
        low, high = (float(s.amin()), float(s.amax())) if s.numel() else (0.0, 0.0)
        if not (math.isfinite(low) and math.isfinite(high)):
            bad = "NaN" if math.isnan(low) or math.isnan(high) else "infinite"
            raise ValueError(f"{method or 'pruning'}: the scores of layer {name!r} contain {bad} "
                             "values; cannot rank them")
    numels = [s.numel() for s in scores]
    total, per_layer = keep_counts(numels, density, scope, min_layer_density)
    if alive is None:
        return _pick(scores, scope, total, per_layer)
    # Schedules only shrink, so every count fits in the alive weights; min() guards the
    # contract rather than silently reviving.
    candidates = [s[a] for s, a in zip(scores, alive)]
    if scope == "local":
        per_layer = [min(k, c.numel()) for k, c in zip(per_layer, candidates)]
    total = min(total, sum(c.numel() for c in candidates))
    picked = _pick(candidates, scope, total, per_layer)
    masks = []
    for a, p in zip(alive, picked):
        mask = torch.zeros_like(a)
        mask[a] = p
        masks.append(mask)
    return masks


def _pick(scores: list[Tensor], scope: str, total: int, per_layer: list[int]) -> list[Tensor]:
    """Top-k masks: ``per_layer`` counts (local) or ``total`` with ``per_layer`` floors reserved
    first in each layer (global)."""
    if scope == "local":
        return [top_k_masks([s], k)[0] for s, k in zip(scores, per_layer)]
    if any(per_layer):
        scores = [s.clone() if floor else s for s, floor in zip(scores, per_layer)]
        for s, floor in zip(scores, per_layer):
            if floor:
                s.masked_fill_(top_k_masks([s], min(floor, s.numel()))[0], math.inf)
    return top_k_masks(scores, total)


def warn_empty_layers(names: Sequence[str], masks: Sequence[Tensor], method: str) -> None:
    """A UserWarning for every layer left with no weight at all."""
    for name, mask in zip(names, masks):
        if mask.numel() and not bool(mask.any()):
            warnings.warn(f"prune_at_init({method!r}): layer {name!r} keeps no weight (density 0): "
                          "it disconnects the network; pass min_layer_density > 0 to keep some",
                          UserWarning, stacklevel=3)
