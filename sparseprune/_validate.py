"""Every argument check and every allowed-value list of the Python side, once.

Used by the functional API and its reference, the methods, training helpers, pruning and the
experiment runner (which re-raises the messages as one-line CLI errors). Each message names the
argument and shows the value received.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

IntPair = Union[int, Sequence[int]]

# ---------------------------------------------------------------------------- allowed values

# Methods whose per-weight mask work is fused into masked_weight / masked_linear / masked_conv2d.
FUSED_METHODS = ("aslp", "supermask", "edge_popup")
# The N:M fused methods (nm_masked_weight / nm_masked_linear), and the mask methods a pattern turns
# into one of them ("aslp" with a pattern is "nm_gumbel", "edge_popup" is "nm_topk").
NM_METHODS = ("nm_gumbel", "nm_topk", "srste")
NM_ALIASES = {"aslp": "nm_gumbel", "edge_popup": "nm_topk"}
SRSTE_DECAY = 2e-4  # SR-STE's lambda_w (docs/METHODS.md 13.4)
RESCALES = (None, "smart", "dwr")
# Where a density applies: over all layers together ("global") or in each ("local").
SCOPES = ("global", "local")
SCORE_DTYPES = (None, torch.float32, torch.float64, torch.bfloat16, torch.float16)
WEIGHT_INITS = (None, "kaiming_normal", "signed_constant")
# Density schedules of iterative pruning (select.densities).
SCHEDULES = ("exponential", "linear")
# A method's training recipe (methods.base.Recipe): optimizer, learning-rate schedule, weight init.
OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = (None, "cosine")
INITS = ("kaiming_normal", "default")
# How a target density applies to a method (methods.base.MaskMethod.density_role).
DENSITY_ROLES = ("option", "learned", "final")
# One-shot pruning of pretrained models (pruning.oneshot): its methods, and the comparison group
# of an unstructured density (None: the method's reference one, Wanda per row, magnitude per
# layer).
ONESHOT_METHODS = ("magnitude", "wanda", "sparsegpt")
ONESHOT_GROUPS = (None, "row", "layer")


# ------------------------------------------------------------------------------ generic checks

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


def is_number(value: Any) -> bool:
    """A real number (bool excluded)."""
    return not isinstance(value, bool) and isinstance(value, (int, float))


def finite_number(name: str, value, *, minimum: Optional[float] = None,
                  strict: bool = False) -> float:
    """A finite real number, optionally >= minimum (> minimum when strict)."""
    if not is_number(value):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    # value - value == 0 is math.isfinite(value) written with arithmetic, which torch.compile
    # traces for a float that changes between calls (a scheduled temperature) without a break.
    bad = not value - value == 0 or (minimum is not None and (
        value <= minimum if strict else value < minimum))
    if bad:
        bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")
    return float(value)


def number_in(name: str, value: Any, low: float, high: float, *, low_open: bool = False,
              high_open: bool = False) -> float:
    """``value`` as a float in the interval from ``low`` to ``high`` (open ends as given)."""
    ok = (is_number(value) and not math.isnan(value)
          and (value > low if low_open else value >= low)
          and (value < high if high_open else value <= high))
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    return float(value)


def positive_int(name: str, value: Any, *, optional: bool = False, minimum: int = 1) -> Optional[int]:
    """An int >= ``minimum`` (or None when ``optional``)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}{' or None' if optional else ''}, "
                         f"got {value!r}")
    return value


def choice(name: str, value: Any, valid: Sequence[Any]) -> Any:
    """One of ``valid`` (compared by equality; strings must be strings)."""
    if not any(v is value or (type(v) is type(value) and v == value) for v in valid):
        raise ValueError(f"{name} must be one of {tuple(valid)}, got {value!r}")
    return value


def callable_(name: str, value: Any, signature: str) -> Any:
    if not callable(value):
        raise TypeError(f"{name} must be a callable {signature}, got {type(value).__name__}")
    return value


# ----------------------------------------------------------------------- domain-specific checks

def density(value, *, required: bool = True, name: str = "density") -> float:
    """A fraction of weights kept, in (0, 1]."""
    if value is None and not required:
        return 1.0
    if not is_number(value) or math.isnan(value) or not 0 < value <= 1:
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
    return float(value)


def pattern(value, *, name: str = "pattern") -> tuple[int, int]:
    """An N:M pattern ``"N:M"`` (N kept of every M consecutive weights), 1 <= N < M <= 8, as
    ``(n, m)``."""
    parts = value.split(":") if isinstance(value, str) else []
    ok = len(parts) == 2 and all(p.strip().isdigit() for p in parts)
    n, m = (int(parts[0]), int(parts[1])) if ok else (0, 0)
    if not (ok and 1 <= n < m <= 8):
        raise ValueError(f"{name} must be 'N:M' with 1 <= N < M <= 8 (N kept of every M "
                         f"consecutive weights), e.g. '2:4', got {value!r}")
    return n, m


def density_or_pattern(density_value, pattern_value) -> tuple[Optional[float],
                                                             Optional[tuple[int, int]]]:
    """Exactly one of a density (fraction kept) and an N:M pattern: ``(density, None)`` or
    ``(None, (n, m))``."""
    if (density_value is None) == (pattern_value is None):
        raise ValueError("give exactly one of density (the fraction of weights kept, e.g. 0.5) "
                         "and pattern ('N:M', N kept of every M, e.g. '2:4'), got "
                         f"density={density_value!r} and pattern={pattern_value!r}")
    if pattern_value is not None:
        return None, pattern(pattern_value)
    return density(density_value), None


def scope(value) -> str:
    return choice("scope", value, SCOPES)


