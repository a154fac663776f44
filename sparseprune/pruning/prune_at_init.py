"""``prune_at_init``: score the prunable weights at initialisation, keep the best, train with the
mask fixed (docs/METHODS.md section 9). Also :func:`compute_masks` (the masks alone) and
:func:`compute_scores` (one scoring step)."""

from __future__ import annotations

import contextlib
import inspect
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from ..convert import Filter, convert
from . import args
from ..methods.fixed import FixedMask, set_masks
from ..select import densities
from .scores import Scorer
from .selection import select_masks, warn_empty_layers

Callback = Callable[[int, float, dict[str, Tensor]], None]
LossFn = Callable[[Tensor, Tensor], Tensor]

# Pruning at initialisation trains the remaining weights through fixed masks.
RECIPE = FixedMask.recipe
# The arguments a training loop supplies itself; options() lists the rest.
SUPPLIED = ("model", "method", "density", "data", "loss_fn", "generator", "callback")


@contextlib.contextmanager
def _scoring_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and grad enabled while scoring; every module's own training flag restored."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.enable_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training


def compute_scores(model: nn.Module, method: str, *, data: Any = None,
                   loss_fn: Optional[LossFn] = None,
                   masks: Optional[Mapping[str, Tensor]] = None, batches: int = 1,
                   generator: Optional[torch.Generator] = None, include: Filter = None,
                   exclude: Filter = None, samples_per_class: Optional[int] = None,
                   input_shape: Optional[Sequence[int]] = None) -> dict[str, Tensor]:
    """One scoring step of ``method``, by layer name, as docs/METHODS.md section 9 defines the
    score (SNIP and GraSP normalised by their sum; GraSP's *highest* are the ones removed).

    ``masks`` (name -> bool tensor for every prunable layer; default: all kept) is the sparse
    point the iterative methods score at; the one-shot methods ignore it. The model is not
    changed. Arguments as in :func:`prune_at_init`.
    """
    cls, ctx = args.scoring_context(model, method, data=data, loss_fn=loss_fn, batches=batches,
                                    generator=generator, include=include, exclude=exclude,
                                    samples_per_class=samples_per_class, shape=input_shape)
    mask_list = None
    if masks is not None:
        if not isinstance(masks, Mapping) or set(masks) != set(ctx.names):
            names = ", ".join(map(repr, ctx.names))
            got = sorted(masks) if isinstance(masks, Mapping) else type(masks).__name__
            raise ValueError(f"masks must map every prunable layer ({names}) to a bool tensor, "
                             f"got {got}")
        for name, w in zip(ctx.names, ctx.weights):
            m = masks[name]
            if not isinstance(m, Tensor) or m.dtype != torch.bool or m.shape != w.shape:
                got = f"{m.dtype} {list(m.shape)}" if isinstance(m, Tensor) else type(m).__name__
                raise ValueError(f"masks[{name!r}] must be a bool tensor of shape "
                                 f"{list(w.shape)}, got {got}")
        mask_list = [masks[n].to(w.device) for n, w in zip(ctx.names, ctx.weights)]
    with _scoring_mode(model):
        scores = cls(ctx)(mask_list if cls.iterative else None)
    return dict(zip(ctx.names, scores))


def compute_masks(model: nn.Module, method: str, *, density: float, data: Any = None,
                  loss_fn: Optional[LossFn] = None, scope: str = "global",
                  iterations: Optional[int] = None, schedule: str = "exponential",
                  batches: int = 1, generator: Optional[torch.Generator] = None,
                  include: Filter = None, exclude: Filter = None,
                  min_layer_density: float = 0.0, samples_per_class: Optional[int] = None,
                  input_shape: Optional[Sequence[int]] = None,
                  callback: Optional[Callback] = None) -> dict[str, Tensor]:
    """The masks :func:`prune_at_init` would apply, by layer name, without changing the model
    (weights, ``.grad`` fields and training flags stay as they were). Same arguments."""
    cls, ctx = args.scoring_context(model, method, data=data, loss_fn=loss_fn, batches=batches,
                                    generator=generator, include=include, exclude=exclude,
                                    samples_per_class=samples_per_class, shape=input_shape)
    density, iterations, schedule, scope, min_layer_density = args.schedule_args(
        cls, density, iterations, schedule, scope, min_layer_density)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    with _scoring_mode(model):
        masks = _iterate(cls(ctx), ctx.names, densities(density, iterations, schedule), scope,
                         min_layer_density, callback)
    warn_empty_layers(ctx.names, masks, method)
    return dict(zip(ctx.names, masks))


def _iterate(scorer: Scorer, names: list[str], steps: list[float], scope: str,
             min_layer_density: float, callback: Optional[Callback]) -> list[Tensor]:
    masks: Optional[list[Tensor]] = None
    for step, d in enumerate(steps, start=1):
        scores = scorer(masks)
        if scorer.keep == "smallest":
            scores = [s.neg_() for s in scores]
        alive = masks if masks is not None and not scorer.revives else None
        masks = select_masks(names, scores, d, scope=scope, min_layer_density=min_layer_density,
                             alive=alive, method=scorer.name)
        del scores
        if callback is not None:
            callback(step, d, {n: m.clone() for n, m in zip(names, masks)})
    return masks


