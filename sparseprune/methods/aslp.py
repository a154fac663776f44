"""ASLP: straight-through Gumbel-softmax masks over frozen weights (Dupont et al., ICIP 2022).

Formulas, defaults and sources: docs/METHODS.md section 1.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

import torch
from torch import Tensor

from .. import _args
from .base import MaskMethod, register

if TYPE_CHECKING:  # pragma: no cover
    from ..nn.masked import MaskedLayer

RESCALES = (None, "smart")


@register
class ASLP(MaskMethod):
    """One learned logit per weight; each forward samples ``z = 1[scores + L > 0]`` with
    L ~ Logistic(0, 1) (keep probability ``sigmoid(scores)``) and backpropagates through the soft
    sample, straight-through.

    Options:
        temperature: Gumbel-softmax temperature of the soft sample (the hard mask ignores it).
        rescale: ``"smart"`` adds Smart Rescale, a learned per-layer scalar ``layer.scale``
            (init 1) multiplying the masked weight; ``None`` for none.
        signed_constant: replace the weights by ``sign(w) * std(w)`` (per layer) when attached.
        init_logit: initial value of every score (0 keeps each weight with probability 1/2).
        train_weights: leave the weights and bias trainable (the paper freezes them).
        sample_in_eval: keep sampling masks in eval mode instead of the deterministic final mask.
        scores_dtype: dtype of the scores (default: the weight's); float32, bfloat16 or float16.

    Final mask: ``scores >= 0`` (keep when ``sigmoid(scores) >= 1/2``), with the Smart Rescale
    scalar folded into the kept weights.
    """

    name = "aslp"
    parameter_names = ("scores", "scale")

    def __init__(self, temperature: float = 1.0, rescale: Optional[str] = None,
                 signed_constant: bool = False, init_logit: float = 0.0,
                 train_weights: bool = False, sample_in_eval: bool = False,
                 scores_dtype: Optional[torch.dtype] = None):
        self.temperature = _args.temperature(temperature)
        if rescale not in RESCALES:
            raise ValueError(f"rescale must be one of {RESCALES}, got {rescale!r}")
        if not isinstance(init_logit, (int, float)) or not math.isfinite(init_logit):
            raise ValueError(f"init_logit must be a finite number, got {init_logit!r}")
        if scores_dtype not in (None, torch.float32, torch.float64, torch.bfloat16, torch.float16):
            raise ValueError(f"scores_dtype must be a floating dtype or None, got {scores_dtype!r}")
        self.rescale = rescale
        self.signed_constant = bool(signed_constant)
        self.init_logit = float(init_logit)
        self.train_weights = bool(train_weights)
        self.sample_in_eval = bool(sample_in_eval)
        self.scores_dtype = scores_dtype

    def attach(self, layer: "MaskedLayer") -> None:
        weight = layer.weight
        if self.signed_constant:
            with torch.no_grad():
                weight.copy_(torch.sign(weight) * weight.std())
        dtype = self.scores_dtype or weight.dtype
        layer.scores = torch.nn.Parameter(torch.full_like(weight, self.init_logit, dtype=dtype))
        if self.rescale == "smart":
            layer.scale = torch.nn.Parameter(torch.ones(1, device=weight.device))
        else:
            layer.register_parameter("scale", None)
        weight.requires_grad_(self.train_weights)
        if layer.bias is not None:
            layer.bias.requires_grad_(self.train_weights)

    def forward(self, layer: "MaskedLayer", input: Tensor) -> Tensor:
        if layer.training or self.sample_in_eval:
            return layer.fused(input, "aslp", scale=layer.scale, temperature=self.temperature)
        return layer.dense(input, self.final_weight(layer))

    def final_mask(self, layer: "MaskedLayer") -> Tensor:
        return layer.scores.detach() >= 0

    def final_scale(self, layer: "MaskedLayer") -> Tensor | float:
        return layer.scale.detach() if layer.scale is not None else 1.0
