"""Argument normalisation shared by the functional API and its pure-PyTorch reference, so both
accept exactly the same inputs (error messages name the argument and the value received)."""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor
import torch.nn.functional as F

IntPair = Union[int, Sequence[int]]

# Methods whose per-weight mask work is fused into masked_weight / masked_linear / masked_conv2d.
FUSED_METHODS = ("aslp", "supermask", "edge_popup")
STOCHASTIC_METHODS = ("aslp", "supermask")
RESCALES = (None, "smart", "dwr")
SCOPES = ("global", "local")


def tensor(name: str, value, optional: bool = False) -> Optional[Tensor]:
    if value is None and optional:
        return None
    if not isinstance(value, Tensor):
        kind = "a Tensor or None" if optional else "a Tensor"
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__}")
    return value


def tensors(required: dict, optional: Optional[dict] = None) -> None:
    """Checks that every required argument is a Tensor and every optional one a Tensor or None."""
    for name, value in required.items():
        tensor(name, value)
    for name, value in (optional or {}).items():
        tensor(name, value, optional=True)


def temperature(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"temperature must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {value}")
    return float(value)


def method(value) -> str:
    if value not in FUSED_METHODS:
        raise ValueError(f"method must be one of {', '.join(FUSED_METHODS)}, got {value!r}")
    return value


def density(value, *, required: bool = True) -> float:
    """A fraction of weights kept, in (0, 1]."""
    if value is None and not required:
        return 1.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not (0 < value <= 1) or math.isnan(value):
        raise ValueError(f"density must be a number in (0, 1], got {value!r}")
    return float(value)


def scope(value) -> str:
    """Where a density applies: over all layers together ("global") or in each ("local")."""
    if not isinstance(value, str) or value not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {value!r}")
    return value


def power(value) -> int:
    """The reparametrisation exponent n: an integer in [1, 64]."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 64:
        raise ValueError(f"power (the exponent n) must be an integer in [1, 64], got {value!r}")
    return value


def finite_number(name: str, value, *, minimum: Optional[float] = None,
                  strict: bool = False) -> float:
    """A finite real number, optionally >= minimum (> minimum when strict)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    bad = not math.isfinite(value) or (minimum is not None and (
        value <= minimum if strict else value < minimum))
    if bad:
        bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")
    return float(value)


def hard_concrete(beta, gamma, zeta) -> tuple[float, float, float]:
    """Hard-concrete temperature beta > 0 and stretch interval gamma < 0, zeta > 1."""
    beta = finite_number("beta", beta, minimum=0.0, strict=True)
    gamma = finite_number("gamma", gamma)
    zeta = finite_number("zeta", zeta)
    if not gamma < 0:
        raise ValueError(f"gamma must be < 0 (exact zeros need it), got {gamma!r}")
    if not zeta > 1:
        raise ValueError(f"zeta must be > 1 (exact ones need it), got {zeta!r}")
    return beta, gamma, zeta


def mask_options(method_name: str, scale, rescale, density_value) -> tuple[str, str, float]:
    """Validates a method's rescale and density arguments; returns (method, rescale, density) as
    the ops take them ("none" for no rescale, density 1 where it does not apply). A scale without
    a rescale means Smart Rescale."""
    method_name = method(method_name)
    if scale is not None and rescale is None:
        rescale = "smart"
    if rescale not in RESCALES:
        raise ValueError(f"rescale must be one of {RESCALES}, got {rescale!r}")
    if method_name == "edge_popup" and rescale is not None:
        raise ValueError(f"rescale applies to aslp and supermask, not edge_popup, got {rescale!r}")
    if (rescale == "smart") != (scale is not None):
        raise ValueError("scale (the Smart Rescale scalar) goes with rescale='smart' and only "
                         f"with it, got rescale={rescale!r} and {'a' if scale is not None else 'no'}"
                         " scale")
    if method_name == "edge_popup":
        return method_name, "none", density(density_value)
    if density_value is not None:
        raise ValueError(f"density applies to edge_popup, not {method_name}, got {density_value!r}")
    return method_name, rescale or "none", 1.0


def pair(name: str, value: IntPair) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value, value]
    if (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        return list(value)
    raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")


def conv_args(input: Tensor, weight: Tensor, stride, padding, dilation):
    """``(input, stride, padding, dilation)`` normalised as the conv ops take them."""
    stride, dilation = pair("stride", stride), pair("dilation", dilation)
    input, padding = conv_padding(input, weight, stride, padding, dilation)
    return input, stride, padding, dilation


def conv_padding(input: Tensor, weight: Tensor, stride: list[int], padding, dilation: list[int]):
    """Resolves ``padding`` (int, pair, "valid" or "same") to a symmetric pair, padding the input
    explicitly when "same" needs one more row or column on one side (as torch does)."""
    if not isinstance(padding, str):
        return input, pair("padding", padding)
    if padding == "valid":
        return input, [0, 0]
    if padding != "same":
        raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    if stride != [1, 1]:
        raise ValueError(f"padding='same' needs stride 1, got stride={stride}")
    totals = [d * (k - 1) for d, k in zip(dilation, weight.shape[-2:])]
    if all(t % 2 == 0 for t in totals):
        return input, [t // 2 for t in totals]
    (th, tw) = totals
    input = F.pad(input, (tw // 2, tw - tw // 2, th // 2, th - th // 2))
    return input, [0, 0]
