"""Turning per-layer scores into masks: :func:`sparseprune.select.select_top` (exact kept counts,
global or per layer, per-layer minimum densities, no revival) after checking the scores can be
ranked, and the warning for layers left empty."""

from __future__ import annotations

import math
import warnings
from typing import Optional, Sequence

from torch import Tensor

from ..select import select_top


def select_masks(names: Sequence[str], scores: list[Tensor], density: float, *,
                 scope: str = "global", min_layer_density: float = 0.0,
                 alive: Optional[list[Tensor]] = None, method: str = "") -> list[Tensor]:
    """Boolean keep-masks: the largest ``scores`` win, as :func:`sparseprune.select.select_top`
    counts them; ``alive`` (the previous masks) forbids revival. ``scores`` must be finite
    (ValueError naming the layer otherwise)."""
    for name, s in zip(names, scores):
        # amin/amax propagate NaN and need no temporary, unlike isfinite().all().
        low, high = (float(s.amin()), float(s.amax())) if s.numel() else (0.0, 0.0)
        if not (math.isfinite(low) and math.isfinite(high)):
            bad = "NaN" if math.isnan(low) or math.isnan(high) else "infinite"
            raise ValueError(f"{method or 'pruning'}: the scores of layer {name!r} contain {bad} "
                             "values; cannot rank them")
    return select_top(scores, density, scope=scope, min_layer_density=min_layer_density,
                      alive=alive)


def warn_empty_layers(names: Sequence[str], masks: Sequence[Tensor], method: str) -> None:
    """A UserWarning for every layer left with no weight at all."""
    for name, mask in zip(names, masks):
        if mask.numel() and not bool(mask.any()):
            warnings.warn(f"prune_at_init({method!r}): layer {name!r} keeps no weight (density 0): "
                          "it disconnects the network; pass min_layer_density > 0 to keep some",
                          UserWarning, stacklevel=3)
