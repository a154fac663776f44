"""Functional forms of the fused masked ops (the layers in :mod:`sparseprune.nn` call these).

Each call of a stochastic method draws a fresh ``rng = [seed, offset]`` from ``generator``
(default: torch's global CPU generator), so ``torch.manual_seed`` reproduces runs; or takes an
explicit ``rng`` (the masked layers pass their own stream, see :mod:`sparseprune.nn`). :mod:`sparseprune.reference` has the same functions in pure PyTorch,
drawing the same pair.

Rescaling (``rescale=``): ``"smart"`` multiplies the masked weight by a learned per-layer scalar
``scale`` (Smart Rescale, ASLP); ``"dwr"`` by ``numel / max(kept, 1)`` recomputed from every
sampled mask, with its gradient (Dynamic Weight Rescaling, Supermask).

N:M patterns (``pattern="N:M"``, docs/METHODS.md 13): N kept of every M consecutive weights along
the input dimension (dimension 1: a Linear's ``in_features``; a convolution's input channels at
each kernel tap). The N:M methods are ``"nm_gumbel"`` (``"aslp"`` with a pattern: learned logits
over the C(M, N) candidate patterns of each group, :func:`nm_gumbel_weight`), ``"nm_topk"``
(``"edge_popup"`` with a pattern, :func:`nm_topk_weight`) and ``"srste"``
(:func:`srste_weight`); :func:`masked_weight`, :func:`masked_linear` and :func:`masked_conv2d`
take them with the same keywords.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from . import _validate, ops
from .ops.rng import next_rng

__all__ = ["masked_weight", "aslp_weight", "supermask_weight", "edge_popup_weight", "masked_linear",
           "masked_conv2d", "nm_gumbel_weight", "nm_topk_weight", "srste_weight", "reparam_weight", "hard_concrete_sample", "hard_concrete_gate",
           "hard_concrete_nonzero_probability"]

_NO_RNG = torch.zeros(2, dtype=torch.int64)  # Edge-Popup is deterministic


def _rng(method: str, generator: Optional[torch.Generator], rng: Optional[Tensor]) -> Tensor:
    """The op's ``[seed, offset]``: ``rng`` as given (a layer's own stream), else a fresh pair
    drawn from ``generator``."""
    if method in ("edge_popup", "nm_topk", "srste"):
        return _NO_RNG
    if rng is None:
        return next_rng(generator)
    if generator is not None:
        raise ValueError("give either generator (a fresh pair is drawn from it) or rng (an "
                         "explicit [seed, offset] pair), not both")
    return rng


def _scale(scale: Optional[Tensor]) -> Optional[Tensor]:
    """The Smart Rescale scalar in float32, the kernels' precision, whatever the module was cast
    to (the cast is differentiable)."""
    if scale is None or scale.dtype == torch.float32 or not scale.is_floating_point():
        return scale
    return scale.float()


def _autocast(input: Tensor, weight: Tensor, bias: Optional[Tensor]):
    """Under ``torch.autocast`` the GEMM / convolution runs in the autocast dtype, as F.linear and
    F.conv2d would; the mask math keeps its own precision (scores, scale)."""
    device = input.device.type
    if not torch.is_autocast_enabled(device):
        return input, weight, bias
    dtype = torch.get_autocast_dtype(device)
    return (input.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype))


class _Nm:
    """An N:M call's validated arguments, as the N:M ops take them."""

    def __init__(self, method, pattern, scale, rescale, density, temperature, logit_scale, hard,
                 decay, generator, rng, schedule):
        (self.method, self.n, self.m, kappa, self.hard,
         self.decay) = _validate.nm_options(method, pattern, scale, rescale, density, logit_scale,
                                            hard, decay)
        if schedule is None:
            schedule = torch.tensor([_validate.temperature(temperature), kappa],
                                    dtype=torch.float64)
        self.schedule = _validate.tensor("schedule", schedule)
        self.rng = _rng(self.method, generator, rng)

    def scores(self, weight: Tensor, scores: Optional[Tensor]) -> Tensor:
        if self.method == "srste":
            return weight.new_empty(0)  # the weight ranks itself
        return _validate.tensor("scores", scores)

    def args(self) -> tuple:
        return (self.method, self.n, self.m, self.schedule, self.hard, self.decay, self.rng)


