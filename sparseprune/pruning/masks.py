"""Setting the masks of fixed-mask layers from outside (pruning at init, magnitude pruning,
lottery-ticket rounds)."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from ..convert import masked_layers
from ..methods.fixed import FixedMask


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
    layers = dict(masked_layers(model))
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
