"""The fused ops in plain PyTorch, with the same names, arguments and seed semantics as
:mod:`sparseprune.functional`: the masking ops (ASLP, Supermask, Edge-Popup, masked linear and
conv), sparse inference, the weight reparametrisation and hard-concrete gates."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _validate
from ..ops.formats import to_dense
from ..ops.rng import next_rng, seed_offset
from ..select import nm_candidates, nm_groups, nm_ungroup, select_top, top_n_of_m
from .philox import logistic_noise, uniform


class _StraightThrough(torch.autograd.Function):
    """Exactly ``value``, with the gradient of ``surrogate`` (``value + (s - s.detach())`` would be
    NaN where the surrogate is infinite, e.g. ``|scores|`` of an infinite score)."""

    @staticmethod
    def forward(ctx, value: Tensor, surrogate: Tensor) -> Tensor:
        return value.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):
        return None, grad


def _straight_through(value: Tensor, surrogate: Tensor) -> Tensor:
    return _StraightThrough.apply(value, surrogate)


def _one_element(name: str, t: Tensor) -> Tensor:
    """A one-element tensor (Smart Rescale's scale, reparam's t) as a 0-dim one, so that it never
    broadcasts the result to another shape, as the fused ops do."""
    _validate.tensor(name, t)
    if t.numel() != 1:
        raise ValueError(f"{name} must hold exactly one element, got shape {list(t.shape)}")
    return t.reshape(())


def _check_shapes(weight: Tensor, scores: Tensor) -> None:
    if weight.shape != scores.shape:
        raise ValueError(f"scores must have the weight's shape {tuple(weight.shape)}, "
                         f"got {tuple(scores.shape)}")


def _rescaled(out: Tensor, z: Tensor, scale: Optional[Tensor], rescale: str) -> Tensor:
    if rescale == "smart":
        return out * _one_element("scale", scale).to(out.dtype)
    if rescale == "dwr":  # numel / max(kept, 1), differentiable through the kept count
        kept = z.sum()
        return out * (z.numel() / (kept + (kept.detach() == 0).to(kept.dtype)))
    return out


def _mask(method: str, weight: Tensor, scores: Tensor, scale: Optional[Tensor], rescale: str,
          temperature: float, density: float, rng: Tensor) -> Tensor:
    _check_shapes(weight, scores)
    if method == "edge_popup":
        magnitude = scores.abs().float()
        keep = select_top([magnitude], density)[0]
        z = _straight_through(keep.to(weight.dtype), magnitude.to(weight.dtype))
        return weight * z
    noise = logistic_noise(weight.numel(), *seed_offset(rng)).reshape(weight.shape)
    noise = noise.to(weight.device)
    s = scores.double()
    if method == "aslp":  # z = 1[s + L > 0]; gradient of y = sigmoid((s + L) / tau)
        keep, surrogate = s + noise > 0, torch.sigmoid((s + noise) / temperature)
    else:  # supermask: z = 1[u < sigmoid(s)] = 1[s - L > 0]; gradient of sigmoid(s)
        keep, surrogate = s - noise > 0, torch.sigmoid(s)
    z = _straight_through(keep.to(weight.dtype), surrogate.to(weight.dtype))
    return _rescaled(weight * z, z, scale, rescale)


def _functional(method: str, weight, scores, scale, rescale, temperature, density, generator):
    tau = _validate.temperature(temperature)
    method, rescale, density = _validate.mask_options(method, scale, rescale, density)
    rng = torch.zeros(2, dtype=torch.int64) if method == "edge_popup" else next_rng(generator)
    return _mask(method, weight, scores, scale, rescale, tau, density, rng)


def aslp_weight(weight: Tensor, scores: Tensor, scale: Optional[Tensor] = None, *,
                temperature: float = 1.0, rescale: Optional[str] = None,
                generator: Optional[torch.Generator] = None) -> Tensor:
    """Reference for :func:`sparseprune.functional.aslp_weight`."""
    return _functional("aslp", weight, scores, scale, rescale, temperature, None, generator)


def supermask_weight(weight: Tensor, scores: Tensor, scale: Optional[Tensor] = None, *,
                     rescale: Optional[str] = None,
                     generator: Optional[torch.Generator] = None) -> Tensor:
    """Reference for :func:`sparseprune.functional.supermask_weight`."""
    return _functional("supermask", weight, scores, scale, rescale, 1.0, None, generator)


def edge_popup_weight(weight: Tensor, scores: Tensor, *, density: float) -> Tensor:
    """Reference for :func:`sparseprune.functional.edge_popup_weight`."""
    return _functional("edge_popup", weight, scores, None, None, 1.0, density, None)


def masked_linear(input: Tensor, weight: Tensor, scores: Optional[Tensor],
                  bias: Optional[Tensor] = None, *, method: str = "aslp",
                  scale: Optional[Tensor] = None, rescale: Optional[str] = None,
                  temperature: float = 1.0, density: Optional[float] = None,
                  pattern: Optional[str] = None, logit_scale: float = 1.0, hard: bool = True,
                  decay: Optional[float] = None,
                  generator: Optional[torch.Generator] = None) -> Tensor:
    """Reference for :func:`sparseprune.functional.masked_linear`."""
    if _validate.nm_call(method, pattern):
        masked = _nm_functional(method, weight, scores, scale, rescale, density, pattern,
                                temperature, logit_scale, hard, decay, generator)
    else:
        masked = _functional(method, weight, scores, scale, rescale, temperature, density,
                             generator)
    return F.linear(input, masked, bias)


def masked_conv2d(input: Tensor, weight: Tensor, scores: Optional[Tensor],
                  bias: Optional[Tensor] = None, stride: _validate.IntPair = 1,
                  padding: _validate.IntPair | str = 0, dilation: _validate.IntPair = 1,
                  groups: int = 1, *, method: str = "aslp", scale: Optional[Tensor] = None,
                  rescale: Optional[str] = None, temperature: float = 1.0,
                  density: Optional[float] = None, pattern: Optional[str] = None,
                  logit_scale: float = 1.0, hard: bool = True, decay: Optional[float] = None,
                  generator: Optional[torch.Generator] = None) -> Tensor:
    """Reference for :func:`sparseprune.functional.masked_conv2d`."""
    input, stride, padding, dilation = _validate.conv_args(input, weight, stride, padding, dilation)
    if _validate.nm_call(method, pattern):
        masked = _nm_functional(method, weight, scores, scale, rescale, density, pattern,
                                temperature, logit_scale, hard, decay, generator)
    else:
        masked = _functional(method, weight, scores, scale, rescale, temperature, density,
                             generator)
    return F.conv2d(input, masked, bias, stride, padding, dilation, groups)


# ---- N:M patterns (docs/METHODS.md 13): the exact oracle of the fused N:M ops ------------------

def nm_gumbel_noise(groups: int, candidates: int, seed: int, offset: int) -> Tensor:
    """The float64 Gumbel noise ``-log(-log u)`` of the N:M ops, ``(groups, candidates)``: element
    ``(g, k)`` takes Philox element ``g * candidates + k`` of ``(seed, offset)``."""
    u = uniform(groups * candidates, seed, offset).reshape(groups, candidates)
    return -torch.log(-torch.log(u))


def nm_gumbel_from_noise(weight: Tensor, logits: Tensor, noise: Tensor,
                         scale: Optional[Tensor] = None, *, pattern: str = "2:4",
                         temperature: float = 1.0, logit_scale: float = 1.0,
                         hard: bool = True) -> Tensor:
    """The nm_gumbel masked weight for a given Gumbel ``noise`` ``(groups, C)``, in plain
    autograd: ``a = logit_scale * logits + noise``, ``y = softmax(a / temperature)``; hard: the
    one-hot of the first maximum of ``a`` with ``y``'s gradient (straight-through); the mask
    ``y @ P`` regrouped to the weight's shape. Computed in the weight's dtype (promoted with the
    logits')."""
    n, m = _validate.pattern(pattern)
    dtype = torch.promote_types(weight.dtype, logits.dtype)
    a = logit_scale * logits.to(dtype) + noise.to(weight.device, dtype)
    y = torch.softmax(a / temperature, dim=1)
    if hard:
        one_hot = F.one_hot(a.detach().argmax(dim=1), a.shape[1]).to(dtype)
        y = _straight_through(one_hot, y)
    mask = nm_ungroup(y @ nm_candidates(n, m, device=weight.device).to(dtype), weight.shape)
    out = weight.to(dtype) * mask
    return out * scale.to(dtype) if scale is not None else out


def _nm_functional(method, weight, scores, scale, rescale, density, pattern, temperature,
                   logit_scale, hard, decay, generator):
    tau = _validate.temperature(temperature)
    method, n, m, kappa, hard, decay = _validate.nm_options(method, pattern, scale, rescale,
                                                           density, logit_scale, hard, decay)
    nm_groups(weight, m)  # the input size must be a multiple of M
    if method == "nm_topk":
        _check_shapes(weight, scores)
        magnitude = scores.abs()
        keep = top_n_of_m(magnitude.detach(), n, m)
        return weight * _straight_through(keep.to(weight.dtype), magnitude.to(weight.dtype))
    if method == "srste":
        return _SrSte.apply(weight, n, m, decay)
    c = math.comb(m, n)
    seed, offset = seed_offset(next_rng(generator))
    noise = nm_gumbel_noise(weight.numel() // m, c, seed, offset)
    return nm_gumbel_from_noise(weight, scores, noise, scale, pattern=f"{n}:{m}",
                                temperature=tau, logit_scale=kappa, hard=hard)


class _SrSte(torch.autograd.Function):
    """SR-STE: the magnitude N:M mask of the weight, gradient ``g + decay * (1 - m) * w``."""

    @staticmethod
    def forward(ctx, weight, n, m, decay):
        keep = top_n_of_m(weight.detach().abs(), n, m)
        ctx.save_for_backward(weight, keep)
        ctx.decay = decay
        return torch.where(keep, weight, torch.zeros((), dtype=weight.dtype))

    @staticmethod
    def backward(ctx, grad):
        weight, keep = ctx.saved_tensors
        return grad + ctx.decay * (~keep).to(weight.dtype) * weight, None, None, None


def nm_gumbel_weight(weight: Tensor, logits: Tensor, scale: Optional[Tensor] = None, *,
                     pattern: str = "2:4", temperature: float = 1.0, logit_scale: float = 1.0,
                     hard: bool = True, generator: Optional[torch.Generator] = None) -> Tensor:
    """Reference for :func:`sparseprune.functional.nm_gumbel_weight` (the float64 Philox noise of
    the same draw from ``generator``)."""
    return _nm_functional("nm_gumbel", weight, logits, scale, None, None, pattern, temperature,
                          logit_scale, hard, None, generator)


def nm_topk_weight(weight: Tensor, scores: Tensor, *, pattern: str = "2:4") -> Tensor:
    """Reference for :func:`sparseprune.functional.nm_topk_weight`."""
    return _nm_functional("nm_topk", weight, scores, None, None, None, pattern, 1.0, 1.0, True,
                          None, None)


def srste_weight(weight: Tensor, *, pattern: str = "2:4", decay: float = 2e-4) -> Tensor:
    """Reference for :func:`sparseprune.functional.srste_weight`."""
    return _nm_functional("srste", weight, None, None, None, None, pattern, 1.0, 1.0, True, decay,
                          None)


# ---- sparse inference (issue 7): the dense computation the sparse kernels must match ----------

def sparse_linear(input: Tensor, values: Tensor, row_ptr: Tensor, indices: Tensor,
                  bias: Optional[Tensor], format: str, weight_shape) -> Tensor:
    """``F.linear`` with the dense weight of a compressed one (:mod:`sparseprune.formats`)."""
    weight = to_dense(values, row_ptr, indices, format, *weight_shape)
    return F.linear(input, weight, bias)


def sparse_conv2d(input: Tensor, values: Tensor, row_ptr: Tensor, indices: Tensor,
                  bias: Optional[Tensor], format: str, weight_shape, stride, padding, dilation,
                  groups: int) -> Tensor:
    """``F.conv2d`` with the dense weight of a compressed one."""
    rows, cols = weight_shape[0], math.prod(weight_shape[1:])
    weight = to_dense(values, row_ptr, indices, format, rows, cols).view(weight_shape)
    return F.conv2d(input, weight, bias, stride, padding, dilation, groups)


# ---- budget-aware weight reparametrisation (docs/METHODS.md 4) ---------------------------------

_C2 = math.exp(-1.0)


def reparam_h(weight: Tensor, t: Tensor, power: int = 4) -> Tensor:
    """``h_t(x) = C1 * (exp(-1 / (|t x|^n + 1)) - C2)``, C1 = 1/(1 - e^-1), C2 = e^-1, by autograd."""
    u = (_one_element("t", t).to(weight.dtype) * weight).abs() ** _validate.power(power)
    return (torch.exp(-1.0 / (u + 1.0)) - _C2) * (1.0 / (1.0 - _C2))


def reparam_weight(weight: Tensor, t: Tensor, *, power: int = 4, return_sum: bool = False):
    """Same as :func:`sparseprune.functional.reparam_weight`, in plain PyTorch."""
    _validate.tensors({"weight": weight, "t": t})
    h = reparam_h(weight, t, power)
    w_hat = weight * h
    if not return_sum:
        return w_hat
    return w_hat, h.sum(dtype=torch.float64 if weight.dtype == torch.float64 else torch.float32)


def hard_concrete_sample(log_alpha: Tensor, *, beta: float = 2.0 / 3.0, gamma: float = -0.1,
                         zeta: float = 1.1, generator: Optional[torch.Generator] = None) -> Tensor:
    """Same as :func:`sparseprune.functional.hard_concrete_sample`, with the float64 NumPy Philox
    noise (the same draw from ``generator``)."""
    beta, gamma, zeta = _validate.hard_concrete(beta, gamma, zeta)
    noise = logistic_noise(log_alpha.numel(), *seed_offset(next_rng(generator)))
    return hard_concrete_from_noise(log_alpha, noise.reshape(log_alpha.shape), beta=beta,
                                    gamma=gamma, zeta=zeta)


def hard_concrete_from_noise(log_alpha: Tensor, noise: Tensor, *, beta: float = 2.0 / 3.0,
                             gamma: float = -0.1, zeta: float = 1.1) -> Tensor:
    """The hard-concrete sample for a given logistic ``noise`` (log_alpha's shape), computed in
    log_alpha's dtype; autograd gives the pathwise gradient."""
    beta, gamma, zeta = _validate.hard_concrete(beta, gamma, zeta)
    noise = noise.to(log_alpha.device, log_alpha.dtype)
    s = torch.sigmoid((noise + log_alpha) / beta)
    # hardtanh, as the seed code: no gradient where it clips, even at exactly 0 or 1 (METHODS 5.2).
    return F.hardtanh(s * (zeta - gamma) + gamma, 0.0, 1.0)