def masked_weight(weight: Tensor, scores: Optional[Tensor], scale: Optional[Tensor] = None, *,
                  method: str = "aslp", rescale: Optional[str] = None, temperature: float = 1.0,
                  density: Optional[float] = None, pattern: Optional[str] = None,
                  logit_scale: float = 1.0, hard: bool = True, decay: Optional[float] = None,
                  generator: Optional[torch.Generator] = None, rng: Optional[Tensor] = None,
                  schedule: Optional[Tensor] = None) -> Tensor:
    """The masked weight of any fused ``method`` ("aslp", "supermask", "edge_popup"; with a
    ``pattern``, or "nm_gumbel", "nm_topk", "srste": N:M), with the options of
    :func:`aslp_weight`, :func:`supermask_weight`, :func:`edge_popup_weight`,
    :func:`nm_gumbel_weight`, :func:`nm_topk_weight` and :func:`srste_weight`.
    ``rng`` (a CPU int64 ``[seed, offset]``, see :func:`sparseprune.rng.rng_state`) replaces the
    draw from ``generator``: the masked layers pass their own noise stream. Likewise ``schedule``
    (a CPU float64 ``[temperature, logit_scale]``) replaces those two for nm_gumbel: a layer's
    scheduled values, which torch.compile then does not specialise on."""
    if _validate.nm_call(method, pattern):
        _validate.tensors({"weight": weight}, {"scale": scale})
        nm = _Nm(method, pattern, scale, rescale, density, temperature, logit_scale, hard, decay,
                 generator, rng, schedule)
        return ops.nm_masked_weight(weight, nm.scores(weight, scores), _scale(scale), *nm.args())
    _validate.tensors({"weight": weight, "scores": scores}, {"scale": scale})
    tau = _validate.temperature(temperature)
    method, rescale, density = _validate.mask_options(method, scale, rescale, density)
    return ops.masked_weight(weight, scores, _scale(scale), method, rescale, tau, density,
                             _rng(method, generator, rng))


def aslp_weight(weight: Tensor, scores: Tensor, scale: Optional[Tensor] = None, *,
                temperature: float = 1.0, rescale: Optional[str] = None,
                generator: Optional[torch.Generator] = None,
                rng: Optional[Tensor] = None) -> Tensor:
    """ASLP masked weight: ``scale * weight * z`` with ``z = 1[scores + L > 0]``, L ~ Logistic(0, 1).

    ``z`` is a hard sample of the Gumbel-softmax over the logits ``(scores, 0)``: each weight is kept
    with probability ``sigmoid(scores)``. Backward is straight-through Gumbel-softmax: the gradient
    of ``scores`` is that of the soft sample ``y = sigmoid((scores + L) / temperature)`` at the same
    noise draw; ``scale`` (a one-element tensor, Smart Rescale, used in float32; ``rescale``
    defaults to "smart" when it is given) gets ``sum(g * weight * z)``. ``rescale="dwr"`` rescales
    by ``numel / kept`` instead. ``rng``: see :func:`masked_weight`.
    """
    return masked_weight(weight, scores, scale, method="aslp", rescale=rescale,
                         temperature=temperature, generator=generator, rng=rng)


def supermask_weight(weight: Tensor, scores: Tensor, scale: Optional[Tensor] = None, *,
                     rescale: Optional[str] = None, generator: Optional[torch.Generator] = None,
                     rng: Optional[Tensor] = None) -> Tensor:
    """Supermask (Zhou et al.): ``weight * b`` with ``b ~ Bernoulli(sigmoid(scores))`` (kept iff
    ``u < sigmoid(scores)`` for the element's uniform u), straight-through with the noise-free
    gradient ``sigmoid'(scores)``. ``rescale="dwr"`` multiplies by ``numel / sum(b)`` with the
    gradient through the denominator, as the reference code has it; ``scale`` gives Smart Rescale.
    """
    return masked_weight(weight, scores, scale, method="supermask", rescale=rescale,
                         generator=generator, rng=rng)


