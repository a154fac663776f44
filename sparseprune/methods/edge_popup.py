"""Edge-Popup (Ramanujan et al., CVPR 2020): keep the top-k |scores| of each layer.
Formulas and defaults: docs/METHODS.md 3."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import torch
from torch import Tensor

from .. import _validate as V
from .. import functional as SF
from ..select import select_top
from .base import MaskMethod, Recipe, register
from .init import init_weight_, kaiming_uniform_scores

if TYPE_CHECKING:  # pragma: no cover
    from ..nn.masked import MaskedLayer


@register
class EdgePopup(MaskMethod):
    """One real score per weight; the layer keeps exactly ``round(density * numel)`` weights with
    the largest ``|scores|`` (ties in index order), the gradient ``sign(scores) * w * g`` passes
    straight through the selection. Deterministic: training, eval and the final mask agree.

    Options:
        density: fraction of the layer's weights kept (hidden-networks' ``prune_rate``).
        weight_init: ``None`` (keep the weights), ``"kaiming_normal"`` or ``"signed_constant"``
            (the Signed Kaiming Constant ``sign(w) * sqrt(2 / fan_in)``).
        scale_fan: with the signed constant, use ``fan_in * density`` (hidden-networks).
        train_weights: leave the weights and bias trainable (the paper freezes them).
        scores_dtype: dtype of the scores (default: the weight's).
        pattern: ``"N:M"``: keep the top N ``|scores|`` of every M consecutive input weights
            instead (:class:`sparseprune.methods.nm.PatternEdgePopup`; density fixed at N/M).
        prior: ``"magnitude"`` starts the scores at ``|w|`` (the magnitude mask).

    Scores start at ``kaiming_uniform_(a=sqrt(5))``.
    """

    name = "edge_popup"
    density_role = "option"
    score_label = "|score|"
    recipe = Recipe({"scores": 0.1}, weight_decay=1e-4, lr_schedule="cosine",
                    source="METHODS.md 3.4 (hidden-networks small-scale configs)")

    def __init__(self, density: float = 0.5, weight_init: Optional[str] = None,
                 scale_fan: bool = False, train_weights: bool = False,
                 scores_dtype: Optional[torch.dtype] = None, pattern: Optional[str] = None,
                 prior: Optional[str] = None):
        self.density = V.density(density)
        self.pattern = None if pattern is None else V.pattern(pattern)
        self.prior = V.choice("prior", prior, (None, "magnitude"))
        V.choice("weight_init", weight_init, V.WEIGHT_INITS)
        if scale_fan and weight_init != "signed_constant":
            raise ValueError("scale_fan applies to weight_init='signed_constant', got "
                             f"weight_init={weight_init!r}")
        self.scores_dtype = V.scores_dtype(scores_dtype)
        self.weight_init = weight_init
        self.scale_fan = bool(scale_fan)
        self.train_weights = bool(train_weights)

    def attach(self, layer: "MaskedLayer") -> None:
        if layer.weight.numel() == 0:
            raise ValueError(f"edge_popup needs a layer with weights to select from, got weight of "
                             f"shape {tuple(layer.weight.shape)}")
        init_weight_(layer.weight, self.weight_init, self.density if self.scale_fan else 1.0)
        if self.prior == "magnitude":
            scores = layer.weight.detach().abs().to(self.scores_dtype or layer.weight.dtype).clone()
        else:
            scores = kaiming_uniform_scores(layer.weight, self.scores_dtype)
        layer.scores = torch.nn.Parameter(scores)
        layer.weight.requires_grad_(self.train_weights)
        if layer.bias is not None:
            layer.bias.requires_grad_(self.train_weights)

    def weight(self, layer: "MaskedLayer") -> Tensor:
        return SF.edge_popup_weight(layer.weight, layer.scores, density=self.density)

    def forward(self, layer: "MaskedLayer", input: Tensor) -> Tensor:
        if layer.fusable:
            return layer.fused(input, "edge_popup", density=self.density)
        return layer.dense(input, self.weight(layer))

    def final_mask(self, layer: "MaskedLayer") -> Tensor:
        return select_top([self.ranking_scores(layer)], self.density)[0]

    def ranking_scores(self, layer: "MaskedLayer") -> Tensor:
        return layer.scores.detach().abs()