def prune_at_init(model: nn.Module, method: str, *, density: float, data: Any = None,
                  loss_fn: Optional[LossFn] = None, scope: str = "global",
                  iterations: Optional[int] = None, schedule: str = "exponential",
                  batches: int = 1, generator: Optional[torch.Generator] = None,
                  include: Filter = None, exclude: Filter = None,
                  min_layer_density: float = 0.0, samples_per_class: Optional[int] = None,
                  input_shape: Optional[Sequence[int]] = None,
                  callback: Optional[Callback] = None) -> nn.Module:
    """Prune ``model`` at initialisation and return it ready to train with the mask fixed.

    Scores every weight of the prunable layers (``nn.Linear`` / ``nn.Conv2d`` selected by
    ``include`` / ``exclude`` as in :func:`sparseprune.convert`; biases are never pruned) with
    ``method``, keeps the best, converts those layers to masked layers of the ``"fixed"`` method
    and sets the pruned weights (and any ``.grad`` entries) to exactly 0. **In place**: the
    model's pruned weights change and its layers are replaced (a new module is returned only
    when ``model`` is itself one layer). Training then keeps pruned weights at exactly 0 with
    zero gradients under any optimizer (momentum, weight decay, Adam).

    Methods (docs/METHODS.md section 9): ``"snip"`` ``|w * dL/dw|``; ``"grasp"``
    ``-w * (H g)`` at temperature 200 on class-balanced batches, the highest removed;
    ``"synflow"`` data-free, float64, iterative (100 steps by default); ``"iter_snip"`` and
    ``"force"`` iterative (10 steps by default) with gradients at the sparse point, FORCE scoring
    the dense initial weights (a pruned weight can return) and Iter-SNIP the masked ones (it
    cannot); ``"random"`` N(0, 1) scores from ``generator``; ``"magnitude"`` ``|w|``.

    Args:
        density: fraction of the prunable weights kept, in (0, 1].
        data: ``(inputs, targets)`` batches for the data-driven methods (snip, grasp, iter_snip,
            force): an iterable such as a DataLoader, or one pair of tensors. Batches are read in
            order, restarting at the end. SynFlow reads only the input shape from it.
        loss_fn: ``(outputs, targets) -> scalar`` (default cross-entropy on logits; GraSP
            applies it to ``outputs / 200``).
        scope: ``"global"`` keeps exactly ``round(density * N)`` weights over all layers;
            ``"local"`` keeps ``round(density * N_l)`` in each layer. Ties break by position.
        iterations: pruning steps of the iterative methods (default 100 for synflow, 10 for
            iter_snip and force; one-shot methods accept only 1).
        schedule: ``"exponential"`` (``density ** (t/T)``) or ``"linear"``
            (``1 - t (1 - density) / T``): the density after step t of T.
        batches: minibatches whose gradients are averaged per scoring step (data methods).
        generator: the random scores' source for ``"random"`` (default: torch's global one).
        min_layer_density: each layer keeps at least ``ceil(min_layer_density * N_l)`` weights
            (the global total stays exact). Without it, a layer left empty gets a UserWarning.
        samples_per_class: build each scoring batch from this many examples of every class
            (integer labels; classes = the model's output width): default 10 for grasp, off for
            the others.
        input_shape: one example's shape for SynFlow's all-ones input, e.g. ``(1, 28, 28)``.
        callback: ``callback(step, density_t, masks)`` after every pruning step.

    Scoring runs in eval mode (no dropout; batch-norm running statistics unchanged, as in SNIP's
    and SynFlow's code) on the model's device, leaves every module's training flag as it was,
    never touches the parameters' ``.grad``, and holds at most one extra weight-sized copy at a
    time (see :mod:`sparseprune.pruning.scores`). Bad arguments raise ValueError / TypeError
    naming the argument and the value received.
    """
    masks = compute_masks(model, method, density=density, data=data, loss_fn=loss_fn,
                          scope=scope, iterations=iterations, schedule=schedule, batches=batches,
                          generator=generator, include=include, exclude=exclude,
                          min_layer_density=min_layer_density,
                          samples_per_class=samples_per_class, input_shape=input_shape,
                          callback=callback)
    modes = {name: m.training for name, m in model.named_modules()}
    model = convert(model, "fixed", include=lambda name, _: name in masks)
    for name, m in model.named_modules():  # the new layers take the old ones' flags
        if name in modes:
            m.training = modes[name]
    return set_masks(model, masks)


def options() -> dict[str, Any]:
    """The options of :func:`prune_at_init` beyond the model, the method and what a training loop
    supplies itself (density, data, loss, generator, callback), with their defaults."""
    return {k: p.default for k, p in inspect.signature(prune_at_init).parameters.items()
            if k not in SUPPLIED}
