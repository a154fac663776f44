"""Train–prune–retrain methods on the fixed mask: Han et al.'s magnitude pruning ("magnitude",
docs/METHODS.md 7) and lottery-ticket iterative magnitude pruning ("lottery", METHODS 8).

Both train the weights through a :class:`~sparseprune.methods.fixed.FixedMask` that stays fixed
during training and shrinks between rounds. A round is driven from outside, once per model, by
:func:`sparseprune.schedules.prune_round` (or the loop :func:`sparseprune.schedules.iterative_prune`):
the layers' method class computes the new masks of all its layers together
(:meth:`IterativeMask.next_masks`), because a global density or an output-layer rate needs them all.
The number of rounds done is a buffer of each layer, so checkpoints resume mid-schedule.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, Optional, Sequence

import torch
from torch import Tensor

from .. import _args
from ..select import densities, top_k_masks
from .base import register
from .fixed import FixedMask

if TYPE_CHECKING:  # pragma: no cover
    from ..nn.masked import MaskedLayer


def _rounds(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"rounds must be an int >= 1, got {value!r}")
    return value


def _rate(name: str, value) -> float:
    value = _args.finite_number(name, value, minimum=0.0)
    if value >= 1:
        raise ValueError(f"{name} must be in [0, 1) (the fraction of surviving weights pruned "
                         f"per round), got {value!r}")
    return value


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

    def __init__(self, quality: Optional[float] = None, density: Optional[float] = None,
                 rounds: int = 1):
        if quality is not None and density is not None:
            raise ValueError(f"give either quality (per-layer |w| < quality * std) or density "
                             f"(global target), not both; got quality={quality!r}, "
                             f"density={density!r}")
        if quality is None and density is None:
            quality = 1.0
        self.quality = None if quality is None else _args.finite_number("quality", quality,
                                                                        minimum=0.0)
        self.density = None if density is None else _args.density(density)
        self.rounds = _rounds(rounds)

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
    SCOPES = ("local", "global")

    def __init__(self, rate: float = 0.2, conv_rate: float = 0.1, output_rate: float = 0.1,
                 scope: str = "local", rewind_step: Optional[int] = 0, rounds: int = 1):
        self.rate = _rate("rate", rate)
        self.conv_rate = _rate("conv_rate", conv_rate)
        self.output_rate = _rate("output_rate", output_rate)
        if scope not in self.SCOPES:
            raise ValueError(f"scope must be one of {self.SCOPES}, got {scope!r}")
        self.scope = scope
        if rewind_step is not None and (isinstance(rewind_step, bool)
                                        or not isinstance(rewind_step, int) or rewind_step < 0):
            raise ValueError(f"rewind_step must be an int >= 0 or None, got {rewind_step!r}")
        self.rewind_step = rewind_step
        self.rounds = _rounds(rounds)

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

    def forward(self, layer: "MaskedLayer", input: Tensor) -> Tensor:
        if self.rewind_step and layer.training and torch.is_grad_enabled() \
                and int(layer.forward_steps) >= 0:
            self._count_step(layer)
        return super().forward(layer, input)

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

