"""The torch-op layer: typed wrappers over the compiled operators ``torch.ops.sparseprune.*``.

Beside them: :mod:`._ext` loads the compiled module, :mod:`.fake` registers the fake (meta)
kernels for ``torch.compile``, :mod:`.autograd` the gradients (so every forward op here is
differentiable), :mod:`.rng` the ``[seed, offset]`` pairs, :mod:`.formats` the compressed weight
layouts of the sparse ops.

The masking ops take ``rng``, a CPU int64 tensor ``[seed, offset]`` (see :mod:`.rng`);
:mod:`sparseprune.functional` draws it from a ``torch.Generator``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from . import _ext, autograd, fake  # noqa: F401  (autograd, fake: register gradients, fake kernels)


def _op(name: str):
    _ext.require()
    return getattr(torch.ops.sparseprune, name)


def masked_weight(weight: Tensor, scores: Tensor, scale: Optional[Tensor], method: str,
                  rescale: str, temperature: float, density: float, rng: Tensor) -> Tensor:
    """The masked weight of ``method`` ("aslp", "supermask", "edge_popup") with ``rescale``
    ("none", "smart" with ``scale``, "dwr"); ``density`` is Edge-Popup's fraction kept."""
    return _op("masked_weight")(weight, scores, scale, method, rescale, temperature, density, rng)


def aslp_weight(weight: Tensor, scores: Tensor, scale: Optional[Tensor], temperature: float,
                rng: Tensor) -> Tensor:
    """ASLP masked weight ``scale * weight * 1[scores + L > 0]``, L logistic noise of ``rng``."""
    rescale = "none" if scale is None else "smart"
    return masked_weight(weight, scores, scale, "aslp", rescale, temperature, 1.0, rng)


def masked_linear(input: Tensor, weight: Tensor, scores: Tensor, bias: Optional[Tensor],
                  scale: Optional[Tensor], method: str, rescale: str, temperature: float,
                  density: float, rng: Tensor) -> Tensor:
    """``F.linear`` with the masked weight, which exists only as a transient."""
    return _op("masked_linear")(input, weight, scores, bias, scale, method, rescale, temperature,
                                density, rng)


def masked_conv2d(input: Tensor, weight: Tensor, scores: Tensor, bias: Optional[Tensor],
                  scale: Optional[Tensor], stride: Sequence[int], padding: Sequence[int],
                  dilation: Sequence[int], groups: int, method: str, rescale: str,
                  temperature: float, density: float, rng: Tensor) -> Tensor:
    """``F.conv2d`` with the masked weight, which exists only as a transient."""
    return _op("masked_conv2d")(input, weight, scores, bias, scale, list(stride), list(padding),
                                list(dilation), groups, method, rescale, temperature, density, rng)


def nm_masked_weight(weight: Tensor, scores: Tensor, scale: Optional[Tensor], method: str, n: int,
                     m: int, schedule: Tensor, hard: bool, decay: float, rng: Tensor) -> Tensor:
    """An N:M method's masked weight: ``method`` "nm_gumbel" (``scores`` the ``(groups, C(m, n))``
    pattern logits, a sampled pattern per group of m inputs; ``schedule`` a CPU float64
    ``[temperature, logit_scale]``), "nm_topk" (weight-shaped scores, the top n ``|s|``) or
    "srste" (the top n ``|w|``; ``scores`` unused)."""
    return _op("nm_masked_weight")(weight, scores, scale, method, n, m, schedule, hard, decay, rng)


def nm_masked_linear(input: Tensor, weight: Tensor, scores: Tensor, bias: Optional[Tensor],
                     scale: Optional[Tensor], method: str, n: int, m: int, schedule: Tensor,
                     hard: bool, decay: float, rng: Tensor) -> Tensor:
    """``F.linear`` with an N:M method's masked weight, which exists only as a transient."""
    return _op("nm_masked_linear")(input, weight, scores, bias, scale, method, n, m, schedule,
                                   hard, decay, rng)


def reparam_weight(weight: Tensor, t: Tensor, power: int,
                   compute_sum: bool) -> tuple[Tensor, Tensor]:
    """Budget-aware reparametrisation ``(w_hat, sum of h)`` with ``w_hat = weight * h_t(weight)``,
    ``h_t(x) = C1 * (exp(-1 / (|t x|^power + 1)) - C2)``; the sum is a 0-dim float32 tensor
    (float64 for float64 weights) when ``compute_sum``, else an empty one."""
    return _op("reparam_weight")(weight, t, power, compute_sum)


def hard_concrete_sample(log_alpha: Tensor, beta: float, gamma: float, zeta: float,
                         rng: Tensor) -> Tensor:
    """Hard-concrete gates ``clamp(sigmoid((L + log_alpha) / beta) * (zeta - gamma) + gamma, 0, 1)``
    with L the logistic noise of ``rng`` (element i of ``log_alpha``, row-major, takes Philox
    element i); pathwise gradient, 0 where a gate is clipped."""
    return _op("hard_concrete_sample")(log_alpha, beta, gamma, zeta, rng)


def philox_bits(numel: int, seed: int, offset: int, device: torch.device | str = "cpu") -> Tensor:
    """The raw Philox4x32-10 words of elements ``0 .. numel-1`` (int32 bit patterns)."""
    return _op("philox_bits")(numel, seed, offset, torch.device(device))


def logistic_noise(numel: int, seed: int, offset: int,
                   device: torch.device | str = "cpu") -> Tensor:
    """The logistic noise ``L = log(u) - log(1 - u)`` the ASLP masks use (float32)."""
    return _op("logistic_noise")(numel, seed, offset, torch.device(device))


def sparse_linear(input: Tensor, values: Tensor, row_ptr: Tensor, indices: Tensor,
                  bias: Optional[Tensor], format: str, weight_shape: Sequence[int]) -> Tensor:
    """``F.linear`` with a compressed float32 weight (see :mod:`.formats`)."""
    return _op("sparse_linear")(input, values, row_ptr, indices, bias, format, list(weight_shape))


def sparse_conv2d(input: Tensor, values: Tensor, row_ptr: Tensor, indices: Tensor,
                  bias: Optional[Tensor], format: str, weight_shape: Sequence[int],
                  stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                  groups: int) -> Tensor:
    """``F.conv2d`` with a compressed float32 weight flattened to ``(out, in / groups * kh * kw)``;
    ``weight_shape`` is the dense weight's 4-D shape."""
    return _op("sparse_conv2d")(input, values, row_ptr, indices, bias, format, list(weight_shape),
                                list(stride), list(padding), list(dilation), groups)



def nm_linear(input: Tensor, values: Tensor, indices: Tensor, bias: Optional[Tensor], n: int,
              m: int, weight_shape: Sequence[int]) -> Tensor:
    """``F.linear`` with an N:M weight in the ``"nm"`` layout (see :mod:`.nm_format`), CPU;
    float32 or bfloat16 input (the output's dtype), computed in float32."""
    return _op("nm_linear")(input, values, indices, bias, n, m, list(weight_shape))
