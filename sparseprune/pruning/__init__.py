"""Pruning at initialisation and fixed masks: :func:`prune_at_init`, :func:`compute_masks`,
:func:`compute_scores`, :func:`set_masks`, the density schedules. Formulas: docs/METHODS.md
section 9."""

from .args import METHODS, prunable_layers
from .masks import set_masks
from .prune_at_init import compute_masks, compute_scores, prune_at_init
from ..select import SCHEDULES, densities

__all__ = ["prune_at_init", "compute_masks", "compute_scores", "set_masks", "prunable_layers",
           "densities", "METHODS", "SCHEDULES"]
