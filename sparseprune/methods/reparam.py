"""Budget-aware weight reparametrisation (Dupont, Sahbi, Michel, ICIP 2021): the weights are
trained as usual and the layer computes with ``w_hat = w * h_t(w)``. Formulas: docs/METHODS.md 4."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .. import _validate as V
from .. import functional as SF
from .base import MaskMethod, Recipe, register

if TYPE_CHECKING:  # pragma: no cover
    from ..nn.masked import MaskedLayer


@register
class Reparam(MaskMethod):
    """Budget-aware weight reparametrisation: the layer's weight ``w`` stays trainable and the
    layer computes with ``w_hat = w * h_t(w)``, ``h_t(x) = C1 * (exp(-1 / (|t x|^n + 1)) - C2)``
    (C1 = 1 / (1 - e^-1), C2 = e^-1: ``h`` rises from 0 at ``x = 0`` to 1), with one learned scalar
    ``layer.t`` per layer. ``h`` soft-prunes the weights in the pit ``|x| < ~1/t``; the sum of h
    over the model is the cost C that :class:`sparseprune.budget.BudgetLoss` drives to a target.
    The fused op computes ``w_hat`` and the layer's sum of h in one pass, and both gradients
    (weight and t) in one pass back.

    Options:
        t_init: initial ``t`` (100, the slides' value).
        power: the exponent n, an integer >= 1 (4, the slides' value).
        train_t: learn ``t`` (the paper does); ``False`` keeps it fixed.

    Training and eval mode both compute with ``w_hat``. Final mask: ``h >= 0.5`` per layer
    (:func:`sparseprune.finalize` without a density); with ``finalize(model, density=D)`` exactly
    ``round(D * N)`` weights with the largest h are kept over all layers, ranked by ``|t_l w|``
    (the same order as h, without h's saturation at 1). Kept weights carry ``w * h(w)``, so the
    finalized model computes what the reparametrised one did on the kept weights.
    """

    name = "reparam"
    parameter_names = ("t",)
    density_role = "learned"
    score_label = "|t w| (h(w) >= 1/2 kept)"
    recipe = Recipe({"weights": 1e-3, "t": 1.0}, optimizer="adam",
                    source="METHODS.md 4.3 (unconfirmed; t needs its own, larger rate)")

    def __init__(self, t_init: float = 100.0, power: int = 4, train_t: bool = True):
        self.t_init = V.finite_number("t_init", t_init, minimum=0.0, strict=True)
        self.power = V.power(power)
        self.train_t = bool(train_t)
        self._cached = None  # (h_sum, weight, weight version, t, t version) of the last forward

    def __getstate__(self) -> dict:
        # The cached sum carries an autograd graph: never copied or pickled.
        return {k: v for k, v in self.__dict__.items() if k != "_cached"} | {"_cached": None}

    def attach(self, layer: "MaskedLayer") -> None:
        weight = layer.weight
        dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
        layer.t = torch.nn.Parameter(torch.full((1,), self.t_init, dtype=dtype,
                                                device=weight.device),
                                     requires_grad=self.train_t)

    def _weight_and_sum(self, layer: "MaskedLayer") -> tuple[Tensor, Tensor]:
        w_hat, h_sum = SF.reparam_weight(layer.weight, layer.t, power=self.power, return_sum=True)
        self._cached = (h_sum, layer.weight, layer.weight._version, layer.t, layer.t._version)
        return w_hat, h_sum

    def weight(self, layer: "MaskedLayer") -> Tensor:
        return self._weight_and_sum(layer)[0]

    def budget_mass(self, layer: "MaskedLayer") -> Tensor:
        """The layer's sum of h (differentiable): the one the last forward computed if the weight
        and t have not changed since (and it carries a graph when one is needed), else a new
        pass. Use it before the backward of the step's loss (``task + budget``)."""
        cached = self._cached
        if cached is not None:
            h_sum, weight, wv, t, tv = cached
            fresh = (weight is layer.weight and t is layer.t and weight._version == wv
                     and t._version == tv)
            if fresh and (h_sum.requires_grad or not torch.is_grad_enabled()
                          or not (weight.requires_grad or t.requires_grad)):
                return h_sum
        return self._weight_and_sum(layer)[1]

    @torch.no_grad()
    def h(self, layer: "MaskedLayer") -> Tensor:
        """``h_t(w)`` of every weight (float32, float64 for float64 weights)."""
        dtype = torch.float64 if layer.weight.dtype == torch.float64 else torch.float32
        w = layer.weight.detach().to(dtype)
        u = (layer.t.detach().to(dtype) * w).abs() ** self.power
        c2 = torch.exp(torch.tensor(-1.0, dtype=dtype))
        return (torch.exp(-1.0 / (u + 1.0)) - c2) / (1.0 - c2)

    def final_mask(self, layer: "MaskedLayer") -> Tensor:
        return self.h(layer) >= 0.5

    def final_scale(self, layer: "MaskedLayer", mask: Tensor) -> Tensor:
        return self.h(layer)

    def ranking_scores(self, layer: "MaskedLayer") -> Tensor:
        return (layer.t.detach().abs() * layer.weight.detach().abs()).to(layer.t.dtype)
