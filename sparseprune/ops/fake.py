"""Fake (meta) kernels of the compiled ops for ``torch.compile``: shapes, dtypes and the checks
tracing needs; and the sparse inference ops' refusal to backpropagate."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import _ext


def _empty_like(t: Tensor) -> Tensor:
    return torch.empty_like(t, memory_format=torch.contiguous_format)


def _same_device(op: str, like_name: str, like: Tensor, rng: Optional[Tensor] = None,
                 **others: Optional[Tensor]) -> None:
    """Every tensor argument on ``like``'s device, and ``rng`` on the CPU (or meta with a meta
    ``like``). The dispatcher sends an op to these fake kernels as soon as one argument is a meta
    tensor, so without this a meta ``bias`` among CPU tensors would return uninitialised memory
    as the answer."""
    for name, t in others.items():
        torch._check_value(t is None or t.device == like.device, lambda: (
            f"sparseprune::{op}: {name} and {like_name} must be on the same device, got "
            f"{t.device} and {like.device}"))
    torch._check_value(rng is None or rng.device.type == "cpu"
                       or (rng.device.type == "meta" and like.device.type == "meta"), lambda: (
        f"sparseprune::{op}: rng must be a contiguous CPU int64 tensor [seed, offset], got one "
        f"on {rng.device}"))


def _check_mask_args(op: str, weight: Tensor, scores: Tensor, scale: Optional[Tensor],
                     rng: Tensor, **others: Optional[Tensor]) -> None:
    """The shape and device checks of csrc/host/mask.cpp, for tracing with fake tensors."""
    torch._check_value(weight.shape == scores.shape, lambda: (
        f"sparseprune::{op}: scores must have the weight's shape {list(weight.shape)}, "
        f"got {list(scores.shape)}"))
    _same_device(op, "weight", weight, rng, scores=scores, scale=scale, **others)


def _register_fakes() -> None:
    fake = torch.library.register_fake

    @fake("sparseprune::masked_weight")
    def _masked_weight(weight, scores, scale, method, rescale, temperature, density, rng):
        _check_mask_args("masked_weight", weight, scores, scale, rng)
        return _empty_like(weight)

    @fake("sparseprune::masked_weight_backward")
    def _masked_weight_backward(grad, weight, scores, scale, method, rescale, temperature, density,
                                rng, output_mask):
        _check_mask_args("masked_weight_backward", weight, scores, scale, rng, grad=grad)
        return (_empty_like(weight) if output_mask[0] else None,
                _empty_like(scores) if output_mask[1] else None,
                _empty_like(scale) if output_mask[2] and scale is not None else None)

    @fake("sparseprune::masked_linear")
    def _masked_linear(input, weight, scores, bias, scale, method, rescale, temperature, density,
                       rng):
        _check_mask_args("masked_linear", weight, scores, scale, rng, input=input, bias=bias)
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
        _check_mask_args("masked_linear_backward", weight, scores, scale, rng, input=input,
                         grad_output=grad_output)
        return _mask_grads(input, weight, scores, scale, output_mask)

    @fake("sparseprune::masked_conv2d")
    def _masked_conv2d(input, weight, scores, bias, scale, stride, padding, dilation, groups,
                       method, rescale, temperature, density, rng):
        _check_mask_args("masked_conv2d", weight, scores, scale, rng, input=input, bias=bias)
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
        _check_mask_args("masked_conv2d_backward", weight, scores, scale, rng, input=input,
                         grad_output=grad_output)
        return _mask_grads(input, weight, scores, scale, output_mask)

    def _check_nm_args(op, weight, scores, scale, method, n, m):
        torch._check_value(weight.dim() >= 2 and weight.shape[1] % m == 0, lambda: (
            f"sparseprune::{op}: an N:M pattern with M={m} needs the weight's input size "
            f"(dimension 1) to be a multiple of {m}, got weight of shape {list(weight.shape)}"))
        if method == "nm_topk":
            torch._check_value(weight.shape == scores.shape, lambda: (
                f"sparseprune::{op}: nm_topk scores must have the weight's shape "
                f"{list(weight.shape)}, got {list(scores.shape)}"))
        for name, t in (("scores", scores if method != "srste" else None), ("scale", scale)):
            torch._check_value(t is None or t.device == weight.device, lambda: (
                f"sparseprune::{op}: {name} and weight must be on the same device, got "
                f"{t.device} and {weight.device}"))

    @fake("sparseprune::nm_masked_weight")
    def _nm_masked_weight(weight, scores, scale, method, n, m, schedule, hard, decay, rng):
        _check_nm_args("nm_masked_weight", weight, scores, scale, method, n, m)
        return _empty_like(weight)

    @fake("sparseprune::nm_masked_weight_backward")
    def _nm_masked_weight_backward(grad, weight, scores, scale, method, n, m, schedule, hard,
                                   decay, rng, output_mask):
        return (_empty_like(weight) if output_mask[0] else None,
                _empty_like(scores) if output_mask[1] and method != "srste" else None,
                _empty_like(scale) if output_mask[2] and scale is not None else None)

    @fake("sparseprune::nm_masked_linear")
    def _nm_masked_linear(input, weight, scores, bias, scale, method, n, m, schedule, hard,
                          decay, rng):
        _check_nm_args("nm_masked_linear", weight, scores, scale, method, n, m)
        torch._check_value(input.shape[-1] == weight.shape[1], lambda: (
            f"sparseprune::nm_masked_linear: input's last dimension must equal in_features = "
            f"{weight.shape[1]}, got input of shape {list(input.shape)}"))
        return input.new_empty((*input.shape[:-1], weight.shape[0]))

    @fake("sparseprune::nm_masked_linear_backward")
    def _nm_masked_linear_backward(grad_output, input, weight, scores, scale, method, n, m,
                                   schedule, hard, decay, rng, output_mask):
        grads = _mask_grads(input, weight, scores, scale, output_mask)
        return grads[:2] + ((grads[2] if method != "srste" else None),) + grads[3:]

    @fake("sparseprune::reparam_weight")
    def _reparam_weight(weight, t, power, compute_sum):
        torch._check_value(t.numel() == 1, lambda: (
            "sparseprune::reparam_weight: t must hold exactly one element (the layer's learned "
            f"width), got shape {list(t.shape)}"))
        _same_device("reparam_weight", "weight", weight, t=t)
        dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
        return _empty_like(weight), weight.new_empty(() if compute_sum else (0,), dtype=dtype)

    @fake("sparseprune::reparam_weight_backward")
    def _reparam_weight_backward(grad, grad_sum, weight, t, power, output_mask):
        _same_device("reparam_weight_backward", "weight", weight, t=t, grad=grad,
                     grad_sum=grad_sum)
        return (_empty_like(weight) if output_mask[0] else None,
                torch.empty_like(t) if output_mask[1] else None)

    @fake("sparseprune::hard_concrete_sample")
    def _hard_concrete_sample(log_alpha, beta, gamma, zeta, rng):
        _same_device("hard_concrete_sample", "log_alpha", log_alpha, rng)
        return _empty_like(log_alpha)

    @fake("sparseprune::hard_concrete_sample_backward")
    def _hard_concrete_sample_backward(grad, log_alpha, beta, gamma, zeta, rng, output_mask):
        _same_device("hard_concrete_sample_backward", "log_alpha", log_alpha, rng, grad=grad)
        torch._check_value(grad.shape == log_alpha.shape, lambda: (
            f"sparseprune::hard_concrete_sample_backward: grad must have log_alpha's shape "
            f"{list(log_alpha.shape)}, got {list(grad.shape)}"))
        return _empty_like(log_alpha) if output_mask[0] else None

    @fake("sparseprune::topk_threshold")
    def _topk_threshold(scores, density):
        return scores.new_empty((), dtype=torch.float32)

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
        _same_device("sparse_linear", "values", values, input=input, row_ptr=row_ptr,
                     indices=indices, bias=bias)
        torch._check_value(input.dim() >= 1 and input.shape[-1] == weight_shape[1], lambda: (
            f"sparseprune::sparse_linear: input's last dimension must equal in_features = "
            f"{weight_shape[1]}, got input of shape {list(input.shape)}"))
        return input.new_empty((*input.shape[:-1], weight_shape[0]))

    @fake("sparseprune::sparse_conv2d")
    def _sparse_conv2d(input, values, row_ptr, indices, bias, format, weight_shape, stride,
                       padding, dilation, groups):
        _same_device("sparse_conv2d", "values", values, input=input, row_ptr=row_ptr,
                     indices=indices, bias=bias)
        spatial = [(size + 2 * pad - dil * (k - 1) - 1) // st + 1 for size, pad, dil, k, st in
                   zip(input.shape[-2:], padding, dilation, weight_shape[-2:], stride)]
        return input.new_empty((*input.shape[:-3], weight_shape[0], *spatial))

    @fake("sparseprune::nm_linear")
    def _nm_linear(input, values, indices, bias, n, m, weight_shape):
        _same_device("nm_linear", "values", values, input=input, indices=indices, bias=bias)
        torch._check_value(input.dim() >= 1 and input.shape[-1] == weight_shape[1], lambda: (
            f"sparseprune::nm_linear: input's last dimension must equal in_features = "
            f"{weight_shape[1]}, got input of shape {list(input.shape)}"))
        return input.new_empty((*input.shape[:-1], weight_shape[0]))

    def _no_backward(ctx, grad):
        raise RuntimeError("sparseprune sparse inference ops have no backward (inference only); "
                           "train the dense or masked model and convert it with to_sparse")

    for name in ("sparse_linear", "sparse_conv2d", "nm_linear"):
        torch.library.register_autograd(f"sparseprune::{name}", _no_backward)


if _ext.available():
    _register_fakes()
    _register_sparse()
