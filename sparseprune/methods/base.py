"""The interface every pruning method implements, its training contract, and the registry that
names the methods.

A method says everything a training loop, :func:`sparseprune.finalize` and the experiment runner
need to know about it, so that none of them names a method:

- the parameters it adds to a layer (``parameter_names``) and its default :class:`Recipe`
  (optimizer, learning rate per parameter group, weight decay, weight initialisation);
- how a target density applies (``density_role``): an option it trains with, a learned density
  that a budget steers, or a density that only the final top-k imposes;
- what must run besides forward, backward and the optimizer step (:class:`TrainingHooks`: per
  step constraints or decays, per epoch pruning, ``pruning_rounds``);
- its deterministic final mask (:meth:`MaskMethod.final_mask`) and ranking for a final density.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional, Sequence

import torch
from torch import Tensor, nn

from .. import _validate as V

if TYPE_CHECKING:  # pragma: no cover
    from ..nn.masked import MaskedLayer


@dataclass(frozen=True)
class Recipe:
    """How a method trains by default, and where the values come from.

    ``lrs`` maps parameter groups to learning rates; the first is the main group (the one a
    single ``lr`` overrides). Groups are the names of ``parameter_names`` plus ``"weights"``:
    every other trainable parameter (``WEIGHTS_LR`` when the recipe does not name it)."""

    lrs: dict[str, float]
    optimizer: str = "sgd"                # one of _validate.OPTIMIZERS
    momentum: float = 0.9                 # SGD only
    weight_decay: float = 0.0
    lr_schedule: Optional[str] = None     # None or "cosine" (over the run's epochs)
    init: str = "kaiming_normal"          # weight init before the method: or torch's "default"
    source: str = ""

    WEIGHTS_LR: ClassVar[float] = 0.1

    def __post_init__(self) -> None:
        V.choice("optimizer", self.optimizer, V.OPTIMIZERS)
        V.choice("lr_schedule", self.lr_schedule, V.LR_SCHEDULES)
        V.choice("init", self.init, V.INITS)

    @property
    def main_group(self) -> str:
        return next(iter(self.lrs))

    def lr(self, group: str) -> float:
        """The recipe's learning rate of ``group``."""
        if group in self.lrs:
            return self.lrs[group]
        return self.WEIGHTS_LR if group == "weights" else self.lrs[self.main_group]

    def learning_rates(self, groups: Sequence[str], lr: Optional[float] = None,
                       overrides: Optional[dict[str, float]] = None) -> dict[str, float]:
        """The learning rate of each of ``groups`` (the parameter groups a model has): the
        recipe's, ``lr`` for the main group (the recipe's first that is present), then
        ``overrides`` by name. Names in ``overrides`` that are not in ``groups`` raise ValueError."""
        overrides = overrides or {}
        unknown = sorted(set(overrides) - set(groups))
        if unknown:
            raise ValueError(f"no parameter group {', '.join(unknown)} in this model; groups: "
                             f"{', '.join(groups) or '(none)'}")
        main = self.main_group if self.main_group in groups else next(iter(groups), None)
        out = {}
        for name in groups:
            rate = overrides.get(name, lr if name == main and lr is not None else self.lr(name))
            out[name] = V.finite_number(f"learning rate of {name!r}", rate, minimum=0.0,
                                        strict=True)
        return out


class TrainingHooks:
    """What a method needs from a training loop besides forward, backward and the optimizer step,
    for all layers of one model that use it (built by :meth:`MaskMethod.training_hooks`). The
    defaults do nothing."""

    needs_validation: bool = False  # end_of_epoch reads the validation loss

    def after_step(self, model: nn.Module, inputs: Tensor, labels: Tensor) -> None:
        """Runs after each optimizer step."""

    def end_of_epoch(self, model: nn.Module, epoch: int, optimizer: torch.optim.Optimizer,
                     val_loss: Optional[float], evaluate: Callable[[nn.Module], float]
                     ) -> Optional[str]:
        """Runs after epoch ``epoch`` (1-based) and its validation; ``evaluate(model)`` gives the
        validation loss. Returns a line for the log when it changed the model, else None."""
        return None

    def state_dict(self) -> dict:
        """What must survive a checkpoint."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restores :meth:`state_dict`'s content."""


