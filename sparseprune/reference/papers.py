"""The seed papers' code paths, as their public code writes them: the baselines the benchmarks
time the fused kernels against."""

from __future__ import annotations

import copy
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _validate
from ..nn import MaskedConv2d, MaskedLinear
from ..select import nm_candidates, nm_groups, nm_ungroup
from .masks import _check_shapes


def gumbel_softmax_weight(weight: Tensor, scores: Tensor, scale: Optional[Tensor] = None, *,
                          temperature: float = 1.0) -> Tensor:
    """The seed paper's code path: ``F.gumbel_softmax`` over the stacked logits ``(scores, 0)``.

    Same distribution and straight-through gradient as :func:`aslp_weight`, from torch's own
    random stream (two exponentials per weight), materialising the noise and the soft sample.
    """
    _check_shapes(weight, scores)
    temperature = _validate.temperature(temperature)
    logits = torch.stack((scores, torch.zeros_like(scores)))
    z = F.gumbel_softmax(logits, tau=temperature, hard=True, dim=0)[0]
    out = weight * z
    return out * scale if scale is not None else out


def bernoulli_dwr_weight(weight: Tensor, scores: Tensor, *, dwr: bool = True) -> Tensor:
    """Supermask as its reference code writes it: ``b = bernoulli(sigmoid(s))``, the
    straight-through ``m = b + sigmoid(s) - sigmoid(s).detach()``, and with DWR
    ``(numel / m.sum()) * w * m``."""
    _check_shapes(weight, scores)
    p = torch.sigmoid(scores)
    m = torch.bernoulli(p.detach()) + p - p.detach()
    return (m.numel() / m.sum()) * weight * m if dwr else weight * m


