"""Functional forms of the fused masked ops (the layers in :mod:`sparseprune.nn` call these).

Each call of a stochastic method draws a fresh ``rng = [seed, offset]`` from ``generator``
(default: torch's global CPU generator), so ``torch.manual_seed`` reproduces runs; or takes an
explicit ``rng`` (the masked layers pass their own stream, see :mod:`sparseprune.nn`). :mod:`sparseprune.reference` has the same functions in pure PyTorch,
drawing the same pair.

Rescaling (``rescale=``): ``"smart"`` multiplies the masked weight by a learned per-layer scalar
``scale`` (Smart Rescale, ASLP); ``"dwr"`` by ``numel / max(kept, 1)`` recomputed from every
sampled mask, with its gradient (Dynamic Weight Rescaling, Supermask).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from . import _validate, ops
from .ops.rng import next_rng

__all__ = ["masked_weight", "aslp_weight", "supermask_weight", "edge_popup_weight", "masked_linear",
           "masked_conv2d", "reparam_weight", "hard_concrete_sample", "hard_concrete_gate",
           "hard_concrete_nonzero_probability"]

_NO_RNG = torch.zeros(2, dtype=torch.int64)  # Edge-Popup is deterministic


def _rng(method: str, generator: Optional[torch.Generator], rng: Optional[Tensor]) -> Tensor:
    """The op's ``[seed, offset]``: ``rng`` as given (a layer's own stream), else a fresh pair
    drawn from ``generator``."""
    if method == "edge_popup":
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


def masked_weight(weight: Tensor, scores: Tensor, scale: Optional[Tensor] = None, *,
                  method: str = "aslp", rescale: Optional[str] = None, temperature: float = 1.0,
                  density: Optional[float] = None, generator: Optional[torch.Generator] = None,
                  rng: Optional[Tensor] = None) -> Tensor:
    """The masked weight of any fused ``method`` ("aslp", "supermask", "edge_popup"), with the
    options of :func:`aslp_weight`, :func:`supermask_weight` and :func:`edge_popup_weight`.
    ``rng`` (a CPU int64 ``[seed, offset]``, see :func:`sparseprune.rng.rng_state`) replaces the
    draw from ``generator``: the masked layers pass their own noise stream."""
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


def masked_linear(input: Tensor, weight: Tensor, scores: Tensor, bias: Optional[Tensor] = None, *,
                  method: str = "aslp", scale: Optional[Tensor] = None,
                  rescale: Optional[str] = None, temperature: float = 1.0,
                  density: Optional[float] = None,
                  generator: Optional[torch.Generator] = None,
                  rng: Optional[Tensor] = None) -> Tensor:
    """``F.linear(input, masked_weight, bias)`` in one op each way, for any fused ``method``
    ("aslp", "supermask", "edge_popup"; see the ``*_weight`` functions for each one's options).

    The masked weight is a transient: backward regenerates it from the saved ``rng`` in the same
    fused pass that computes the score gradients. Under ``torch.autocast`` the GEMM runs in the
    autocast dtype.
    """
    _validate.tensors({"input": input, "weight": weight, "scores": scores},
                      {"bias": bias, "scale": scale})
    tau = _validate.temperature(temperature)
    method, rescale, density = _validate.mask_options(method, scale, rescale, density)
    input, weight, bias = _autocast(input, weight, bias)
    return ops.masked_linear(input, weight, scores, bias, _scale(scale), method, rescale, tau,
                             density, _rng(method, generator, rng))


def masked_conv2d(input: Tensor, weight: Tensor, scores: Tensor, bias: Optional[Tensor] = None,
                  stride: _validate.IntPair = 1, padding: _validate.IntPair | str = 0,
                  dilation: _validate.IntPair = 1, groups: int = 1, *, method: str = "aslp",
                  scale: Optional[Tensor] = None, rescale: Optional[str] = None,
                  temperature: float = 1.0, density: Optional[float] = None,
                  generator: Optional[torch.Generator] = None,
                  rng: Optional[Tensor] = None) -> Tensor:
    """``F.conv2d(input, masked_weight, bias, stride, padding, dilation, groups)`` in one op each
    way; arguments follow ``torch.nn.functional.conv2d`` (including ``padding="same"``) and
    :func:`masked_linear`.
    """
    _validate.tensors({"input": input, "weight": weight, "scores": scores},
                      {"bias": bias, "scale": scale})
    tau = _validate.temperature(temperature)
    method, rescale, density = _validate.mask_options(method, scale, rescale, density)
    input, stride, padding, dilation = _validate.conv_args(input, weight, stride, padding, dilation)
    input, weight, bias = _autocast(input, weight, bias)
    return ops.masked_conv2d(input, weight, scores, bias, _scale(scale), stride, padding, dilation,
                             groups, method, rescale, tau, density, _rng(method, generator, rng))


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
