"""N:M pattern masks (docs/METHODS.md 13): N kept of every M consecutive weights along a layer's
input, 1 <= N < M <= 8 (Conv: M consecutive input channels at one kernel tap; candidate patterns
in ``itertools.combinations`` order; ties to the lower index; ``sparseprune.select``).

- ``"aslp"`` with ``pattern=`` (:class:`PatternASLP`): learned logits over the C(M, N) candidate
  patterns of each group, a hard pattern sampled with Gumbel noise every forward and the softmax
  gradient passed straight through (MaskLLM, NeurIPS 2024, in the fused ASLP style).
- ``"edge_popup"`` with ``pattern=`` (:class:`PatternEdgePopup`): top-N of M by ``|score|``.
- ``"srste"`` (:class:`SRSTE`, Zhou et al., ICLR 2021): trained weights, the magnitude N:M mask
  recomputed every step, the weight gradient ``g + decay * (1 - m) * w``.

``convert(model, "aslp", pattern="2:4")`` checks every layer before it changes anything: a layer
whose input size is not a multiple of M is a ValueError naming it (leave it dense with
``exclude=``). The density is fixed by the pattern: ``finalize(model)`` keeps exactly N of every
M, ``finalize(model, density=...)`` is an error, and budgets do not apply.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import torch
from torch import Tensor

from .. import _validate as V
from .. import functional as SF
from ..select import nm_candidates, nm_groups, nm_ungroup, top_n_of_m
from .base import MaskMethod, Recipe, pattern_variant, register
from .edge_popup import EdgePopup
from .init import init_weight_, kaiming_uniform_scores, signed_std_
from .stochastic import ASLP

if TYPE_CHECKING:  # pragma: no cover
    from ..nn.masked import MaskedLayer

LOGIT_INIT_STD = 0.01  # MaskLLM's gate init N(0, 0.01^2)
PRIORS = (None, "magnitude")


class NmPattern:
    """What the N:M methods share: the pattern, the layer check, the layer's weight-shaped tensors
    in (out, in, ...) layout (HF's Conv1D stores (in, out)), and a density fixed by the pattern."""

    pattern: tuple[int, int]
    density_role = "option"  # the pattern option fixes the density

    def _set_pattern(self, pattern: Any) -> None:
        self.pattern = V.pattern(pattern)

    @property
    def pattern_name(self) -> str:
        return f"{self.pattern[0]}:{self.pattern[1]}"

    def check_layer(self, name: str, shape: Sequence[int], input_dim: Optional[int]) -> None:
        m = self.pattern[1]
        if input_dim is None:
            raise ValueError(f"layer {name!r} has no input dimension for an N:M pattern (an "
                             f"embedding table); leave it out with exclude={name!r}")
        if len(shape) < 2 or shape[input_dim] % m:
            raise ValueError(f"layer {name!r}: an N:M pattern with M={m} needs the input size "
                             f"to be a multiple of {m}, got weight shape {list(shape)} (input "
                             f"size {shape[input_dim] if len(shape) >= 2 else '?'}); leave the "
                             f"layer dense with exclude={name!r}")

    @staticmethod
    def logical(layer: "MaskedLayer", t: Tensor) -> Tensor:
        """A weight-shaped tensor of ``layer`` as (out, in, ...): the input along dimension 1."""
        return t if layer.input_dim == 1 else t.movedim(layer.input_dim, 1)

    @staticmethod
    def stored(layer: "MaskedLayer", t: Tensor) -> Tensor:
        """The inverse of :meth:`logical`."""
        return t if layer.input_dim == 1 else t.movedim(1, layer.input_dim)

    def _attach_check(self, layer: "MaskedLayer") -> None:
        NmPattern.check_layer(self, type(layer).__name__, tuple(layer.weight.shape),
                              layer.input_dim)

    def _forward(self, layer: "MaskedLayer", input: Tensor, method: str, scores: Optional[Tensor],
                 **options: Any) -> Tensor:
        """One fused op each way for linear layers; the masked weight then the layer's own
        computation for the others."""
        if isinstance(layer, torch.nn.Linear):
            return SF.masked_linear(input, layer.weight, scores, layer.bias, method=method,
                                    pattern=self.pattern_name, **options)
        return layer.dense(input, self.weight(layer))

    def budget_mass(self, layer: "MaskedLayer") -> Tensor:
        raise TypeError(f"the density of an N:M pattern is fixed ({self.pattern_name}: "
                        f"{self.pattern[0] / self.pattern[1]:g}); a budget loss does not apply")

    def ranking_scores(self, layer: "MaskedLayer") -> Tensor:
        raise ValueError(f"the density of an N:M pattern is fixed ({self.pattern_name}); "
                         "finalize without density= keeps exactly N of every M")


@pattern_variant(ASLP)
class PatternASLP(NmPattern, ASLP):
    """``"aslp"`` with ``pattern="N:M"``: learned N:M masks (MaskLLM's categorical Gumbel-softmax
    over the candidate patterns, our fused straight-through variant; docs/METHODS.md 13.2).

    Each group of M consecutive input weights has C = C(M, N) logits, ``layer.scores`` of shape
    ``(groups, C)`` (groups in :func:`sparseprune.select.nm_groups` order, candidates in
    :func:`sparseprune.select.nm_candidates` order), initialised N(0, 0.01^2) (plus the prior).
    Each training forward samples the hard pattern ``argmax_k (kappa * logits_k + G_k)`` with
    Gumbel noise G from the layer's Philox stream (element ``g * C + k``), exactly N of every M
    kept, and passes the gradient of ``softmax((kappa * logits + G) / tau)`` straight through.

    Options (besides ASLP's ``rescale`` (None or "smart"), ``signed_constant``,
    ``train_weights``, ``sample_in_eval``, ``scores_dtype``):
        pattern: "N:M", N kept of every M.
        temperature: tau, a number or a ``(start, end)`` pair linear in the training progress
            (:func:`sparseprune.set_progress`); MaskLLM's (4, 0.05) by default. In hard mode it
            only shapes the gradient.
        logit_scale: kappa, a number or ``(start, end)``; MaskLLM's released script's (100, 500).
            The noise is added to ``kappa * logits``, so kappa sets how deterministic samples are.
        hard: True (an N:M mask every step); False is MaskLLM's soft mode (``y @ P``, dense).
        prior: None; "magnitude" (the top-N-of-M ``|w|`` mask); a bool mask of the weight's shape;
            or a dict of such masks by qualified layer name (a one-shot method's output, applied
            by :func:`sparseprune.convert`). Logits move by ``(overlap - 1) * std(logits) *
            prior_strength``, overlap = positions a candidate shares with the prior (MaskLLM).
        prior_strength: MaskLLM's alpha (3.0, its released script's).

    Final mask: the argmax pattern of the logits (noise-free; first maximum on ties), Smart
    Rescale folded in. Eval mode computes with it.
    """

    recipe = Recipe({"scores": 5e-3, "scale": 1e-3}, optimizer="adam", lr_schedule="cosine",
                    source="METHODS.md 13.1 (MaskLLM: Adam on the logits, cosine; our lr for "
                           "short runs)")

    def __init__(self, temperature: Any = (4.0, 0.05), rescale: Optional[str] = None,
                 signed_constant: bool = False, init_logit: float = 0.0,
                 train_weights: bool = False, sample_in_eval: bool = False,
                 scores_dtype: Optional[torch.dtype] = None, pattern: str = "2:4",
                 logit_scale: Any = (100.0, 500.0), hard: bool = True, prior: Any = None,
                 prior_strength: float = 3.0):
        super(ASLP, self).__init__(rescale, signed_constant, init_logit, train_weights,
                                   sample_in_eval, scores_dtype)
        if self.rescale == "dwr":
            raise ValueError("rescale='dwr' does not apply to an N:M pattern (the kept fraction "
                             "is fixed); use None or 'smart'")
        if self.init_logit != 0.0:
            raise ValueError("init_logit does not apply to an N:M pattern (the candidates' "
                             "logits start at N(0, 0.01^2)), got {self.init_logit!r}")
        self._set_pattern(pattern)
        self.temperature = V.schedule("temperature", temperature)
        self.logit_scale = V.schedule("logit_scale", logit_scale)
        if not isinstance(hard, bool):
            raise TypeError(f"hard must be a bool, got {type(hard).__name__}")
        self.hard = hard
        if not (prior in PRIORS or isinstance(prior, (Tensor, Mapping))):
            raise ValueError(f"prior must be None, 'magnitude', a bool mask or a dict of them by "
                             f"layer name, got {prior!r}")
        self.prior = prior
        self.prior_strength = V.finite_number("prior_strength", prior_strength)
        self.progress = 0.0
        # [temperature, logit_scale] now: a CPU tensor updated in place by set_progress, so that
        # the op reads the schedule without a sync and torch.compile neither specialises on its
        # values nor recompiles when they change.
        self.schedule = torch.tensor([self.temperature[0], self.logit_scale[0]],
                                     dtype=torch.float64)

    def options(self) -> dict[str, Any]:
        out = super().options()
        out["pattern"] = self.pattern_name
        return out

    def check_layer(self, name: str, shape: Sequence[int], input_dim: Optional[int]) -> None:
        super().check_layer(name, shape, input_dim)
        if isinstance(self.prior, Mapping) and name not in self.prior:
            raise ValueError(f"prior has no mask for layer {name!r} (it names "
                             f"{', '.join(map(repr, list(self.prior)[:5]))}...)")

    def attach(self, layer: "MaskedLayer") -> None:
        self._attach_check(layer)
        weight = layer.weight
        if self.signed_constant:
            signed_std_(weight)
        n, m = self.pattern
        groups, candidates = weight.numel() // m, math.comb(m, n)
        dtype = self.scores_dtype or weight.dtype
        logits = torch.randn(groups, candidates, device=weight.device) * LOGIT_INIT_STD
        layer.scores = torch.nn.Parameter(logits.to(dtype))
        if self.rescale == "smart":
            layer.scale = torch.nn.Parameter(torch.ones(1, device=weight.device))
        else:
            layer.register_parameter("scale", None)
        weight.requires_grad_(self.train_weights)
        if layer.bias is not None:
            layer.bias.requires_grad_(self.train_weights)
        if self.prior == "magnitude":
            self.apply_prior(layer, top_n_of_m(self.logical(layer, weight.detach()).abs(), n, m),
                             logical=True)
        elif isinstance(self.prior, Tensor):
            self.apply_prior(layer, self.prior)

    def bind(self, name: str, layer: "MaskedLayer") -> None:
        if isinstance(self.prior, Mapping):
            self.apply_prior(layer, self.prior[name])

    @torch.no_grad()
    def apply_prior(self, layer: "MaskedLayer", mask: Tensor, *, logical: bool = False) -> None:
        """Moves the logits toward the candidates of a prior mask (a bool tensor of the weight's
        shape, 1 = keep; ``logical``: already in (out, in, ...) layout): each candidate's logit
        gains ``(overlap - 1) * std(logits) * prior_strength``, overlap the number of kept
        positions it shares with the prior's group (MaskLLM's ``init_diff_mask_from_prior``)."""
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise TypeError(f"a prior mask must be a bool Tensor, got "
                            f"{mask.dtype if isinstance(mask, Tensor) else type(mask).__name__}")
        if mask.shape != layer.weight.shape:
            raise ValueError(f"a prior mask must have the weight's shape "
                             f"{list(layer.weight.shape)}, got {list(mask.shape)}")
        n, m = self.pattern
        mask = mask.to(layer.weight.device)
        groups = nm_groups(mask if logical else self.logical(layer, mask), m).float()
        overlap = groups @ nm_candidates(n, m, device=groups.device).t()  # (groups, C)
        logits = layer.scores
        shift = (overlap - 1) * logits.float().std() * self.prior_strength
        logits.copy_((logits.float() + shift).to(logits.dtype))

    def set_progress(self, layer: "MaskedLayer", fraction: float) -> None:
        self.progress = V.progress(fraction)
        with torch.no_grad():
            self.schedule.copy_(torch.tensor(self.current(layer), dtype=torch.float64))

    def current(self, layer: "MaskedLayer") -> tuple[float, float]:
        """(temperature, logit_scale) at the current progress: linear from each pair's start to
        its end."""
        (t0, t1), (k0, k1) = self.temperature, self.logit_scale
        p = self.progress
        return t0 + (t1 - t0) * p, k0 + (k1 - k0) * p

    def _options(self, layer: "MaskedLayer") -> dict:
        return dict(scale=layer.scale, schedule=self.schedule, hard=self.hard,
                    rng=layer.next_rng())

    def weight(self, layer: "MaskedLayer") -> Tensor:
        if not self._sampling(layer):
            return self.final_weight(layer)
        masked = SF.masked_weight(self.logical(layer, layer.weight), layer.scores,
                                  method="nm_gumbel", pattern=self.pattern_name,
                                  **self._options(layer))
        return self.stored(layer, masked)

    def forward(self, layer: "MaskedLayer", input: Tensor) -> Tensor:
        if self._sampling(layer):
            return self._forward(layer, input, "nm_gumbel", layer.scores, **self._options(layer))
        return layer.dense(input, self.final_weight(layer))

    def final_mask(self, layer: "MaskedLayer") -> Tensor:
        n, m = self.pattern
        logits = layer.scores.detach()
        best = nm_candidates(n, m, device=logits.device).bool()[logits.float().argmax(dim=1)]
        return self.stored(layer, nm_ungroup(best, self.logical(layer, layer.weight).shape))


@pattern_variant(EdgePopup)
class PatternEdgePopup(NmPattern, EdgePopup):
    """``"edge_popup"`` with ``pattern="N:M"``: one real score per weight; each group of M
    consecutive input weights keeps its N largest ``|scores|`` (ties: the lower index), the
    gradient ``sign(scores) * w * g`` passes straight through (docs/METHODS.md 13.3). The density
    is N/M: leave ``density`` unset. Options as Edge-Popup's, and ``prior="magnitude"`` starts the
    scores at ``|w|`` (the magnitude N:M mask) instead of ``kaiming_uniform_``."""

    def __init__(self, density: Optional[float] = None, weight_init: Optional[str] = None,
                 scale_fan: bool = False, train_weights: bool = False,
                 scores_dtype: Optional[torch.dtype] = None, pattern: str = "2:4",
                 prior: Optional[str] = None):
        self._set_pattern(pattern)
        if density is not None:
            raise ValueError(f"density is fixed by the pattern {self.pattern_name!r} (N/M = "
                             f"{self.pattern[0] / self.pattern[1]:g}); leave density unset, got "
                             f"{density!r}")
        super().__init__(self.pattern[0] / self.pattern[1], weight_init, scale_fan,
                         train_weights, scores_dtype, self.pattern_name, prior)

    def options(self) -> dict[str, Any]:
        out = super().options()
        out.update(density=None, pattern=self.pattern_name)
        return out

    def attach(self, layer: "MaskedLayer") -> None:
        self._attach_check(layer)
        init_weight_(layer.weight, self.weight_init, self.density if self.scale_fan else 1.0)
        if self.prior == "magnitude":
            scores = layer.weight.detach().abs().to(self.scores_dtype or layer.weight.dtype)
        else:
            scores = kaiming_uniform_scores(layer.weight, self.scores_dtype)
        layer.scores = torch.nn.Parameter(scores.clone())
        layer.weight.requires_grad_(self.train_weights)
        if layer.bias is not None:
            layer.bias.requires_grad_(self.train_weights)

    def weight(self, layer: "MaskedLayer") -> Tensor:
        masked = SF.nm_topk_weight(self.logical(layer, layer.weight),
                                   self.logical(layer, layer.scores), pattern=self.pattern_name)
        return self.stored(layer, masked)

    def forward(self, layer: "MaskedLayer", input: Tensor) -> Tensor:
        return self._forward(layer, input, "nm_topk", layer.scores)

    def final_mask(self, layer: "MaskedLayer") -> Tensor:
        n, m = self.pattern
        return self.stored(layer, top_n_of_m(self.logical(layer, layer.scores.detach()).abs(),
                                             n, m))


@register
class SRSTE(NmPattern, MaskMethod):
    """SR-STE (Zhou et al., ICLR 2021; docs/METHODS.md 13.4): the weights train; every forward
    keeps the N largest ``|w|`` of every group of M (recomputed from the current weights, ties to
    the lower index) and backward passes the weight gradient densely with the sparse-refined
    decay, ``g + decay * (1 - m) * w``. One fused op each way for linear layers; nothing is saved
    but the weight.

    Options:
        pattern: "N:M" (default "2:4").
        decay: lambda_w (2e-4, the reference code's default).

    Final mask: the magnitude N:M mask of the final weights (also the eval-mode mask).
    """

    name = "srste"
    parameter_names = ()
    recipe = Recipe({"weights": 0.1}, weight_decay=5e-5, lr_schedule="cosine",
                    source="METHODS.md 13.4 (SR-STE ResNet-50 2:4 config: SGD 0.1, cosine, "
                           "wd 5e-5)")

    def __init__(self, pattern: str = "2:4", decay: float = V.SRSTE_DECAY):
        self._set_pattern(pattern)
        self.decay = V.finite_number("decay", decay, minimum=0.0)

    def options(self) -> dict[str, Any]:
        return {"pattern": self.pattern_name, "decay": self.decay}

    def attach(self, layer: "MaskedLayer") -> None:
        self._attach_check(layer)

    def weight(self, layer: "MaskedLayer") -> Tensor:
        return self.stored(layer, SF.srste_weight(self.logical(layer, layer.weight),
                                                  pattern=self.pattern_name, decay=self.decay))

    def forward(self, layer: "MaskedLayer", input: Tensor) -> Tensor:
        return self._forward(layer, input, "srste", None, decay=self.decay)

    def final_mask(self, layer: "MaskedLayer") -> Tensor:
        n, m = self.pattern
        return self.stored(layer, top_n_of_m(self.logical(layer, layer.weight.detach()).abs(),
                                             n, m))
