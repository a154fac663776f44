"""Pruning at initialisation and fixed masks: :func:`prune_at_init`, :func:`compute_masks`,
:func:`compute_scores`, :func:`set_masks`, the density schedules (docs/METHODS.md section 9); and
one-shot pruning of pretrained models on calibration data: :func:`prune_oneshot` (magnitude,
Wanda, SparseGPT; sections 14-15)."""

from .args import METHODS, prunable_layers
from ..methods.fixed import set_masks
from .prune_at_init import RECIPE, SUPPLIED, compute_masks, compute_scores, options, prune_at_init
from .oneshot import prune_oneshot
from .oneshot_report import LayerResult, OneshotReport
from .._validate import SCHEDULES
from ..select import densities

__all__ = ["prune_at_init", "compute_masks", "compute_scores", "set_masks", "prunable_layers",
           "densities", "METHODS", "SCHEDULES", "RECIPE", "SUPPLIED", "options", "prune_oneshot",
           "OneshotReport", "LayerResult"]
