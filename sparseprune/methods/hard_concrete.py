"""L0 regularisation with hard-concrete gates (Louizos, Welling, Kingma, ICLR 2018).
Formulas and defaults: docs/METHODS.md 5."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import torch
from torch import Tensor, nn

from .. import _validate as V
from .. import functional as SF
from .base import MaskMethod, Recipe, TrainingHooks, layers_using, register

if TYPE_CHECKING:  # pragma: no cover
    from ..nn.masked import MaskedLayer

STRUCTURES = ("weight", "unit")
LOG_ALPHA_RANGE = (math.log(1e-2), math.log(1e2))  # the reference code's constrain_parameters


@register
class HardConcrete(MaskMethod):
    """Hard-concrete gates with an expected-L0 penalty (Louizos et al.): each gate j has a logit
    ``log_alpha_j`` (``layer.log_alpha``); every training forward samples
    ``z = min(1, max(0, sigmoid((L + log_alpha) / beta) * (zeta - gamma) + gamma))`` with
    L = log(u) - log(1 - u) the project's logistic noise of a fresh ``[seed, offset]`` (the
    stochastic methods' Philox stream and conventions), and the layer computes with ``w * z``.
    Exact zeros and ones occur; the gradient is the pathwise one (0 where the gate is clipped).
    The weights are trained.

    Options:
        structure: ``"weight"``: one gate per weight (unstructured); ``"unit"``: one gate per
            input unit of a Linear (a column of its weight) or per output map of a Conv2d, as in
            the paper's L0Dense / L0Conv2d.
        droprate_init: initial drop rate p: log_alpha ~ N(log(1 - p) - log(p), 0.01^2).
        beta, gamma, zeta: temperature and stretch interval (2/3, -0.1, 1.1).

    Eval mode and the final weight use the deterministic gate
    ``z_hat = min(1, max(0, sigmoid(log_alpha) * (zeta - gamma) + gamma))``; the final mask is
    ``z_hat > 0`` and ``z_hat`` is folded into the kept weights. The expected-L0 penalty is
    :func:`sparseprune.budget.l0_penalty` (or a :class:`~sparseprune.budget.BudgetLoss`, whose
    mass is the expected number of kept weights); call :func:`constrain_` after each optimizer
    step to clamp log_alpha to [log 1e-2, log 1e2] as the reference code does.
    """

    name = "hard_concrete"
    parameter_names = ("log_alpha",)
    density_role = "learned"
    stochastic = True
    score_label = "log_alpha"
    recipe = Recipe({"weights": 1e-3, "log_alpha": 1e-2}, optimizer="adam",
                    source="METHODS.md 5.5 (Adam 1e-3; log_alpha 1e-2 so a short run reaches "
                           "its budget)")

    def __init__(self, structure: str = "weight", droprate_init: float = 0.5,
                 beta: float = 2.0 / 3.0, gamma: float = -0.1, zeta: float = 1.1):
        self.structure = V.choice("structure", structure, STRUCTURES)
        self.droprate_init = V.number_in("droprate_init", droprate_init, 0.0, 1.0, low_open=True,
                                         high_open=True)
        self.beta, self.gamma, self.zeta = V.hard_concrete(beta, gamma, zeta)

    def gate_shape(self, layer: "MaskedLayer") -> tuple[int, ...]:
        """The shape of ``log_alpha`` broadcast against the weight."""
        shape = layer.weight.shape
        if self.structure == "weight":
            return tuple(shape)
        if layer.weight.dim() == 2:  # Linear: input units, the columns of [out, in]
            return (1, shape[1])
        return (shape[0],) + (1,) * (layer.weight.dim() - 1)  # Conv2d: output maps

    def attach(self, layer: "MaskedLayer") -> None:
        weight = layer.weight
        dtype = weight.dtype if weight.dtype in (torch.float32, torch.float64) else torch.float32
        mean = math.log(1 - self.droprate_init) - math.log(self.droprate_init)
        log_alpha = torch.empty(self.gate_shape(layer), dtype=dtype, device=weight.device)
        layer.log_alpha = torch.nn.Parameter(log_alpha.normal_(mean, 1e-2))

    def _options(self) -> dict:
        return {"beta": self.beta, "gamma": self.gamma, "zeta": self.zeta}

    def gates(self, layer: "MaskedLayer") -> Tensor:
        """The deterministic test-time gates ``z_hat`` (log_alpha's shape)."""
        return SF.hard_concrete_gate(layer.log_alpha, **self._options())

    def weight(self, layer: "MaskedLayer") -> Tensor:
        if layer.training:
            z = SF.hard_concrete_sample(layer.log_alpha, rng=layer.next_rng(), **self._options())
        else:
            z = self.gates(layer)
        return layer.weight * z.to(layer.weight.dtype)

    def budget_mass(self, layer: "MaskedLayer") -> Tensor:
        """Expected number of kept weights: ``sum_j P(z_j != 0)`` times the weights per gate."""
        per_gate = layer.weight.numel() // max(layer.log_alpha.numel(), 1)
        return SF.hard_concrete_nonzero_probability(layer.log_alpha, **self._options()).sum() \
            * per_gate

    def final_mask(self, layer: "MaskedLayer") -> Tensor:
        return (self.gates(layer).detach() > 0).expand(layer.weight.shape).clone()

    def final_scale(self, layer: "MaskedLayer", mask: Tensor) -> Tensor:
        return self.gates(layer).detach().expand(layer.weight.shape)

    def ranking_scores(self, layer: "MaskedLayer") -> Tensor:
        return layer.log_alpha.detach().expand(layer.weight.shape)

    @torch.no_grad()
    def constrain_(self, layer: "MaskedLayer") -> None:
        """Clamp log_alpha to [log 1e-2, log 1e2] (the reference code, after each step)."""
        layer.log_alpha.clamp_(*LOG_ALPHA_RANGE)

    @classmethod
    def training_hooks(cls, layers: Sequence["MaskedLayer"], *,
                       epochs_per_round: int) -> TrainingHooks:
        return _Clamp()


class _Clamp(TrainingHooks):
    """The reference code's log_alpha clamp after every optimizer step."""

    def after_step(self, model: nn.Module, inputs: Tensor, labels: Tensor) -> None:
        constrain_(model)


def constrain_(model: nn.Module) -> None:
    """Clamp the log_alpha of every hard-concrete layer of ``model`` (after each optimizer step)."""
    for _, layer in layers_using(model, HardConcrete):
        layer.method.constrain_(layer)


def prob_and_group_norms(layer: "MaskedLayer", weight_decay: float) -> Tensor:
    """Per gate: ``P(z_j != 0) * (1 + 0.5 * weight_decay * ||theta_j||^2)``."""
    method = layer.method
    prob = SF.hard_concrete_nonzero_probability(layer.log_alpha, **method._options())
    if weight_decay == 0:
        return prob
    sq = layer.weight.to(prob.dtype).square()
    dims = [d for d, n in enumerate(layer.log_alpha.shape) if n == 1 and sq.shape[d] != 1]
    norms = sq.sum(dim=dims, keepdim=True) if dims else sq
    return prob * (1.0 + 0.5 * weight_decay * norms)
