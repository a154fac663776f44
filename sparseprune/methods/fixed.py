"""A fixed mask: the layer trains its weights through a boolean mask that does not learn.

Used by :func:`sparseprune.prune_at_init` and reusable by any prune-then-train procedure
(magnitude pruning, lottery tickets): convert with ``"fixed"``, then set or update masks with
:func:`sparseprune.set_masks` (or :meth:`FixedMask.set_mask` on one layer).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Optional

import torch
from torch import Tensor, nn

from .base import MaskMethod, Recipe, layers_using, register

if TYPE_CHECKING:  # pragma: no cover
    from ..nn.masked import MaskedLayer


@register
class FixedMask(MaskMethod):
    """A boolean ``mask`` buffer per layer (in the ``state_dict``, all True when attached); the
    forward computes with ``weight * mask`` (as ``torch.where(mask, weight, 0)``, so the gradient
    of a pruned weight is exactly 0 even when the upstream gradient is not finite).

    The weight and bias keep their ``requires_grad`` (trainable by default). Pruned weights are
    set to exactly 0 whenever a mask is set, so with zero gradients they stay 0 under any
    optimizer whose update of a zero weight with a zero gradient is zero: SGD with momentum,
    Nesterov and (coupled or decoupled) weight decay, Adam, AdamW, RMSprop, Adagrad.

    Final mask: the buffer. Ranking scores (for ``finalize(model, density=...)``): ``|weight|``
    of the kept weights, ``-inf`` for the pruned ones, i.e. magnitude pruning within the mask.
    """

    name = "fixed"
    parameter_names = ()
    standalone = False
    score_label = "|w| of the kept weights (pruned ones have none)"
    recipe = Recipe({"weights": 0.1}, weight_decay=1e-4, lr_schedule="cosine",
                    source="common small-scale setting; METHODS.md section 9")

    def __init__(self) -> None:  # no options
        pass

    def attach(self, layer: "MaskedLayer") -> None:
        mask = torch.ones(layer.weight.shape, dtype=torch.bool, device=layer.weight.device)
        layer.register_buffer("mask", mask, persistent=True)

    def weight(self, layer: "MaskedLayer") -> Tensor:
        return self.masked_weight(layer)

    @staticmethod
    def masked_weight(layer: "MaskedLayer") -> Tensor:
        """``weight * mask``, differentiable in the weight (zero gradient where pruned)."""
        return torch.where(layer.mask, layer.weight, torch.zeros((), dtype=layer.weight.dtype,
                                                                 device=layer.weight.device))

    def final_mask(self, layer: "MaskedLayer") -> Tensor:
        return layer.mask

    def ranking_scores(self, layer: "MaskedLayer") -> Tensor:
        magnitude = layer.weight.detach().abs()
        return magnitude.masked_fill_(~layer.mask, float("-inf"))

    @torch.no_grad()
    def set_mask(self, layer: "MaskedLayer", mask: Optional[Tensor] = None) -> None:
        """Replace the layer's mask by ``mask`` (a bool tensor of the weight's shape, copied) and
        set the pruned weights, and their ``.grad`` entries if a gradient exists, to exactly 0.
        ``mask=None`` keeps the current mask and only zeroes the pruned weights again (e.g. after
        rewinding the weights to saved values). Optimizer state (momentum) is not touched: set
        masks before creating the optimizer, or reset its state."""
        if mask is not None:
            if not isinstance(mask, Tensor):
                raise TypeError(f"mask must be a bool Tensor, got {type(mask).__name__}")
            if mask.dtype != torch.bool:
                raise TypeError(f"mask must be a bool Tensor, got dtype {mask.dtype}")
            if mask.shape != layer.weight.shape:
                raise ValueError(f"mask must have the weight's shape {list(layer.weight.shape)}, "
                                 f"got {list(mask.shape)}")
            layer.mask.copy_(mask)
        pruned = ~layer.mask
        layer.weight.masked_fill_(pruned, 0)
        if layer.weight.grad is not None:
            layer.weight.grad.masked_fill_(pruned, 0)


@torch.no_grad()
def set_masks(model: nn.Module, masks: Mapping[str, Tensor]) -> nn.Module:
    """Give the ``"fixed"`` masked layers of ``model`` new masks, by qualified layer name, and set
    their pruned weights to exactly 0. In place; returns ``model``.

    Each mask is a bool tensor of the layer's weight shape (copied to the layer's device). Layers
    not named in ``masks`` keep their mask. Unknown names, layers of another method, and masks of
    the wrong type or shape raise ValueError / TypeError naming the layer. Validation happens
    before anything changes, so a bad call leaves the model as it was.
    """
    if not isinstance(masks, Mapping):
        raise TypeError(f"masks must be a mapping of layer name -> bool Tensor, "
                        f"got {type(masks).__name__}")
    layers = dict(layers_using(model, MaskMethod))
    fixed = {name: layer for name, layer in layers.items() if isinstance(layer.method, FixedMask)}
    for name, mask in masks.items():
        if name not in layers:
            raise ValueError(f"masks names layer {name!r}, which is not a masked layer of the "
                             f"model; masked layers: {', '.join(map(repr, layers)) or 'none'}")
        if name not in fixed:
            raise ValueError(f"layer {name!r} uses method {layers[name].method.name!r}; only "
                             "'fixed' layers take a mask (convert them with method='fixed')")
        weight = fixed[name].weight
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            got = f"dtype {mask.dtype}" if isinstance(mask, Tensor) else type(mask).__name__
            raise TypeError(f"masks[{name!r}] must be a bool Tensor, got {got}")
        if mask.shape != weight.shape:
            raise ValueError(f"masks[{name!r}] must have the weight's shape "
                             f"{list(weight.shape)}, got {list(mask.shape)}")
    for name, mask in masks.items():
        layer = fixed[name]
        layer.method.set_mask(layer, mask.to(layer.weight.device))
    return model
