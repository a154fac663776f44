"""Model surgery: :func:`convert` swaps layers for masked ones; :func:`finalize` bakes the masks in."""

from __future__ import annotations

import contextlib
import fnmatch
from typing import Any, Callable, Iterable, Iterator, Optional, Union

import torch
from torch import nn

from . import _validate
from .nn.masked import MaskedConv2d, MaskedLayer, MaskedLinear
from .select import select_top

Filter = Union[None, str, Iterable[str], Callable[[str, nn.Module], bool]]

_MASKED = {nn.Linear: MaskedLinear, nn.Conv2d: MaskedConv2d}


def matches(spec: Filter, name: str, module: nn.Module) -> bool:
    """Whether a layer filter (names, glob patterns or a predicate) matches the layer."""
    if callable(spec):
        return bool(spec(name, module))
    patterns = [spec] if isinstance(spec, str) else list(spec)
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def selected(name: str, module: nn.Module, include: Filter, exclude: Filter) -> bool:
    """Whether ``include`` (None: every layer) and ``exclude`` (None: none) let the layer through."""
    return ((include is None or matches(include, name, module))
            and (exclude is None or not matches(exclude, name, module)))


def replace_module(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put ``new`` in place of submodule ``name``; returns the model (``new`` for ``name=""``)."""
    if name == "":
        return new
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, new)
    return model


def _dense_type(module: nn.Module) -> Optional[type]:
    if isinstance(module, MaskedLayer):
        return None
    return next((t for t in _MASKED if type(module) is t), None)


def convertible_layers(model: nn.Module, include: Filter = None,
                       exclude: Filter = None) -> list[tuple[str, nn.Module]]:
    """The plain ``nn.Linear`` / ``nn.Conv2d`` layers of ``model`` that :func:`convert` would
    swap for masked ones, with their qualified names, in module order (maybe none)."""
    return [(name, module) for name, module in model.named_modules()
            if _dense_type(module) is not None and selected(name, module, include, exclude)]


def convert(model: nn.Module, method: str = "aslp", *, include: Filter = None,
            exclude: Filter = None, **method_options: Any) -> nn.Module:
    """Swap every ``nn.Linear`` / ``nn.Conv2d`` of ``model`` for a masked layer, in place.

    Each masked layer keeps the original weight and bias Parameters and gets its own instance of
    ``method`` with ``method_options`` (see ``sparseprune.methods.available()``). ``include`` and
    ``exclude`` select layers by qualified name (exact names or glob patterns, one or several) or by
    a predicate ``(name, module) -> bool``. Returns the model (a new module only when ``model``
    itself is a single layer). Raises ValueError when nothing matches.
    """
    targets = convertible_layers(model, include, exclude)
    if not targets:
        raise ValueError("convert: no nn.Linear or nn.Conv2d layer matched "
                         f"(include={include!r}, exclude={exclude!r})")
    for name, module in targets:
        masked = _MASKED[type(module)].from_dense(module, method, **method_options)
        model = replace_module(model, name, masked)
    return model


def masked_layers(model: nn.Module) -> list[tuple[str, MaskedLayer]]:
    """The masked layers of ``model`` with their qualified names, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, MaskedLayer)]


def mask_parameters(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The trainable parameters the pruning methods added, grouped by name (``"scores"``,
    ``"scale"``, ...), e.g. for optimizer parameter groups with their own learning rates."""
    groups: dict[str, list[nn.Parameter]] = {}
    for _, layer in masked_layers(model):
        for name in layer.method.parameter_names:
            param = getattr(layer, name, None)
            if isinstance(param, nn.Parameter) and param.requires_grad:
                groups.setdefault(name, []).append(param)
    return groups


@contextlib.contextmanager
def sampled_masks(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, the stochastic methods (ASLP, Supermask) sample a fresh mask at every
    forward in eval mode too, instead of using their deterministic final mask. The Supermask papers
    report accuracy averaged over such samples::

        with sp.sampled_masks(model.eval()):
            accuracy = sum(evaluate(model) for _ in range(10)) / 10
    """
    methods = [layer.method for _, layer in masked_layers(model)
               if hasattr(layer.method, "sample_in_eval")]
    before = [m.sample_in_eval for m in methods]
    for m in methods:
        m.sample_in_eval = True
    try:
        yield model
    finally:
        for m, value in zip(methods, before):
            m.sample_in_eval = value


@torch.no_grad()
def final_masks(model: nn.Module, *, density: Optional[float] = None,
                scope: str = "global", min_layer_density: float = 0.0) -> dict[str, torch.Tensor]:
    """The deterministic mask of every masked layer, by name.

    Without ``density`` each method's own final rule decides (e.g. ``scores >= 0`` for ASLP). With
    ``density`` exactly ``round(density * N)`` weights are kept by each method's ranking scores:
    over all masked layers together (``scope="global"``, N = all their weights) or in each layer
    (``scope="local"``, N = the layer's weights). Ties break by position. ``min_layer_density``
    keeps at least ``ceil(min_layer_density * N_l)`` weights in every layer (the global total
    stays exact; :func:`sparseprune.select.select_top`).
    """
    scope = _validate.scope(scope)
    min_layer_density = _validate.number_in("min_layer_density", min_layer_density, 0.0, 1.0)
    layers = masked_layers(model)
    if density is None or not layers:
        return {name: layer.method.final_mask(layer) for name, layer in layers}
    scores = [layer.method.ranking_scores(layer) for _, layer in layers]
    masks = select_top(scores, _validate.density(density), scope=scope,
                       min_layer_density=min_layer_density)
    return {name: mask for (name, _), mask in zip(layers, masks)}


@torch.no_grad()
def finalize(model: nn.Module, *, density: Optional[float] = None,
             scope: str = "global", min_layer_density: float = 0.0) -> nn.Module:
    """Bake the final masks in: every masked layer becomes a plain ``nn.Linear`` / ``nn.Conv2d``.

    Pruned weights are exactly 0 and each method's final scale (e.g. Smart Rescale) is folded into
    the kept ones, so in eval mode the result computes what the masked model computed. ``density``,
    ``scope`` and ``min_layer_density`` impose an exact final density, see :func:`final_masks`.
    In place; returns the model (a new module only when ``model`` itself is a single masked layer).
    """
    masks = final_masks(model, density=density, scope=scope, min_layer_density=min_layer_density)
    for name, layer in masked_layers(model):
        model = replace_module(model, name, layer.to_dense(layer.method.final_weight(layer, masks[name])))
    return model
