"""Typed wrappers over the compiled operators ``torch.ops.sparseprune.*``, and their fake (meta)
kernels for ``torch.compile``.

The masking ops take ``rng``, a CPU int64 tensor ``[seed, offset]`` (see :mod:`sparseprune.rng`);
:mod:`sparseprune.functional` draws it from a ``torch.Generator``. Gradients are registered in :mod:`sparseprune.autograd`, so every forward op
here is differentiable.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from . import _ext


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
    """``F.linear`` with a compressed float32 weight (see :mod:`sparseprune.formats`)."""
    return _op("sparse_linear")(input, values, row_ptr, indices, bias, format, list(weight_shape))


def sparse_conv2d(input: Tensor, values: Tensor, row_ptr: Tensor, indices: Tensor,
                  bias: Optional[Tensor], format: str, weight_shape: Sequence[int],
                  stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                  groups: int) -> Tensor:
    """``F.conv2d`` with a compressed float32 weight flattened to ``(out, in / groups * kh * kw)``;
    ``weight_shape`` is the dense weight's 4-D shape."""
    return _op("sparse_conv2d")(input, values, row_ptr, indices, bias, format, list(weight_shape),
                                list(stride), list(padding), list(dilation), groups)


# ---- fake kernels: shapes and dtypes only ---------------------------------------------------

def _empty_like(t: Tensor) -> Tensor:
    return torch.empty_like(t, memory_format=torch.contiguous_format)


def _check_mask_args(op: str, weight: Tensor, scores: Tensor, scale: Optional[Tensor]) -> None:
    """The shape and device checks of csrc/host/mask.cpp, for tracing with fake tensors."""
    torch._check_value(weight.shape == scores.shape, lambda: (
        f"sparseprune::{op}: scores must have the weight's shape {list(weight.shape)}, "
        f"got {list(scores.shape)}"))
    for name, t in (("scores", scores), ("scale", scale)):
        torch._check_value(t is None or t.device == weight.device, lambda: (
            f"sparseprune::{op}: {name} and weight must be on the same device, got {t.device} "
            f"and {weight.device}"))