def edge_popup_weight(weight: Tensor, scores: Tensor, *, density: float) -> Tensor:
    """Edge-Popup (Ramanujan et al.): ``weight * m``, m keeping exactly ``round(density * numel)``
    weights with the largest ``|scores|`` (ties in index order); straight-through gradient
    ``sign(scores) * weight * g``. ``density`` is the fraction kept."""
    return masked_weight(weight, scores, method="edge_popup", density=density)


def masked_linear(input: Tensor, weight: Tensor, scores: Optional[Tensor],
                  bias: Optional[Tensor] = None, *, method: str = "aslp",
                  scale: Optional[Tensor] = None, rescale: Optional[str] = None,
                  temperature: float = 1.0, density: Optional[float] = None,
                  pattern: Optional[str] = None, logit_scale: float = 1.0, hard: bool = True,
                  decay: Optional[float] = None, generator: Optional[torch.Generator] = None,
                  rng: Optional[Tensor] = None, schedule: Optional[Tensor] = None) -> Tensor:
    """``F.linear(input, masked_weight, bias)`` in one op each way, for any fused ``method``
    ("aslp", "supermask", "edge_popup", and with ``pattern`` the N:M methods; see the ``*_weight``
    functions for each one's options).

    The masked weight is a transient: backward regenerates it from the saved ``rng`` in the same
    fused pass that computes the score gradients. Under ``torch.autocast`` the GEMM runs in the
    autocast dtype.
    """
    if _validate.nm_call(method, pattern):
        _validate.tensors({"input": input, "weight": weight}, {"bias": bias, "scale": scale})
        nm = _Nm(method, pattern, scale, rescale, density, temperature, logit_scale, hard, decay,
                 generator, rng, schedule)
        input, weight, bias = _autocast(input, weight, bias)
        return ops.nm_masked_linear(input, weight, nm.scores(weight, scores), bias, _scale(scale),
                                    *nm.args())
    _validate.tensors({"input": input, "weight": weight, "scores": scores},
                      {"bias": bias, "scale": scale})
    tau = _validate.temperature(temperature)
    method, rescale, density = _validate.mask_options(method, scale, rescale, density)
    input, weight, bias = _autocast(input, weight, bias)
    return ops.masked_linear(input, weight, scores, bias, _scale(scale), method, rescale, tau,
                             density, _rng(method, generator, rng))


def masked_conv2d(input: Tensor, weight: Tensor, scores: Optional[Tensor],
                  bias: Optional[Tensor] = None, stride: _validate.IntPair = 1,
                  padding: _validate.IntPair | str = 0, dilation: _validate.IntPair = 1,
                  groups: int = 1, *, method: str = "aslp", scale: Optional[Tensor] = None,
                  rescale: Optional[str] = None, temperature: float = 1.0,
                  density: Optional[float] = None, pattern: Optional[str] = None,
                  logit_scale: float = 1.0, hard: bool = True, decay: Optional[float] = None,
                  generator: Optional[torch.Generator] = None, rng: Optional[Tensor] = None,
                  schedule: Optional[Tensor] = None) -> Tensor:
    """``F.conv2d(input, masked_weight, bias, stride, padding, dilation, groups)`` in one op each
    way; arguments follow ``torch.nn.functional.conv2d`` (including ``padding="same"``) and
    :func:`masked_linear`. With an N:M method the masked weight (groups of M input channels at
    each kernel tap) comes from its own op and the convolution is ATen's: two ops, and the
    convolution saves the masked weight for its backward.
    """
    if _validate.nm_call(method, pattern):
        _validate.tensors({"input": input, "weight": weight}, {"bias": bias, "scale": scale})
        nm = _Nm(method, pattern, scale, rescale, density, temperature, logit_scale, hard, decay,
                 generator, rng, schedule)
        input, stride, padding, dilation = _validate.conv_args(input, weight, stride, padding,
                                                               dilation)
        input, weight, bias = _autocast(input, weight, bias)
        masked = ops.nm_masked_weight(weight, nm.scores(weight, scores), _scale(scale), *nm.args())
        return torch.nn.functional.conv2d(input, masked, bias, stride, padding, dilation, groups)
    _validate.tensors({"input": input, "weight": weight, "scores": scores},
                      {"bias": bias, "scale": scale})
    tau = _validate.temperature(temperature)
    method, rescale, density = _validate.mask_options(method, scale, rescale, density)
    input, stride, padding, dilation = _validate.conv_args(input, weight, stride, padding, dilation)
    input, weight, bias = _autocast(input, weight, bias)
    return ops.masked_conv2d(input, weight, scores, bias, _scale(scale), stride, padding, dilation,
                             groups, method, rescale, tau, density, _rng(method, generator, rng))