class MaskMethod(ABC):
    """How one masked layer learns its mask: the parameters it owns, the op its forward calls, and
    the deterministic final mask; and, for the whole model, its training contract (see the module
    docstring).

    One instance per layer (it may hold per-layer state). Subclasses set ``name``, take their
    options as keyword arguments of ``__init__`` (validated there) and implement :meth:`attach`,
    :meth:`weight`, :meth:`final_mask`; the rest have defaults.
    """

    name: ClassVar[str] = ""

    def __new__(cls, *args: Any, pattern: Optional[str] = None, **kwargs: Any):
        # With a pattern, a method that has an N:M variant is that variant (same options).
        if pattern is not None and cls in _PATTERN_VARIANTS:
            cls = _PATTERN_VARIANTS[cls]
        return super().__new__(cls)

    # The parameters attach() registers on the layer (see sparseprune.mask_parameters).
    parameter_names: ClassVar[tuple[str, ...]] = ("scores",)
    # False for a mask that something else sets ("fixed": prune_at_init, set_masks); the
    # experiment runner offers only the methods that prune on their own.
    standalone: ClassVar[bool] = True
    # How a target density applies (one of _validate.DENSITY_ROLES): "option": the method trains
    # with it (its ``density`` option); "learned": the density is learned (budget_mass), a budget
    # steers it and finalize(density=...) keeps exactly the target; "final": only
    # finalize(density=...) imposes it.
    density_role: ClassVar[str] = "final"
    recipe: ClassVar[Recipe] = Recipe({"scores": 0.1}, source="generic default")
    # True for methods that sample noise: their layers keep a noise stream (``layer.rng``).
    stochastic: ClassVar[bool] = False
    # (n, m) for a method keeping n of every m consecutive input weights (an N:M pattern): the
    # density is then fixed by the pattern (sparsity_report checks compliance, finalize(density=)
    # refuses). Set per instance by the pattern methods.
    pattern: Optional[tuple[int, int]] = None
    # What ranking_scores are, for plots and reports.
    score_label: ClassVar[str] = "score"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        V.choice(f"{cls.__name__}.density_role", cls.density_role, V.DENSITY_ROLES)

    @classmethod
    def option_defaults(cls) -> dict[str, Any]:
        """The method's options (the keywords of its constructor) and their defaults."""
        params = inspect.signature(cls.__init__).parameters
        return {k: p.default for k, p in params.items()
                if k != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}

    def options(self) -> dict[str, Any]:
        """The options this instance was created with (for ``repr`` and run configs)."""
        return {k: getattr(self, k) for k in self.option_defaults()}

    def check_layer(self, name: str, shape: Sequence[int], input_dim: Optional[int]) -> None:
        """Raise ValueError (naming the layer ``name``) when a layer with a weight of ``shape``,
        whose input runs along dimension ``input_dim`` (None: no input dimension, e.g. an
        embedding table), cannot take this method. :func:`sparseprune.convert` asks before it
        changes anything. Default: every layer can."""

    def bind(self, name: str, layer: "MaskedLayer") -> None:
        """Called by :func:`sparseprune.convert` once ``layer`` (named ``name`` in the model) is
        attached: options that name layers (e.g. a dict of prior masks) apply here."""

    def set_progress(self, layer: "MaskedLayer", fraction: float) -> None:
        """The fraction of training done, for options scheduled over training (e.g. a
        temperature ``(start, end)``); :func:`sparseprune.set_progress` calls it for every
        layer. Default: nothing is scheduled."""

    @abstractmethod
    def attach(self, layer: "MaskedLayer") -> None:
        """Register the method's parameters on ``layer`` (e.g. ``layer.scores``) and prepare its weight."""

    @abstractmethod
    def weight(self, layer: "MaskedLayer") -> Tensor:
        """The weight the layer computes with at this forward (differentiable; sampled in
        training for stochastic methods, the final weight where the method says so)."""

    def forward(self, layer: "MaskedLayer", input: Tensor) -> Tensor:
        """The layer's output, in training or in eval mode (default: the layer's computation with
        :meth:`weight`; methods with a fused op use it where the layer type has one)."""
        return layer.dense(input, self.weight(layer))

    @abstractmethod
    def final_mask(self, layer: "MaskedLayer") -> Tensor:
        """The deterministic boolean mask this layer ends with (the weight's shape)."""

    def final_scale(self, layer: "MaskedLayer", mask: Tensor) -> Tensor | float:
        """A factor folded into the kept weights of ``mask`` by :func:`sparseprune.finalize`
        (default 1)."""
        return 1.0

    def ranking_scores(self, layer: "MaskedLayer") -> Tensor:
        """Scores whose largest entries are kept when a final density is imposed."""
        return layer.scores

    def budget_mass(self, layer: "MaskedLayer") -> Tensor:
        """The layer's differentiable expected number of kept weights, the cost C that
        :class:`sparseprune.budget.BudgetLoss` drives to its target (``density_role ==
        "learned"`` methods only)."""
        raise TypeError(f"method {self.name!r} has no learned density for a budget loss "
                        "(it is fixed by the method's options)")

    def rule_mass(self, layer: "MaskedLayer") -> Tensor:
        """The number of weights the layer's own final rule keeps (``final_mask(layer).sum()``)
        as the value, with the gradient of :meth:`budget_mass` (straight-through): the cost that
        :class:`sparseprune.budget.Budget` constrains, so that the density it holds is the one
        ``finalize`` keeps. Methods with a better surrogate of their rule may override it."""
        soft = self.budget_mass(layer)
        hard = self.final_mask(layer).sum().to(soft.dtype)
        return soft + (hard - soft.detach())

    def disagreement(self, layer: "MaskedLayer", keep: Tensor) -> Tensor:
        """The differentiable expected number of the layer's weights whose training-time mask
        differs from ``keep`` (a boolean mask, the weight's shape): the commit term of
        :class:`sparseprune.budget.Budget`, which drives it toward 0 so that the network trained
        is the network kept (``density_role == "learned"`` methods only)."""
        raise TypeError(f"method {self.name!r} has no learned density for a budget "
                        "(it is fixed by the method's options)")

    def pruning_rounds(self) -> int:
        """Prune-retrain rounds after the first training (0: the mask is learned in one go)."""
        return 0

    @classmethod
    def training_hooks(cls, layers: Sequence["MaskedLayer"], *,
                       epochs_per_round: int) -> TrainingHooks:
        """The hooks a training loop runs for ``layers`` (this method's layers of one model, in
        module order); ``epochs_per_round`` is the loop's epochs per pruning round."""
        return TrainingHooks()

    @torch.no_grad()
    def final_weight(self, layer: "MaskedLayer", mask: Tensor | None = None) -> Tensor:
        """The weight the finalized layer carries: kept weights times :meth:`final_scale`, 0 elsewhere."""
        mask = self.final_mask(layer) if mask is None else mask
        scale = self.final_scale(layer, mask)
        kept = layer.weight * scale if isinstance(scale, Tensor) or scale != 1.0 else layer.weight
        return torch.where(mask, kept.to(layer.weight.dtype), torch.zeros_like(layer.weight))

    def __repr__(self) -> str:
        # Only the options that differ from their defaults, like nn.Module reprs.
        defaults = self.option_defaults()
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items() if v != defaults[k])
        return f"{self.name}({opts})"


