"""Argument checks of the pruning-at-initialisation entry points (errors name the argument and the
value received), and the scoring context they build."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _validate as V
from ..convert import Filter, convertible_layers
from ..nn.coverage import kind_of
from .batches import BatchStream
from .scores import GRASP_SAMPLES_PER_CLASS, SCORERS, Context, Scorer

METHODS = tuple(SCORERS)  # "snip", "grasp", "synflow", "iter_snip", "force", "random", "magnitude"


def prunable_layers(model: nn.Module, include: Filter = None,
                    exclude: Filter = None) -> list[tuple[str, nn.Module]]:
    """The layers :func:`sparseprune.convert` would mask, by name. ValueError when there is none,
    or when two of them share one weight tensor."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    layers = convertible_layers(model, include, exclude)
    if not layers:
        raise ValueError("model has no prunable layer: no layer of a covered kind matched "
                         f"(include={include!r}, exclude={exclude!r})")
    seen: dict[int, str] = {}
    for name, m in layers:
        weight = kind_of(m).weight(m)
        if id(weight) in seen:
            raise ValueError(f"layers {seen[id(weight)]!r} and {name!r} share one weight; "
                             "exclude one of them")
        seen[id(weight)] = name
    return layers


def scoring_context(model: nn.Module, method: str, *, data: Any,
                    loss_fn: Optional[Callable[[Tensor, Tensor], Tensor]], batches: int,
                    generator: Optional[torch.Generator], include: Filter, exclude: Filter,
                    samples_per_class: Optional[int],
                    shape: Optional[Sequence[int]]) -> tuple[type[Scorer], Context]:
    """Validate the scoring arguments shared by every entry point; the scorer class and its
    context (the scoring data stream, the loss, the prunable layers)."""
    if not isinstance(method, str) or method not in SCORERS:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    cls = SCORERS[method]
    batches = V.positive_int("batches", batches)
    if batches > 1 and not cls.needs_data:
        raise ValueError(f"batches applies to the data-driven methods (snip, grasp, iter_snip, "
                         f"force); {method!r} uses no data, got batches={batches}")
    samples_per_class = V.positive_int("samples_per_class", samples_per_class, optional=True)
    if method == "grasp" and samples_per_class is None:
        samples_per_class = GRASP_SAMPLES_PER_CLASS
    if loss_fn is not None:
        V.callable_("loss_fn", loss_fn, "(outputs, targets) -> loss")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, "
                        f"got {type(generator).__name__}")
    shape = V.input_shape(shape)
    layers = prunable_layers(model, include, exclude)
    names = [name for name, _ in layers]
    weights = [kind_of(m).weight(m) for _, m in layers]

    needs_stream = cls.needs_data or (method == "synflow" and shape is None)
    if needs_stream and data is None:
        what = ("data= or input_shape= (only the input's shape is read from data)"
                if method == "synflow"
                else "data= (an iterable of (inputs, targets) batches, e.g. a DataLoader)")
        raise ValueError(f"method {method!r} needs {what}, got data=None")
    stream = BatchStream(data, weights[0].device) if needs_stream else None
    if method == "synflow" and shape is None:
        shape = stream.input_shape()
    return cls, Context(model, names, weights, loss_fn=loss_fn or F.cross_entropy,
                        stream=stream, batches=batches, samples_per_class=samples_per_class,
                        generator=generator, input_shape=shape)


def schedule_args(cls: type[Scorer], density: Any, iterations: Any, schedule: Any, scope: Any,
                  min_layer_density: Any) -> tuple[float, int, str, str, float]:
    """Validated (density, iterations, schedule, scope, min_layer_density); ``iterations=None``
    becomes the method's default."""
    density = V.density(density)
    min_layer_density = V.number_in("min_layer_density", min_layer_density, 0.0, 1.0)
    scope = V.scope(scope)
    schedule = V.choice("schedule", schedule, V.SCHEDULES)
    iterations = V.positive_int("iterations", iterations, optional=True)
    if iterations is None:
        iterations = cls.default_iterations
    if iterations > 1 and not cls.iterative:
        raise ValueError(f"iterations applies to the iterative methods (synflow, iter_snip, "
                         f"force); {cls.name!r} is one-shot, got iterations={iterations}")
    return density, iterations, schedule, scope, min_layer_density
