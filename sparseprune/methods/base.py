"""The interface every pruning method implements, and the registry that names them."""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from ..nn.masked import MaskedLayer


class MaskMethod(ABC):
    """How one masked layer learns its mask: the parameters it owns, the op its forward calls, and
    the deterministic final mask.

    One instance per layer (it may hold per-layer state). Subclasses set ``name``, take their
    options as keyword arguments of ``__init__`` (validated there) and implement :meth:`attach`,
    :meth:`forward`, :meth:`final_mask`; :meth:`final_scale` and :meth:`ranking_scores` have
    defaults.
    """

    name: ClassVar[str] = ""
    # The parameters attach() registers on the layer (see sparseprune.mask_parameters).
    parameter_names: ClassVar[tuple[str, ...]] = ("scores",)
    # False for a mask that something else sets ("fixed": prune_at_init, set_masks); the
    # experiment runner offers only the methods that prune on their own.
    standalone: ClassVar[bool] = True

    def options(self) -> dict[str, Any]:
        """The options this instance was created with (for ``repr`` and run configs)."""
        params = inspect.signature(type(self).__init__).parameters
        return {k: getattr(self, k) for k in params if k != "self"}

    @abstractmethod
    def attach(self, layer: "MaskedLayer") -> None:
        """Register the method's parameters on ``layer`` (e.g. ``layer.scores``) and prepare its weight."""

    @abstractmethod
    def forward(self, layer: "MaskedLayer", input: Tensor) -> Tensor:
        """The layer's output, in training or in eval mode."""

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
        :class:`sparseprune.budget.BudgetLoss` drives to its target. Methods whose density is not
        learned (fixed by an option or a rule) have none."""
        raise TypeError(f"method {self.name!r} has no learned density for a budget loss "
                        "(it is fixed by the method's options)")

    @torch.no_grad()
    def final_weight(self, layer: "MaskedLayer", mask: Tensor | None = None) -> Tensor:
        """The weight the finalized layer carries: kept weights times :meth:`final_scale`, 0 elsewhere."""
        mask = self.final_mask(layer) if mask is None else mask
        scale = self.final_scale(layer, mask)
        kept = layer.weight * scale if isinstance(scale, Tensor) or scale != 1.0 else layer.weight
        return torch.where(mask, kept.to(layer.weight.dtype), torch.zeros_like(layer.weight))

    def __repr__(self) -> str:
        # Only the options that differ from their defaults, like nn.Module reprs.
        params = inspect.signature(type(self).__init__).parameters
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items()
                         if v != params[k].default)
        return f"{self.name}({opts})"


_REGISTRY: dict[str, type[MaskMethod]] = {}


def register(cls: type[MaskMethod]) -> type[MaskMethod]:
    """Class decorator: make a method available under ``cls.name``."""
    _REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    """Names of the pruning methods, e.g. ``["aslp"]``."""
    return sorted(_REGISTRY)


def create(name: str, **options: Any) -> MaskMethod:
    """A new method instance; unknown names and options raise ValueError listing the valid ones."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(available())}")
    cls = _REGISTRY[name]
    valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(map(repr, unknown))} for method {name!r}; "
                         f"valid options: {', '.join(valid)}")
    return cls(**options)