def budget(total_steps, warmup, dual_lr, dual_gain) -> tuple[Optional[int], float, float, float]:
    """A constrained budget's schedule and multiplier settings (sparseprune.budget.Budget):
    ``total_steps`` an int >= 1 or None, ``warmup`` a share of them in [0, 1], the dual ascent
    step ``dual_lr`` and the proportional gain ``dual_gain`` finite and >= 0."""
    total_steps = positive_int("total_steps", total_steps, optional=True)
    warmup = number_in("warmup", warmup, 0.0, 1.0)
    dual_lr = finite_number("dual_lr", dual_lr, minimum=0.0)
    dual_gain = finite_number("dual_gain", dual_gain, minimum=0.0)
    return total_steps, warmup, dual_lr, dual_gain


# The accepted ASLP temperatures (csrc/host/check.h says why): below 1e-3 the float32 surrogate
# slope sigmoid'((s + L) / tau) / tau would be dominated by the rounding of s + L.
MIN_TEMPERATURE = 1e-3
MAX_TEMPERATURE = 1e30


def temperature(value) -> float:
    if not is_number(value):
        raise TypeError(f"temperature must be a number, got {type(value).__name__}")
    if not (math.isfinite(value) and MIN_TEMPERATURE <= value <= MAX_TEMPERATURE):
        raise ValueError(f"temperature must be a finite number in [{MIN_TEMPERATURE:g}, "
                         f"{MAX_TEMPERATURE:g}], got {value!r}")
    return float(value)


def method(value) -> str:
    if value not in FUSED_METHODS:
        raise ValueError(f"method must be one of {', '.join(FUSED_METHODS)}, got {value!r}")
    return value


def power(value) -> int:
    """The reparametrisation exponent n: an integer in [1, 64]."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 64:
        raise ValueError(f"power (the exponent n) must be an integer in [1, 64], got {value!r}")
    return value


def scores_dtype(value) -> Optional[torch.dtype]:
    if value not in SCORE_DTYPES:
        raise ValueError(f"scores_dtype must be a floating dtype or None, got {value!r}")
    return value


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
    choice("rescale", rescale, RESCALES)
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


def nm_call(method_name: str, pattern) -> bool:
    """Whether a fused-op call is an N:M one: an N:M method, or a mask method with a pattern
    (a pattern with another method is a ValueError)."""
    if method_name in NM_METHODS or (pattern is not None and method_name in NM_ALIASES):
        return True
    if pattern is not None:
        raise ValueError(f"pattern applies to {', '.join(NM_ALIASES)} and "
                         f"{', '.join(NM_METHODS)}, not {method_name!r}")
    return False


def nm_options(method_name: str, nm_pattern, scale, rescale, density_value, logit_scale, hard,
               decay) -> tuple[str, int, int, float, bool, float]:
    """Validates an N:M call's options; returns (method, n, m, logit_scale, hard, decay) as the
    ops take them. ``pattern`` is required; a scale means Smart Rescale (nm_gumbel only); the
    density is fixed by the pattern."""
    method_name = NM_ALIASES.get(method_name, method_name)
    if method_name not in NM_METHODS:
        raise ValueError(f"method must be one of {', '.join(NM_METHODS)} (or aslp / edge_popup "
                         f"with a pattern), got {method_name!r}")
    if nm_pattern is None:
        raise ValueError(f"method {method_name!r} needs a pattern, e.g. pattern='2:4'")
    n, m = pattern(nm_pattern)
    if density_value is not None:
        raise ValueError(f"density is fixed by the pattern {nm_pattern!r} (N/M = {n / m:g}); "
                         f"leave density unset, got {density_value!r}")
    if scale is not None and rescale is None:
        rescale = "smart"
    if method_name == "nm_gumbel":
        choice("rescale", rescale, (None, "smart"))
        if (rescale == "smart") != (scale is not None):
            raise ValueError("scale (the Smart Rescale scalar) goes with rescale='smart' and only "
                             f"with it, got rescale={rescale!r} and "
                             f"{'a' if scale is not None else 'no'} scale")
    elif rescale is not None or scale is not None:
        raise ValueError(f"rescale applies to nm_gumbel (aslp with a pattern), not "
                         f"{method_name}, got rescale={rescale!r}")
    logit_scale = finite_number("logit_scale", logit_scale, minimum=0.0, strict=True)
    if not isinstance(hard, bool):
        raise TypeError(f"hard must be a bool, got {type(hard).__name__}")
    if method_name != "srste" and decay is not None:
        raise ValueError(f"decay applies to srste, not {method_name}, got {decay!r}")
    decay = finite_number("decay", SRSTE_DECAY if decay is None else decay, minimum=0.0)
    return method_name, n, m, logit_scale, hard, decay


def schedule(name: str, value) -> tuple[float, float]:
    """A positive finite number or a ``(start, end)`` pair of them (a schedule linear in the
    training progress), as ``(start, end)``."""
    pair_ = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair_) != 2:
        raise ValueError(f"{name} must be a number > 0 or a (start, end) pair, got {value!r}")
    return tuple(finite_number(name, v, minimum=0.0, strict=True) for v in pair_)


def progress(value) -> float:
    """The fraction of training done, in [0, 1]."""
    return number_in("progress", value, 0.0, 1.0)


def input_shape(value: Any) -> Optional[tuple[int, ...]]:
    """One example's shape (without the batch dimension), or None."""
    if value is None:
        return None
    shape = tuple(value) if isinstance(value, (tuple, list, torch.Size)) else None
    if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise ValueError(f"input_shape must be a sequence of positive ints (one example's "
                         f"shape, without the batch dimension), got {value!r}")
    return shape


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
