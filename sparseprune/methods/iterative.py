"""Train–prune–retrain methods on the fixed mask: Han et al.'s magnitude pruning ("magnitude",
docs/METHODS.md 7) and lottery-ticket iterative magnitude pruning ("lottery", METHODS 8).

Both train the weights through a :class:`~sparseprune.methods.fixed.FixedMask` that stays fixed
during training and shrinks between rounds. A round is applied once per model by
:func:`prune_round` (in a loop of your own, or :func:`sparseprune.schedules.iterative_prune`; a
training loop with the method's hooks calls it every ``epochs_per_round`` epochs): the layers'
method class computes the new masks of all its layers together (:meth:`IterativeMask.next_masks`),
because a global density or an output-layer rate needs them all. The number of rounds done is a
buffer of each layer, so checkpoints resume mid-schedule.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Sequence

import torch
from torch import Tensor, nn

from .. import _validate as V
from ..select import densities, top_k_masks
from .base import Recipe, TrainingHooks, layers_using, register
from .fixed import FixedMask

if TYPE_CHECKING:  # pragma: no cover
    from ..nn.masked import MaskedLayer


def _rate(name: str, value) -> float:
    """A fraction of the surviving weights pruned per round."""
    return V.number_in(name, value, 0.0, 1.0, high_open=True)


def _keep_largest(layers: Sequence["MaskedLayer"], kept: int) -> list[Tensor]:
    """Masks keeping the ``kept`` largest |w| among the alive weights of ``layers`` together
    (ties by position; the pruned weights rank -inf, so they never come back)."""
    return top_k_masks([layer.method.ranking_scores(layer) for layer in layers], kept)


class IterativeMask(FixedMask):
    """A fixed mask that shrinks by rounds; subclasses define the pruning rule."""

    rounds: int
    standalone = True

    def attach(self, layer: "MaskedLayer") -> None:
        super().attach(layer)
        layer.register_buffer("rounds_done", torch.zeros((), dtype=torch.int64), persistent=True)

    def pruning_rounds(self) -> int:
        return self.rounds

    @classmethod
    def training_hooks(cls, layers: Sequence["MaskedLayer"], *,
                       epochs_per_round: int) -> TrainingHooks:
        return _Rounds(epochs_per_round, layers[0].method.rounds)

    @classmethod
    @abstractmethod
    def next_masks(cls, layers: Sequence["MaskedLayer"], round_index: int) -> list[Tensor]:
        """The masks after pruning round ``round_index`` (1-based) of ``layers`` (all with this
        method, in module order; the last one is the model's output layer)."""

    def after_round(self, layer: "MaskedLayer") -> None:
        """Called on each layer once its new mask is set (default: nothing)."""


@register
class MagnitudePrune(IterativeMask):
    """Han, Pool, Tran, Dally (NIPS 2015): train, prune the small weights, retrain the survivors
    with their trained values (no re-initialisation), for ``rounds`` prune/retrain cycles.

    Pruning rule, one of:
        quality: per layer, prune the alive weights with ``|w| < quality * std(w)``, the standard
            deviation taken over the layer's alive weights (the already pruned zeros would
            shrink it round after round). Han's "quality parameter" (default 1.0 when no
            ``density`` is given).
        density: a global target: after round r of R, exactly ``round(density**(r/R) * N)``
            weights stay (the largest |w| over all layers; the exponential schedule of
            :func:`sparseprune.select.densities`), so round R ends at ``density``.

    Pruned weights are exactly 0 and get exactly zero gradients; clear the optimizer's state
    after each round (:func:`sparseprune.schedules.iterative_prune` does) so momentum cannot
    move them.
    """

    name = "magnitude"
    density_role = "option"
    recipe = Recipe({"weights": 1.2e-3}, optimizer="adam", weight_decay=1e-4,
                    source="METHODS.md 7 (L2 during training and retraining; the lr is "
                           "unconfirmed: F&C's LeNet rate)")

    def __init__(self, quality: Optional[float] = None, density: Optional[float] = None,
                 rounds: int = 1):
        if quality is not None and density is not None:
            raise ValueError(f"give either quality (per-layer |w| < quality * std) or density "
                             f"(global target), not both; got quality={quality!r}, "
                             f"density={density!r}")
        if quality is None and density is None:
            quality = 1.0
        self.quality = None if quality is None else V.finite_number("quality", quality,
                                                                    minimum=0.0)
        self.density = None if density is None else V.density(density)
        self.rounds = V.positive_int("rounds", rounds)

    @property
    def rule(self) -> str:
        return "density" if self.density is not None else "quality"

    @classmethod
    def next_masks(cls, layers: Sequence["MaskedLayer"], round_index: int) -> list[Tensor]:
        first = layers[0].method
        if first.rule == "density":
            # Rounds past the schedule's end stay at the target density.
            target = densities(first.density, first.rounds)[min(round_index, first.rounds) - 1]
            return _keep_largest(layers, round(target * sum(l.weight.numel() for l in layers)))
        masks = []
        for layer in layers:
            q = layer.method.quality
            alive = layer.weight.detach()[layer.mask]
            std = alive.float().std().item() if alive.numel() > 1 else 0.0
            masks.append(layer.mask & (layer.weight.detach().abs() >= q * std))
        return masks


@register
class LotteryTicket(IterativeMask):
    """Frankle & Carbin (ICLR 2019) iterative magnitude pruning with rewinding: train, prune a
    fraction of the surviving weights by trained |w|, reset the survivors to their saved values,
    repeat.

    Options:
        rate: fraction of the surviving weights of each fully connected layer pruned per round
            (F&C: 0.2); with ``scope="global"``, the fraction pruned per round over all layers but
            the output layer together (OpenLTH's ``sparse_global``).
        conv_rate: the per-round fraction of a Conv2d layer (``scope="local"`` only; F&C 0.1 for
            Conv-2/4, 0.15 for Conv-6).
        output_rate: the per-round fraction of the output layer, the last masked layer in module
            order (F&C 0.1; 0 leaves it dense, OpenLTH's choice for LeNet).
        scope: ``"local"`` (per layer, the F&C small nets) or ``"global"``.
        rewind_step: the weights survivors are reset to: 0 = the values at conversion (the
            original lottery ticket), k > 0 = the values after k training steps (late
            resetting), None = no reset (pruning with fine-tuning, an ablation).
        rounds: the number of prune/retrain rounds (used by the training helpers).

    Counts are exact: after round r a layer (or the global pool) with N weights and rate p keeps
    ``round(N * (1 - p)**r)`` weights, so the density is ``(1 - p)**r`` within half a weight.

    "After k training steps" is counted by the layer itself: the saved values are the weights
    when its (k + 1)-th forward in training mode with gradients enabled starts, i.e. after k
    optimizer steps in a loop with one forward per step. Only weight and bias of the masked
    layers are saved and reset; other parameters (BatchNorm) keep their trained values.
    """

    name = "lottery"
    recipe = Recipe({"weights": 1.2e-3}, optimizer="adam",
                    source="METHODS.md 8.2 (F&C LeNet-300-100: Adam 1.2e-3, per round)")

    def __init__(self, rate: float = 0.2, conv_rate: float = 0.1, output_rate: float = 0.1,
                 scope: str = "local", rewind_step: Optional[int] = 0, rounds: int = 1):
        self.rate = _rate("rate", rate)
        self.conv_rate = _rate("conv_rate", conv_rate)
        self.output_rate = _rate("output_rate", output_rate)
        self.scope = V.scope(scope)
        self.rewind_step = V.positive_int("rewind_step", rewind_step, optional=True, minimum=0)
        self.rounds = V.positive_int("rounds", rounds)

    def attach(self, layer: "MaskedLayer") -> None:
        super().attach(layer)
        if self.rewind_step is None:
            return
        layer.register_buffer("rewind_weight", layer.weight.detach().clone(), persistent=True)
        if layer.bias is not None:
            layer.register_buffer("rewind_bias", layer.bias.detach().clone(), persistent=True)
        # Training forwards seen so far, until the rewind point is saved (then -1).
        steps = -1 if self.rewind_step == 0 else 0
        layer.register_buffer("forward_steps", torch.tensor(steps), persistent=True)

    def weight(self, layer: "MaskedLayer") -> Tensor:
        if self.rewind_step and layer.training and torch.is_grad_enabled() \
                and int(layer.forward_steps) >= 0:
            self._count_step(layer)
        return super().weight(layer)

    @torch.no_grad()
    def _count_step(self, layer: "MaskedLayer") -> None:
        if int(layer.forward_steps) == self.rewind_step:  # k steps done: save theta_k
            layer.rewind_weight.copy_(layer.weight)
            if layer.bias is not None:
                layer.rewind_bias.copy_(layer.bias)
            layer.forward_steps.fill_(-1)
        else:
            layer.forward_steps.add_(1)

    def _layer_rate(self, layer: "MaskedLayer", is_output: bool) -> float:
        if is_output:
            return self.output_rate
        return self.conv_rate if layer.weight.dim() > 2 else self.rate

    @classmethod
    def next_masks(cls, layers: Sequence["MaskedLayer"], round_index: int) -> list[Tensor]:
        method = layers[0].method
        last = len(layers) - 1

        def kept(n: int, rate: float) -> int:  # from N, not from the last count: no drift
            return round(n * (1.0 - rate) ** round_index)

        if method.scope == "global":
            body, out = layers[:last], layers[last]
            masks = _keep_largest(body, kept(sum(l.weight.numel() for l in body), method.rate)) \
                if body else []
            return masks + _keep_largest([out], kept(out.weight.numel(), method.output_rate))
        return [_keep_largest([layer], kept(layer.weight.numel(),
                                            layer.method._layer_rate(layer, i == last)))[0]
                for i, layer in enumerate(layers)]

    @torch.no_grad()
    def after_round(self, layer: "MaskedLayer") -> None:
        """Reset the weights to the saved rewind point (the mask then zeroes the pruned ones)."""
        if self.rewind_step is None:
            return
        if int(layer.forward_steps) >= 0:
            raise RuntimeError(
                f"lottery rewind_step={self.rewind_step}: the layer saw only "
                f"{int(layer.forward_steps)} training steps before pruning, so there are no "
                "weights to rewind to; train longer before the first round or lower rewind_step")
        layer.weight.copy_(layer.rewind_weight)
        if layer.bias is not None:
            layer.bias.copy_(layer.rewind_bias)
        self.set_mask(layer)


@dataclass
class RoundResult:
    """What one round of :func:`iterative_prune` ended with."""

    round: int
    density: float                  # kept fraction over the iterative layers
    layer_density: dict[str, float] = field(default_factory=dict)
    result: Any = None              # what the training callable returned

    def __str__(self) -> str:
        return f"round {self.round}: density {self.density:.4f}" + (
            f", {self.result}" if self.result is not None else "")


def iterative_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The masked layers of ``model`` whose method prunes by rounds, in module order. They must
    all use one method with the same ``rounds`` (ValueError otherwise)."""
    layers = layers_using(model, IterativeMask)
    kinds = {(type(l.method), l.method.rounds) for _, l in layers}
    if len(kinds) > 1:
        got = sorted(f"{l.method.name}(rounds={l.method.rounds})" for _, l in layers)
        raise ValueError(f"the iterative layers must share one method and rounds, got "
                         f"{', '.join(dict.fromkeys(got))}")
    return layers


def require_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    layers = iterative_layers(model)
    if not layers:
        raise ValueError("model has no layers of an iterative method; convert it first, e.g. "
                         "sp.convert(model, 'lottery') or sp.convert(model, 'magnitude')")
    return layers


def rounds_done(model: nn.Module) -> int:
    """Pruning rounds already applied to ``model`` (0 before the first; stored in the layers'
    ``rounds_done`` buffers, so it survives a checkpoint)."""
    return int(require_layers(model)[0][1].rounds_done)


def planned_rounds(model: nn.Module) -> int:
    """The method's ``rounds`` option."""
    return require_layers(model)[0][1].method.rounds


def mask_density(layers) -> tuple[float, dict[str, float]]:
    kept = {n: int(l.mask.sum()) for n, l in layers}
    total = sum(l.mask.numel() for _, l in layers)
    return sum(kept.values()) / total, {n: kept[n] / l.mask.numel() for n, l in layers}


@torch.no_grad()
def prune_round(model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None) -> RoundResult:
    """Apply the next pruning round to every iterative layer of ``model``: new masks from the
    method's rule (pruned weights set to exactly 0, never revived), then the method's
    after-round step (the lottery ticket's rewind). With ``optimizer``, its state (momentum,
    Adam moments) is cleared, so a pruned weight's old momentum cannot move it."""
    layers = require_layers(model)
    index = rounds_done(model) + 1
    modules = [l for _, l in layers]
    masks = type(modules[0].method).next_masks(modules, index)
    for layer, mask in zip(modules, masks):
        layer.method.set_mask(layer, mask & layer.mask)  # & : masks only shrink
        layer.method.after_round(layer)
        layer.rounds_done.fill_(index)
    if optimizer is not None:
        optimizer.state.clear()
    density, per_layer = mask_density(layers)
    return RoundResult(index, density, per_layer)


class _Rounds(TrainingHooks):
    """A pruning round at the end of every round of ``epochs_per_round`` epochs but the last."""

    def __init__(self, epochs_per_round: int, rounds: int):
        self.epochs_per_round, self.rounds = epochs_per_round, rounds

    def end_of_epoch(self, model, epoch, optimizer, val_loss, evaluate) -> Optional[str]:
        if epoch % self.epochs_per_round or epoch >= self.epochs_per_round * (self.rounds + 1):
            return None
        result = prune_round(model, optimizer)
        return f"pruning round {result.round}/{self.rounds}: density {result.density:.4f}"
