"""ASLP and Supermask: a learned logit per weight, a fresh stochastic mask every forward, a
straight-through gradient, optional Smart Rescale or DWR. Formulas: docs/METHODS.md 1-2."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import torch
from torch import Tensor

from .. import _validate as V
from .. import functional as SF
from .base import MaskMethod, Recipe, register
from .init import signed_std_

if TYPE_CHECKING:  # pragma: no cover
    from ..nn.masked import MaskedLayer


class StochasticMethod(MaskMethod):
    """What ASLP and Supermask share; see their docstrings for the options."""

    parameter_names = ("scores", "scale")
    density_role = "learned"
    stochastic = True
    score_label = "logit (scores; kept when >= 0)"

    def __init__(self, rescale: Optional[str] = None, signed_constant: bool = False,
                 init_logit: float = 0.0, train_weights: bool = False,
                 sample_in_eval: bool = False, scores_dtype: Optional[torch.dtype] = None):
        self.rescale = V.choice("rescale", rescale, V.RESCALES)
        self.signed_constant = bool(signed_constant)
        self.init_logit = V.finite_number("init_logit", init_logit)
        self.train_weights = bool(train_weights)
        self.sample_in_eval = bool(sample_in_eval)
        self.scores_dtype = V.scores_dtype(scores_dtype)

    def attach(self, layer: "MaskedLayer") -> None:
        weight = layer.weight
        if self.signed_constant:
            signed_std_(weight)
        dtype = self.scores_dtype or weight.dtype
        layer.scores = torch.nn.Parameter(torch.full_like(weight, self.init_logit, dtype=dtype))
        if self.rescale == "smart":
            layer.scale = torch.nn.Parameter(torch.ones(1, device=weight.device))
        else:
            layer.register_parameter("scale", None)
        weight.requires_grad_(self.train_weights)
        if layer.bias is not None:
            layer.bias.requires_grad_(self.train_weights)

    def _fused_options(self) -> dict:
        return {}

    def _sampling(self, layer: "MaskedLayer") -> bool:
        return layer.training or self.sample_in_eval

    def _options(self, layer: "MaskedLayer") -> dict:
        return dict(scale=layer.scale, rescale=self.rescale, rng=layer.next_rng(),
                    **self._fused_options())

    def weight(self, layer: "MaskedLayer") -> Tensor:
        if not self._sampling(layer):
            return self.final_weight(layer)
        return SF.masked_weight(layer.weight, layer.scores, method=self.name,
                                **self._options(layer))

    def forward(self, layer: "MaskedLayer", input: Tensor) -> Tensor:
        if self._sampling(layer) and layer.fusable:
            return layer.fused(input, self.name, **self._options(layer))
        return layer.dense(input, self.weight(layer))

    def budget_mass(self, layer: "MaskedLayer") -> Tensor:
        """The expected number of kept weights, ``sum(sigmoid(scores))`` (in float32 at least)."""
        scores = layer.scores
        if scores.dtype not in (torch.float32, torch.float64):
            scores = scores.float()
        return torch.sigmoid(scores).sum()

    def disagreement(self, layer: "MaskedLayer", keep: Tensor) -> Tensor:
        """The expected number of sampled mask entries that differ from ``keep``:
        ``sum(1 - sigmoid(s))`` over the kept entries plus ``sum(sigmoid(s))`` over the others
        (float32 at least); 0 when every score is far on its side of ``keep``."""
        scores = layer.scores
        if scores.dtype not in (torch.float32, torch.float64):
            scores = scores.float()
        return torch.sigmoid(torch.where(keep, -scores, scores)).sum()

    def final_mask(self, layer: "MaskedLayer") -> Tensor:
        return layer.scores.detach() >= 0  # keep when sigmoid(scores) >= 1/2

    def final_scale(self, layer: "MaskedLayer", mask: Tensor) -> Tensor | float:
        if self.rescale == "smart":
            return layer.scale.detach()
        if self.rescale == "dwr":  # recomputed on the final mask (METHODS 2.5)
            return mask.numel() / max(int(mask.sum()), 1)
        return 1.0


@register
class ASLP(StochasticMethod):
    """ASLP (Dupont et al., ICIP 2022): one learned logit per weight; each forward samples
    ``z = 1[scores + L > 0]`` with L ~ Logistic(0, 1) (keep probability ``sigmoid(scores)``) and
    backpropagates through the soft sample ``sigmoid((scores + L) / temperature)``, straight-through.

    Options:
        temperature: Gumbel-softmax temperature of the soft sample (the hard mask ignores it).
        rescale: ``"smart"`` adds Smart Rescale, a learned per-layer scalar ``layer.scale``
            (init 1) multiplying the masked weight; ``"dwr"`` Dynamic Weight Rescaling
            (``numel / kept``); ``None`` for none.
        signed_constant: replace the weights by ``sign(w) * std(w)`` (per layer) when attached.
        init_logit: initial value of every score (0 keeps each weight with probability 1/2).
        train_weights: leave the weights and bias trainable (the paper freezes them).
        sample_in_eval: keep sampling masks in eval mode instead of the deterministic final mask.
        scores_dtype: dtype of the scores (default: the weight's); float32, bfloat16 or float16.
        pattern: ``"N:M"`` makes learned N:M masks instead (with the options ``logit_scale``,
            ``hard``, ``prior``, ``prior_strength`` and a scheduled ``temperature``):
            :class:`sparseprune.methods.nm.PatternASLP`.

    Final mask: ``scores >= 0``, with the Smart Rescale scalar (or the DWR factor of that mask)
    folded into the kept weights.
    """

    name = "aslp"
    recipe = Recipe({"scores": 50.0, "scale": 1e-3}, source="METHODS.md 1.5 (ASLP reference)")

    def __init__(self, temperature: float = 1.0, rescale: Optional[str] = None,
                 signed_constant: bool = False, init_logit: float = 0.0,
                 train_weights: bool = False, sample_in_eval: bool = False,
                 scores_dtype: Optional[torch.dtype] = None, pattern: Optional[str] = None,
                 logit_scale: Any = None, hard: Optional[bool] = None, prior: Any = None,
                 prior_strength: Optional[float] = None):
        super().__init__(rescale, signed_constant, init_logit, train_weights, sample_in_eval,
                         scores_dtype)
        self.temperature = V.temperature(temperature)
        given = [k for k, v in (("logit_scale", logit_scale), ("hard", hard), ("prior", prior),
                                ("prior_strength", prior_strength)) if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to "
                             "learned N:M masks: give pattern='N:M' too")
        self.pattern = self.logit_scale = self.hard = self.prior = self.prior_strength = None

    def _fused_options(self) -> dict:
        return {"temperature": self.temperature}


@register
class Supermask(StochasticMethod):
    """Supermask (Zhou et al., NeurIPS 2019): one learned logit per weight; each forward samples
    ``b ~ Bernoulli(sigmoid(scores))`` and backpropagates straight-through with the noise-free
    ``sigmoid'(scores)``.

    Options:
        rescale: ``"dwr"`` (Dynamic Weight Rescaling: ``numel / sum(b)`` per layer per forward,
            gradient through the denominator, as the papers' code), ``"smart"`` (a learned scalar)
            or ``None``.
        signed_constant: replace the weights by ``sign(w) * std(w)`` (Zhou's signed constant).
        init_logit, train_weights, sample_in_eval, scores_dtype: as for ASLP. The papers report
        the mean over sampled masks: evaluate under :func:`sparseprune.sampled_masks`.

    Final mask: ``scores >= 0``, with the DWR factor recomputed on it.
    """

    name = "supermask"
    recipe = Recipe({"scores": 50.0, "scale": 1e-3},
                    source="METHODS.md 2.4 (ASLP reference's Supermask: SGD lr 50)")

    def __init__(self, rescale: Optional[str] = None, signed_constant: bool = False,
                 init_logit: float = 0.0, train_weights: bool = False,
                 sample_in_eval: bool = False, scores_dtype: Optional[torch.dtype] = None):
        super().__init__(rescale, signed_constant, init_logit, train_weights, sample_in_eval,
                         scores_dtype)
