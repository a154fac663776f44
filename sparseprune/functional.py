"""Functional forms of the fused masked ops (the layers in :mod:`sparseprune.nn` call these).

Each call of a stochastic method draws a fresh ``rng = [seed, offset]`` from ``generator``
(default: torch's global CPU generator), so ``torch.manual_seed`` reproduces runs; see
:mod:`sparseprune.rng`. :mod:`sparseprune.reference` has the same functions in pure PyTorch,
drawing the same pair.

Rescaling (``rescale=``): ``"smart"`` multiplies the masked weight by a learned per-layer scalar
``scale`` (Smart Rescale, ASLP); ``"dwr"`` by ``numel / max(kept, 1)`` recomputed from every
sampled mask, with its gradient (Dynamic Weight Rescaling, Supermask).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import _args, autograd, ops  # noqa: F401  (autograd registers the gradients)
from .rng import next_rng

__all__ = ["aslp_weight", "supermask_weight", "edge_popup_weight", "masked_linear",
           "masked_conv2d"]

_NO_RNG = torch.zeros(2, dtype=torch.int64)  # Edge-Popup is deterministic


def _rng(method: str, generator: Optional[torch.Generator]) -> Tensor:
    return _NO_RNG if method == "edge_popup" else next_rng(generator)


def _masked_weight(weight, scores, scale, method, rescale, temperature, density, generator):
    _args.tensors({"weight": weight, "scores": scores}, {"scale": scale})
    tau = _args.temperature(temperature)
    method, rescale, density = _args.mask_options(method, scale, rescale, density)
    return ops.masked_weight(weight, scores, scale, method, rescale, tau, density,
                             _rng(method, generator))


def aslp_weight(weight: Tensor, scores: Tensor, scale: Optional[Tensor] = None, *,
                temperature: float = 1.0, rescale: Optional[str] = None,
                generator: Optional[torch.Generator] = None) -> Tensor:
    """ASLP masked weight: ``scale * weight * z`` with ``z = 1[scores + L > 0]``, L ~ Logistic(0, 1).

    ``z`` is a hard sample of the Gumbel-softmax over the logits ``(scores, 0)``: each weight is kept
    with probability ``sigmoid(scores)``. Backward is straight-through Gumbel-softmax: the gradient
    of ``scores`` is that of the soft sample ``y = sigmoid((scores + L) / temperature)`` at the same
    noise draw; ``scale`` (a one-element float32 tensor, Smart Rescale; ``rescale`` defaults to
    "smart" when it is given) gets ``sum(g * weight * z)``. ``rescale="dwr"`` rescales by
    ``numel / kept`` instead.
    """
    return _masked_weight(weight, scores, scale, "aslp", rescale, temperature, None, generator)


def supermask_weight(weight: Tensor, scores: Tensor, scale: Optional[Tensor] = None, *,
                     rescale: Optional[str] = None,
                     generator: Optional[torch.Generator] = None) -> Tensor:
    """Supermask (Zhou et al.): ``weight * b`` with ``b ~ Bernoulli(sigmoid(scores))`` (kept iff
    ``u < sigmoid(scores)`` for the element's uniform u), straight-through with the noise-free
    gradient ``sigmoid'(scores)``. ``rescale="dwr"`` multiplies by ``numel / sum(b)`` with the
    gradient through the denominator, as the reference code has it; ``scale`` gives Smart Rescale.
    """
    return _masked_weight(weight, scores, scale, "supermask", rescale, 1.0, None, generator)


def edge_popup_weight(weight: Tensor, scores: Tensor, *, density: float) -> Tensor:
    """Edge-Popup (Ramanujan et al.): ``weight * m``, m keeping exactly ``round(density * numel)``
    weights with the largest ``|scores|`` (ties in index order); straight-through gradient
    ``sign(scores) * weight * g``. ``density`` is the fraction kept."""
    return _masked_weight(weight, scores, None, "edge_popup", None, 1.0, density, None)


def masked_linear(input: Tensor, weight: Tensor, scores: Tensor, bias: Optional[Tensor] = None, *,
                  method: str = "aslp", scale: Optional[Tensor] = None,
                  rescale: Optional[str] = None, temperature: float = 1.0,
                  density: Optional[float] = None,
                  generator: Optional[torch.Generator] = None) -> Tensor:
    """``F.linear(input, masked_weight, bias)`` in one op each way, for any fused ``method``
    ("aslp", "supermask", "edge_popup"; see the ``*_weight`` functions for each one's options).

    The masked weight is a transient: backward regenerates it from the saved ``rng`` in the same
    fused pass that computes the score gradients.
    """
    _args.tensors({"input": input, "weight": weight, "scores": scores},
                  {"bias": bias, "scale": scale})
    tau = _args.temperature(temperature)
    method, rescale, density = _args.mask_options(method, scale, rescale, density)
    return ops.masked_linear(input, weight, scores, bias, scale, method, rescale, tau, density,
                             _rng(method, generator))


def masked_conv2d(input: Tensor, weight: Tensor, scores: Tensor, bias: Optional[Tensor] = None,
                  stride: _args.IntPair = 1, padding: _args.IntPair | str = 0,
                  dilation: _args.IntPair = 1, groups: int = 1, *, method: str = "aslp",
                  scale: Optional[Tensor] = None, rescale: Optional[str] = None,
                  temperature: float = 1.0, density: Optional[float] = None,
                  generator: Optional[torch.Generator] = None) -> Tensor:
    """``F.conv2d(input, masked_weight, bias, stride, padding, dilation, groups)`` in one op each
    way; arguments follow ``torch.nn.functional.conv2d`` (including ``padding="same"``) and
    :func:`masked_linear`.
    """
    _args.tensors({"input": input, "weight": weight, "scores": scores},
                  {"bias": bias, "scale": scale})
    tau = _args.temperature(temperature)
    method, rescale, density = _args.mask_options(method, scale, rescale, density)
    input, stride, padding, dilation = _args.conv_args(input, weight, stride, padding, dilation)
    return ops.masked_conv2d(input, weight, scores, bias, scale, stride, padding, dilation, groups,
                             method, rescale, tau, density, _rng(method, generator))