def _register_fakes() -> None:
    fake = torch.library.register_fake

    @fake("sparseprune::masked_weight")
    def _masked_weight(weight, scores, scale, method, rescale, temperature, density, rng):
        _check_mask_args("masked_weight", weight, scores, scale)
        return _empty_like(weight)

    @fake("sparseprune::masked_weight_backward")
    def _masked_weight_backward(grad, weight, scores, scale, method, rescale, temperature, density,
                                rng, output_mask):
        return (_empty_like(weight) if output_mask[0] else None,
                _empty_like(scores) if output_mask[1] else None,
                _empty_like(scale) if output_mask[2] and scale is not None else None)

    @fake("sparseprune::masked_linear")
    def _masked_linear(input, weight, scores, bias, scale, method, rescale, temperature, density,
                       rng):
        _check_mask_args("masked_linear", weight, scores, scale)
        torch._check_value(input.shape[-1] == weight.shape[1], lambda: (
            f"sparseprune::masked_linear: input's last dimension must equal in_features = "
            f"{weight.shape[1]}, got input of shape {list(input.shape)}"))
        return input.new_empty((*input.shape[:-1], weight.shape[0]))

    def _mask_grads(input, weight, scores, scale, output_mask):
        return (_empty_like(input) if output_mask[0] else None,
                _empty_like(weight) if output_mask[1] else None,
                _empty_like(scores) if output_mask[2] else None,
                weight.new_empty((weight.shape[0],)) if output_mask[3] else None,
                _empty_like(scale) if output_mask[4] and scale is not None else None)

    @fake("sparseprune::masked_linear_backward")
    def _masked_linear_backward(grad_output, input, weight, scores, scale, method, rescale,
                                temperature, density, rng, output_mask):
        return _mask_grads(input, weight, scores, scale, output_mask)

    @fake("sparseprune::masked_conv2d")
    def _masked_conv2d(input, weight, scores, bias, scale, stride, padding, dilation, groups,
                       method, rescale, temperature, density, rng):
        _check_mask_args("masked_conv2d", weight, scores, scale)
        spatial = [
            (size + 2 * pad - dil * (k - 1) - 1) // st + 1
            for size, pad, dil, k, st in zip(input.shape[-2:], padding, dilation,
                                             weight.shape[-2:], stride)
        ]
        return input.new_empty((*input.shape[:-3], weight.shape[0], *spatial))

    @fake("sparseprune::masked_conv2d_backward")
    def _masked_conv2d_backward(grad_output, input, weight, scores, scale, stride, padding,
                                dilation, groups, method, rescale, temperature, density, rng,
                                output_mask):
        return _mask_grads(input, weight, scores, scale, output_mask)

    @fake("sparseprune::reparam_weight")
    def _reparam_weight(weight, t, power, compute_sum):
        torch._check_value(t.numel() == 1, lambda: (
            "sparseprune::reparam_weight: t must hold exactly one element (the layer's learned "
            f"width), got shape {list(t.shape)}"))
        torch._check_value(t.device == weight.device, lambda: (
            f"sparseprune::reparam_weight: t and weight must be on the same device, got "
            f"{t.device} and {weight.device}"))
        dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
        return _empty_like(weight), weight.new_empty(() if compute_sum else (0,), dtype=dtype)

    @fake("sparseprune::reparam_weight_backward")
    def _reparam_weight_backward(grad, grad_sum, weight, t, power, output_mask):
        return (_empty_like(weight) if output_mask[0] else None,
                torch.empty_like(t) if output_mask[1] else None)

    @fake("sparseprune::hard_concrete_sample")
    def _hard_concrete_sample(log_alpha, beta, gamma, zeta, rng):
        return _empty_like(log_alpha)

    @fake("sparseprune::hard_concrete_sample_backward")
    def _hard_concrete_sample_backward(grad, log_alpha, beta, gamma, zeta, rng, output_mask):
        torch._check_value(grad.shape == log_alpha.shape, lambda: (
            f"sparseprune::hard_concrete_sample_backward: grad must have log_alpha's shape "
            f"{list(log_alpha.shape)}, got {list(grad.shape)}"))
        return _empty_like(log_alpha) if output_mask[0] else None

    @fake("sparseprune::philox_bits")
    def _philox_bits(numel, seed, offset, device):
        return torch.empty((numel,), dtype=torch.int32, device=device)

    @fake("sparseprune::logistic_noise")
    def _logistic_noise(numel, seed, offset, device):
        return torch.empty((numel,), dtype=torch.float32, device=device)


def _register_sparse() -> None:
    """Fakes of the sparse inference ops, and a backward that says they have none."""
    fake = torch.library.register_fake

    @fake("sparseprune::sparse_linear")
    def _sparse_linear(input, values, row_ptr, indices, bias, format, weight_shape):
        torch._check_value(input.dim() >= 1 and input.shape[-1] == weight_shape[1], lambda: (
            f"sparseprune::sparse_linear: input's last dimension must equal in_features = "
            f"{weight_shape[1]}, got input of shape {list(input.shape)}"))
        return input.new_empty((*input.shape[:-1], weight_shape[0]))

    @fake("sparseprune::sparse_conv2d")
    def _sparse_conv2d(input, values, row_ptr, indices, bias, format, weight_shape, stride,
                       padding, dilation, groups):
        spatial = [(size + 2 * pad - dil * (k - 1) - 1) // st + 1 for size, pad, dil, k, st in
                   zip(input.shape[-2:], padding, dilation, weight_shape[-2:], stride)]
        return input.new_empty((*input.shape[:-3], weight_shape[0], *spatial))

    def _no_backward(ctx, grad):
        raise RuntimeError("sparseprune sparse inference ops have no backward (inference only); "
                           "train the dense or masked model and convert it with to_sparse")

    for name in ("sparse_linear", "sparse_conv2d"):
        torch.library.register_autograd(f"sparseprune::{name}", _no_backward)


if _ext.available():
    _register_fakes()
    _register_sparse()