def nm_gumbel_weight(weight: Tensor, logits: Tensor, scale: Optional[Tensor] = None, *,
                     pattern: str = "2:4", temperature: float = 1.0, logit_scale: float = 1.0,
                     hard: bool = True, generator: Optional[torch.Generator] = None,
                     rng: Optional[Tensor] = None, schedule: Optional[Tensor] = None) -> Tensor:
    """Learned N:M masks (MaskLLM's categorical Gumbel-softmax, fused; docs/METHODS.md 13.2):
    ``scale * weight * m`` with, per group g of M consecutive input weights, ``m = P[k*]``,
    ``k* = argmax_k (logit_scale * logits[g, k] + G[g, k])`` over the C(M, N) candidate patterns
    (rows of ``sparseprune.select.nm_candidates(N, M)``, itertools.combinations order; ties to
    the lower k): exactly N of every M kept. G is Gumbel noise ``-log(-log u)`` of the fresh
    ``[seed, offset]`` (Philox element ``g * C + k``). ``logits`` has shape ``(groups, C)``,
    groups = ``weight.numel() / M`` in the order of :func:`sparseprune.select.nm_groups`; any float
    dtype. Backward: straight-through, the gradient of the soft sample
    ``y = softmax((logit_scale * logits + G) / temperature)`` (``@ P``), as
    ``F.gumbel_softmax(..., hard=True)``; ``hard=False`` uses ``y @ P`` itself (MaskLLM's soft
    mask, not N:M sparse). ``scale``: Smart Rescale. ``rng`` and ``schedule``: see
    :func:`masked_weight`. Nothing but ``[seed, offset]`` is saved."""
    return masked_weight(weight, logits, scale, method="nm_gumbel", pattern=pattern,
                         temperature=temperature, logit_scale=logit_scale, hard=hard,
                         generator=generator, rng=rng, schedule=schedule)


def nm_topk_weight(weight: Tensor, scores: Tensor, *, pattern: str = "2:4") -> Tensor:
    """Edge-Popup per N:M group (docs/METHODS.md 13.3): ``weight * m``, m keeping the N largest
    ``|scores|`` of every group of M (ties: the lower index); straight-through gradient
    ``sign(scores) * weight * g`` to the (weight-shaped) scores, ``g * m`` to the weight."""
    return masked_weight(weight, scores, method="nm_topk", pattern=pattern)


def srste_weight(weight: Tensor, *, pattern: str = "2:4", decay: float = 2e-4) -> Tensor:
    """SR-STE (Zhou et al., ICLR 2021; docs/METHODS.md 13.4): ``weight * m``, m keeping the N
    largest ``|weight|`` of every group of M (recomputed every call; ties: the lower index); the
    weight's gradient is ``g + decay * (1 - m) * weight`` (the sparse-refined straight-through
    estimator)."""
    return masked_weight(weight, None, method="srste", pattern=pattern, decay=decay)


