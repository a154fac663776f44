"""Weight and score initialisations the mask methods offer (docs/METHODS.md 1.4, 2.2, 3.1)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .. import _validate as V


@torch.no_grad()
def signed_std_(weight: Tensor) -> Tensor:
    """ASLP's and Supermask's signed constant: ``sign(w) * std(w)`` with the empirical standard
    deviation of the layer's current weights."""
    return weight.copy_(torch.sign(weight) * weight.std())


@torch.no_grad()
def kaiming_normal_(weight: Tensor) -> Tensor:
    """N(0, 2 / fan_in), Edge-Popup's ``kaiming_normal`` (ReLU gain, fan_in)."""
    return nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu")


@torch.no_grad()
def signed_kaiming_constant_(weight: Tensor, density: float = 1.0) -> Tensor:
    """Edge-Popup's "Signed Kaiming Constant": ``sign(w) * sqrt(2) / sqrt(fan)`` with
    fan = fan_in, times ``density`` (the fraction kept) when ``scale_fan`` is on."""
    fan = nn.init._calculate_correct_fan(weight, "fan_in") * density
    return weight.copy_(torch.sign(weight) * (math.sqrt(2.0) / math.sqrt(fan)))


@torch.no_grad()
def init_weight_(weight: Tensor, kind: str | None, density: float = 1.0) -> Tensor:
    """Applies one of _validate.WEIGHT_INITS (None leaves the weights as they are)."""
    V.choice("weight_init", kind, V.WEIGHT_INITS)
    if kind == "kaiming_normal":
        kaiming_normal_(weight)
    elif kind == "signed_constant":
        signed_kaiming_constant_(weight, density)
    return weight


def kaiming_uniform_scores(weight: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """Edge-Popup's score init: ``kaiming_uniform_(a=sqrt(5))``, i.e. U(+-1/sqrt(fan_in))."""
    scores = torch.empty_like(weight, dtype=dtype or weight.dtype)
    return nn.init.kaiming_uniform_(scores, a=math.sqrt(5))