class _KeepTop(torch.autograd.Function):
    """0/1 mask of the entries above the threshold; the gradient passes through unchanged."""

    @staticmethod
    def forward(ctx, magnitude: Tensor, threshold: Tensor) -> Tensor:
        return (magnitude > threshold).to(magnitude.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


def kthvalue_weight(weight: Tensor, scores: Tensor, *, density: float) -> Tensor:
    """Edge-Popup as its reference code writes it: the per-layer ``kthvalue`` of ``|scores|`` as a
    threshold, a 0/1 mask, and a straight-through backward."""
    _check_shapes(weight, scores)
    magnitude = scores.abs()
    pruned = scores.numel() - round(_validate.density(density) * scores.numel())
    if pruned == 0:
        return weight * (magnitude - magnitude.detach() + 1)
    threshold = torch.kthvalue(magnitude.detach().flatten(), pruned).values
    return weight * _KeepTop.apply(magnitude, threshold)


class SeedPaperLayer(nn.Module):
    """A linear or conv layer masked the way a seed paper's code does it, each forward:
    ``"aslp"`` :func:`gumbel_softmax_weight` (with the Smart Rescale ``scale`` if given),
    ``"supermask"`` :func:`bernoulli_dwr_weight`, ``"edge_popup"`` :func:`kthvalue_weight`;
    then ``F.linear`` / the layer's convolution. Weight and bias are frozen; ``scores`` (and
    ``scale``) are trained."""

    def __init__(self, layer: nn.Linear | nn.Conv2d, method: str = "aslp",
                 scores: Optional[Tensor] = None, scale: Optional[Tensor] = None, *,
                 temperature: float = 1.0, dwr: bool = True, density: float = 0.5):
        super().__init__()
        if method not in ("aslp", "supermask", "edge_popup"):
            raise ValueError(f"method must be aslp, supermask or edge_popup, got {method!r}")
        self.layer, self.method = layer, method
        self.layer.requires_grad_(False)
        self.scores = nn.Parameter(torch.zeros_like(layer.weight) if scores is None
                                   else scores.detach().clone())
        self.scale = None if scale is None else nn.Parameter(scale.detach().clone())
        self.temperature = _validate.temperature(temperature)
        self.dwr, self.density = dwr, _validate.density(density)

    def masked_weight(self) -> Tensor:
        weight = self.layer.weight
        if self.method == "aslp":
            return gumbel_softmax_weight(weight, self.scores, self.scale,
                                         temperature=self.temperature)
        if self.method == "supermask":
            return bernoulli_dwr_weight(weight, self.scores, dwr=self.dwr)
        return kthvalue_weight(weight, self.scores, density=self.density)

    def forward(self, input: Tensor) -> Tensor:
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(input, self.masked_weight(), self.layer.bias)
        return F.linear(input, self.masked_weight(), self.layer.bias)


def seed_paper_copy(model: nn.Module, method: str = "aslp", **options) -> nn.Module:
    """A copy of ``model`` whose masked layers (or plain ``nn.Linear`` / ``nn.Conv2d``) are
    :class:`SeedPaperLayer` s with the same weights, scores and scales: the seed papers' code path
    for the same network, for benchmarks. A masked layer keeps its own method and options;
    ``method`` and ``options`` (see SeedPaperLayer) apply to plain layers."""
    twin = copy.deepcopy(model)
    for name, module in list(twin.named_modules()):
        if isinstance(module, (MaskedLinear, MaskedConv2d)):
            m = module.method
            new = SeedPaperLayer(module.to_dense(module.weight), m.name, module.scores,
                                 getattr(module, "scale", None),
                                 temperature=getattr(m, "temperature", 1.0),
                                 dwr=getattr(m, "rescale", None) == "dwr",
                                 density=getattr(m, "density", 0.5))
        elif type(module) in (nn.Linear, nn.Conv2d):
            new = SeedPaperLayer(module, method, **options)
        else:
            continue
        if name == "":
            return new
        parent, _, child = name.rpartition(".")
        setattr(twin.get_submodule(parent), child, new)
    return twin


# ---- N:M masks: MaskLLM's and SR-STE's code paths (docs/METHODS.md 13.1, 13.4) -----------------

def maskllm_weight(weight: Tensor, logits: Tensor, *, pattern: str = "2:4",
                   temperature: float = 4.0, logit_scale: float = 100.0,
                   hard: bool = False) -> Tensor:
    """MaskLLM's layer as its code computes it (NVlabs/MaskLLM ``DifferentiableMask.forward``):
    ``F.gumbel_softmax(logit_scale * logits, tau=temperature, hard=hard)`` over the C candidates
    of each group (torch's own noise, a full-size tensor), the soft (default) or straight-through
    choice times the ``[C, M]`` pattern matrix, reshaped to the weight, times the weight. The same
    distribution and gradient as :func:`sparseprune.reference.nm_gumbel_weight`."""
    n, m = _validate.pattern(pattern)
    y = F.gumbel_softmax(logits * logit_scale, tau=temperature, hard=hard, dim=1)
    patterns = nm_candidates(n, m, device=weight.device).to(y.dtype)
    return weight * nm_ungroup(y @ patterns, weight.shape).to(weight.dtype)


class _SrSteMask(torch.autograd.Function):
    """SR-STE's ``Sparse`` function (aojunzz/NM-sparsity): the M - N smallest |w| of each group
    zeroed by an ``argsort``, the mask saved; backward ``g + decay * (1 - mask) * w``."""

    @staticmethod
    def forward(ctx, weight, n, m, decay):
        groups = nm_groups(weight.detach().abs(), m)
        pruned = torch.argsort(groups, dim=1)[:, :m - n]
        mask = torch.ones_like(groups).scatter_(1, pruned, 0.0)
        mask = nm_ungroup(mask, weight.shape)
        ctx.save_for_backward(weight, mask)
        ctx.decay = decay
        return weight * mask

    @staticmethod
    def backward(ctx, grad):
        weight, mask = ctx.saved_tensors
        return grad + ctx.decay * (1 - mask) * weight, None, None, None


def srste_paper_weight(weight: Tensor, *, pattern: str = "2:4", decay: float = 2e-4) -> Tensor:
    """SR-STE as its reference code computes it (argsort per group, the mask saved for backward).
    Ties between equal |w| follow ``argsort`` (unspecified), not our lower-index rule."""
    n, m = _validate.pattern(pattern)
    return _SrSteMask.apply(weight, n, m, decay)


class MaskLLMLinear(nn.Module):
    """A linear layer masked the way MaskLLM's code does it, each forward
    (:func:`maskllm_weight`): the weight and bias are frozen, ``gate`` (the ``[G, C]`` logits) is
    trained; ``temperature`` and ``logit_scale`` as MaskLLM's schedules would set them now."""

    def __init__(self, linear: nn.Linear, gate: Tensor, *, pattern: str = "2:4",
                 temperature: float = 4.0, logit_scale: float = 100.0, hard: bool = False):
        super().__init__()
        self.linear = linear.requires_grad_(False)
        self.gate = nn.Parameter(gate.detach().float().clone())
        self.pattern, self.temperature, self.logit_scale, self.hard = (pattern, temperature,
                                                                       logit_scale, hard)

    def forward(self, input: Tensor) -> Tensor:
        if not self.training:  # the eval branch: the argmax pattern
            n, m = _validate.pattern(self.pattern)
            best = nm_candidates(n, m, device=self.gate.device)[self.gate.argmax(dim=1)]
            mask = nm_ungroup(best, self.linear.weight.shape).to(self.linear.weight.dtype)
            return F.linear(input, self.linear.weight * mask, self.linear.bias)
        weight = maskllm_weight(self.linear.weight, self.gate, pattern=self.pattern,
                                temperature=self.temperature, logit_scale=self.logit_scale,
                                hard=self.hard)
        return F.linear(input, weight, self.linear.bias)


class SRSTELinear(nn.Module):
    """A linear layer trained with SR-STE's code path (:func:`srste_paper_weight`)."""

    def __init__(self, linear: nn.Linear, *, pattern: str = "2:4", decay: float = 2e-4):
        super().__init__()
        self.linear, self.pattern, self.decay = linear, pattern, decay

    def forward(self, input: Tensor) -> Tensor:
        weight = srste_paper_weight(self.linear.weight, pattern=self.pattern, decay=self.decay)
        return F.linear(input, weight, self.linear.bias)


def nm_paper_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose N:M masked linear layers run their paper's code path: learned
    pattern logits (``"aslp"`` with a pattern) become :class:`MaskLLMLinear` with the same logits
    and the layer's current temperature and logit scale (and its hard / soft mode), ``"srste"``
    layers :class:`SRSTELinear`. For the benchmarks."""
    twin = copy.deepcopy(model)
    for name, module in list(twin.named_modules()):
        method = getattr(module, "method", None)
        if not isinstance(module, MaskedLinear) or getattr(method, "pattern", None) is None:
            continue
        plain = module.to_dense(module.weight)
        pattern = f"{method.pattern[0]}:{method.pattern[1]}"
        if method.name == "srste":
            new = SRSTELinear(plain, pattern=pattern, decay=method.decay)
        elif method.name == "aslp":
            tau, kappa = method.current(module)
            new = MaskLLMLinear(plain, module.scores, pattern=pattern, temperature=tau,
                                logit_scale=kappa, hard=method.hard)
        else:
            continue
        if name == "":
            return new
        parent, _, child = name.rpartition(".")
        setattr(twin.get_submodule(parent), child, new)
    return twin