def layers_using(model: nn.Module, cls: type[MaskMethod]) -> list[tuple[str, "MaskedLayer"]]:
    """The layers of ``model`` whose method is a ``cls``, with their qualified names, in module
    order."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(getattr(m, "method", None), cls)]


_REGISTRY: dict[str, type[MaskMethod]] = {}
# A method class -> its N:M variant, which MaskMethod(..., pattern="N:M") builds instead.
_PATTERN_VARIANTS: dict[type[MaskMethod], type[MaskMethod]] = {}


def pattern_variant(plain: type[MaskMethod]):
    """Class decorator: ``plain(..., pattern="N:M")`` builds the decorated class instead."""
    def decorate(variant: type[MaskMethod]) -> type[MaskMethod]:
        _PATTERN_VARIANTS[plain] = variant
        return variant
    return decorate


def register(cls: type[MaskMethod]) -> type[MaskMethod]:
    """Class decorator: make a method available under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a name to be registered")
    _REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    """Names of the pruning methods, e.g. ``["aslp", ...]``."""
    return sorted(_REGISTRY)


def get(name: str) -> type[MaskMethod]:
    """The method class registered as ``name``; unknown names raise ValueError listing the valid
    ones."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(available())}")
    return _REGISTRY[name]


def create(name: str, **options: Any) -> MaskMethod:
    """A new method instance; unknown names and options raise ValueError listing the valid ones."""
    cls = get(name)
    valid = list(cls.option_defaults())
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(map(repr, unknown))} for method {name!r}; "
                         f"valid options: {', '.join(valid)}")
    return cls(**options)
