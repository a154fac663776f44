"""Mask training across processes on torch.distributed (DDP, FSDP2's ``fully_shard``).

The masks' noise comes from each masked layer's own stream (the ``rng`` buffer ``[seed, step]``,
:mod:`sparseprune.nn.masked`), keyed by the global element index of the whole weight: the masked
op runs inside the layer's forward, where FSDP2 has gathered the whole weight and scores. So every
rank samples the same mask at the same step as one process would, provided the ranks start from
the same state:

- DDP broadcasts rank 0's parameters and buffers (the streams included) when it wraps the model,
  and its gradient average makes N ranks at per-rank batch B train like one process at batch N*B
  (up to floating-point summation order). Nothing else is needed.
- FSDP2 broadcasts nothing: call :func:`broadcast_model` before ``fully_shard`` (or build the
  model from the same seed on every rank). :func:`check_streams` says loudly when ranks diverge.

:func:`per_rank_noise` trades that equivalence for more noise samples per step (see its doc).
:func:`check_masks_applied` runs a forward and fails when a masked layer was bypassed or saw a
shard instead of its whole weight. The final masks and the sparsity report gather FSDP2 shards
themselves (:mod:`sparseprune.nn.sharded`).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import nn

from ..convert import masked_layers
from ..nn.sharded import fsdp_modules, is_sharded
from ..ops.rng import stream_key


def _require_initialized(what: str) -> None:
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(f"{what}: torch.distributed is not initialized; call "
                           "torch.distributed.init_process_group first (torchrun sets it up)")


@torch.no_grad()
def broadcast_model(model: nn.Module, *, src: int = 0, group: Optional[Any] = None) -> nn.Module:
    """Copy rank ``src``'s parameters and buffers (the masks' streams included) to every rank, as
    DDP does when it wraps a model. Call it before ``fully_shard``, which broadcasts nothing;
    the model must not be sharded yet. Returns the model."""
    _require_initialized("broadcast_model")
    if fsdp_modules(model):
        raise ValueError("broadcast_model: the model is already sharded by fully_shard; "
                         "broadcast before sharding (each rank then shards the same tensors)")
    for tensor in [*model.parameters(), *model.buffers()]:
        dist.broadcast(tensor.data, src=src, group=group)
    return model


def streams(model: nn.Module) -> dict[str, torch.Tensor]:
    """Each stochastic masked layer's stream ``[seed, step]`` (a CPU copy), by layer name."""
    return {name: layer.rng.detach().cpu().clone() for name, layer in masked_layers(model)
            if hasattr(layer, "rng")}


@torch.no_grad()
def check_streams(model: nn.Module, *, group: Optional[Any] = None) -> None:
    """Raise RuntimeError, on every rank, when the masked layers' streams differ between ranks
    (they would sample different masks), naming the first layer and the values of each rank."""
    _require_initialized("check_streams")
    mine = streams(model)
    world = dist.get_world_size(group)
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, {k: v.tolist() for k, v in mine.items()}, group=group)
    for name in mine:
        values = [g.get(name) for g in gathered]
        if any(v != values[0] for v in values):
            raise RuntimeError(
                f"masked layer {name!r} has different noise streams on different ranks "
                f"([seed, step] by rank: {values}); the ranks would sample different masks. "
                "Wrap with DDP (it broadcasts rank 0's buffers) or call "
                "sparseprune.distributed.broadcast_model before fully_shard")


def per_rank_noise(model: nn.Module, enabled: bool = True, *,
                   group: Optional[Any] = None) -> nn.Module:
    """Give each rank masks of its own: every masked layer XORs a key of the rank into its
    stream's seed at each draw (``layer.stream_key``); ``enabled=False`` returns to the shared
    stream. The ``rng`` buffers stay identical on all ranks (DDP may keep broadcasting them,
    checkpoints are the same), only the draws differ.

    Trade-off: N ranks then average gradients over N sampled masks per step instead of one, a
    lower-variance estimate of the expected gradient (like N mask samples per step); but the run
    no longer equals one process at batch N*B, its result depends on the number of ranks, and the
    rank's masks differ within a step (nothing reproduces "the" mask of a step). Off by default.
    """
    _require_initialized("per_rank_noise")
    key = stream_key(dist.get_rank(group)) if enabled else 0
    for _, layer in masked_layers(model):
        layer.stream_key = key
    return model


class MaskNotAppliedError(RuntimeError):
    """A masked layer's mask did not take part in a forward (bypassed, or computed on a shard)."""


@torch.no_grad()
def check_masks_applied(model: nn.Module, *args: Any, **kwargs: Any) -> None:
    """Run ``model(*args, **kwargs)`` once (no autograd; every rank must call it under DDP or
    FSDP) and raise :class:`MaskNotAppliedError` naming each masked layer whose mask did not take
    part: a layer whose forward never ran (a parent read its weight directly, as fast paths do) or
    that ran on a shard of its weight or scores instead of the whole tensor. The streams are
    restored afterwards, so training continues as if the check had not run."""
    layers = masked_layers(model)
    if not layers:
        raise MaskNotAppliedError("check_masks_applied: the model has no masked layers (convert "
                                  "it with sparseprune.convert before wrapping)")
    before = {name: layer.rng.clone() for name, layer in layers if hasattr(layer, "rng")}
    shapes = {name: tuple(layer.weight.shape) for name, layer in layers}  # DTensors: global
    seen: dict[str, str] = {}
    hooks = []
    for name, layer in layers:
        def hook(module: nn.Module, inputs: Any, name: str = name) -> None:
            tensors = [("weight", module.weight)] + [
                (p, getattr(module, p)) for p in module.method.parameter_names
                if isinstance(getattr(module, p, None), torch.Tensor)]
            for pname, t in tensors:
                if is_sharded(t):
                    seen[name] = f"its {pname} was a shard ({type(t).__name__}) in the forward"
                    return
            if tuple(module.weight.shape) != shapes[name]:
                seen[name] = (f"its weight had shape {tuple(module.weight.shape)} in the forward, "
                              f"not the whole {shapes[name]}")
                return
            seen[name] = ""
        hooks.append(layer.register_forward_pre_hook(hook))
    try:
        model(*args, **kwargs)
    finally:
        for h in hooks:
            h.remove()
        for name, layer in layers:
            if name in before:
                layer.rng.copy_(before[name])
    problems = [f"{name!r}: its forward did not run (its weight was used without the mask)"
                if name not in seen else f"{name!r}: {seen[name]}"
                for name, _ in layers if seen.get(name, None) != ""]
    if problems:
        raise MaskNotAppliedError(f"{len(problems)} of {len(layers)} masked layers did not apply "
                                  f"their mask in the forward: {'; '.join(problems)}")


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole state of a (possibly FSDP2-sharded) model on every rank, as plain CPU tensors:
    load it into an unsharded copy to finalize, report or save the subnetwork."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    return {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in state.items()}
