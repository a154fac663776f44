"""Functional forms of the fused masked ops (the layers in :mod:`sparseprune.nn` call these).

Each call draws a fresh ``rng = [seed, offset]`` from ``generator`` (default: torch's global CPU
generator), so ``torch.manual_seed`` reproduces runs; see :mod:`sparseprune.rng`.
:mod:`sparseprune.reference` has the same functions in pure PyTorch, drawing the same pair.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import _args, autograd, ops  # noqa: F401  (autograd registers the gradients)
from .rng import next_rng

__all__ = ["aslp_weight", "masked_linear", "masked_conv2d"]


def aslp_weight(weight: Tensor, scores: Tensor, scale: Optional[Tensor] = None, *,
                temperature: float = 1.0,
                generator: Optional[torch.Generator] = None) -> Tensor:
    """ASLP masked weight: ``scale * weight * z`` with ``z = 1[scores + L > 0]``, L ~ Logistic(0, 1).

    ``z`` is a hard sample of the Gumbel-softmax over the logits ``(scores, 0)``: each weight is kept
    with probability ``sigmoid(scores)``. Backward is straight-through Gumbel-softmax: the gradient
    of ``scores`` is that of the soft sample ``y = sigmoid((scores + L) / temperature)`` at the same
    noise draw; ``scale`` (a one-element float32 tensor, Smart Rescale) gets ``sum(g * weight * z)``.
    """
    _args.tensors({"weight": weight, "scores": scores}, {"scale": scale})
    tau = _args.temperature(temperature)
    rng = next_rng(generator)
    return ops.aslp_weight(weight, scores, scale, tau, rng)


def masked_linear(input: Tensor, weight: Tensor, scores: Tensor, bias: Optional[Tensor] = None, *,
                  method: str = "aslp", scale: Optional[Tensor] = None, temperature: float = 1.0,
                  generator: Optional[torch.Generator] = None) -> Tensor:
    """``F.linear(input, masked_weight, bias)`` in one op each way.

    The masked weight (see :func:`aslp_weight`) is a transient: backward regenerates it from the
    saved ``rng`` in the same fused pass that computes the score gradients.
    """
    _args.tensors({"input": input, "weight": weight, "scores": scores},
                  {"bias": bias, "scale": scale})
    tau, method = _args.temperature(temperature), _args.method(method)
    rng = next_rng(generator)
    return ops.masked_linear(input, weight, scores, bias, scale, method, tau, rng)


def masked_conv2d(input: Tensor, weight: Tensor, scores: Tensor, bias: Optional[Tensor] = None,
                  stride: _args.IntPair = 1, padding: _args.IntPair | str = 0,
                  dilation: _args.IntPair = 1, groups: int = 1, *, method: str = "aslp",
                  scale: Optional[Tensor] = None, temperature: float = 1.0,
                  generator: Optional[torch.Generator] = None) -> Tensor:
    """``F.conv2d(input, masked_weight, bias, stride, padding, dilation, groups)`` in one op each way.

    Arguments follow ``torch.nn.functional.conv2d`` (including ``padding="same"``); the masked
    weight is a transient as in :func:`masked_linear`.
    """
    _args.tensors({"input": input, "weight": weight, "scores": scores},
                  {"bias": bias, "scale": scale})
    tau, method = _args.temperature(temperature), _args.method(method)
    stride, dilation = _args.pair("stride", stride), _args.pair("dilation", dilation)
    input, padding = _args.conv_padding(input, weight, stride, padding, dilation)
    rng = next_rng(generator)
    return ops.masked_conv2d(input, weight, scores, bias, scale, stride, padding, dilation, groups,
                             method, tau, rng)