def reparam_weight(weight: Tensor, t: Tensor, *, power: int = 4, return_sum: bool = False):
    """Budget-aware weight reparametrisation (Dupont et al., ICIP 2021): ``weight * h_t(weight)``
    with ``h_t(x) = C1 * (exp(-1 / (|t x|^power + 1)) - C2)``, C1 = 1 / (1 - e^-1), C2 = e^-1, so
    that ``h(0) = 0`` and ``h(+-inf) = 1``. ``t`` is a one-element float32 or float64 tensor (the
    layer's learned pit width, initialised to 100 by the ``"reparam"`` method); ``power`` is the
    integer n (default 4). Both ``weight`` and ``t`` get their exact gradients.

    With ``return_sum`` returns ``(w_hat, h_sum)``: ``h_sum`` is the sum of h over the tensor (the
    budget's cost, a 0-dim float32 tensor, float64 for float64 weights), computed in the same pass
    and differentiable too.
    """
    _validate.tensors({"weight": weight, "t": t})
    if t.dtype in (torch.float16, torch.bfloat16):  # a module cast to 16 bits: t stays exact
        t = t.float()
    w_hat, h_sum = ops.reparam_weight(weight, t, _validate.power(power), bool(return_sum))
    return (w_hat, h_sum) if return_sum else w_hat


# ---- hard-concrete gates (Louizos et al., ICLR 2018; docs/METHODS.md 5) -------------------------
# Sampling is one fused op each way (csrc/include/sparseprune/hard_concrete.h): the logistic noise L
# of (seed, offset) is the stochastic masks' Philox stream (every ISA and CUDA give the same bits),
# and backward regenerates it instead of saving it.


def _stretch(s: Tensor, gamma: float, zeta: float) -> Tensor:
    return torch.clamp(s * (zeta - gamma) + gamma, 0.0, 1.0)


def hard_concrete_sample(log_alpha: Tensor, *, beta: float = 2.0 / 3.0, gamma: float = -0.1,
                         zeta: float = 1.1, generator: Optional[torch.Generator] = None,
                         rng: Optional[Tensor] = None) -> Tensor:
    """A hard-concrete sample per gate: ``min(1, max(0, sigmoid((L + log_alpha) / beta) *
    (zeta - gamma) + gamma))`` with L = log(u) - log(1 - u) the project's logistic noise of a fresh
    ``[seed, offset]`` drawn from ``generator`` (or the explicit ``rng``) (element i of ``log_alpha`` in row-major order takes
    Philox element i). The uniforms are ``(k + 0.5) 2^-23``, in (0, 1) as the paper's
    ``U(eps, 1 - eps)``. Differentiable in ``log_alpha`` (0 where a gate is clipped). ``log_alpha``
    may be float32, float64, bfloat16 or float16 (math in float32, float64 for float64); the
    result has its dtype and shape (contiguous)."""
    _validate.tensor("log_alpha", log_alpha)
    beta, gamma, zeta = _validate.hard_concrete(beta, gamma, zeta)
    return ops.hard_concrete_sample(log_alpha, beta, gamma, zeta, _rng("", generator, rng))


def hard_concrete_gate(log_alpha: Tensor, *, beta: float = 2.0 / 3.0, gamma: float = -0.1,
                       zeta: float = 1.1) -> Tensor:
    """The deterministic test-time gate ``min(1, max(0, sigmoid(log_alpha) * (zeta - gamma) +
    gamma))`` (0 when ``sigmoid(log_alpha) <= -gamma / (zeta - gamma)``, 1/12 by default)."""
    _validate.tensor("log_alpha", log_alpha)
    _, gamma, zeta = _validate.hard_concrete(beta, gamma, zeta)
    return _stretch(torch.sigmoid(log_alpha), gamma, zeta)


def hard_concrete_nonzero_probability(log_alpha: Tensor, *, beta: float = 2.0 / 3.0,
                                      gamma: float = -0.1, zeta: float = 1.1) -> Tensor:
    """``P(z != 0) = sigmoid(log_alpha - beta * log(-gamma / zeta))`` per gate: the expected-L0
    penalty's terms."""
    _validate.tensor("log_alpha", log_alpha)
    beta, gamma, zeta = _validate.hard_concrete(beta, gamma, zeta)
    return torch.sigmoid(log_alpha - beta * math.log(-gamma / zeta))
