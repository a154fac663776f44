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
