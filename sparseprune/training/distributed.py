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


def _shard_problem(layer: nn.Module, whole: tuple[int, ...]) -> str:
    """Why the tensors ``layer``'s method is about to mask are not whole ('' when they are)."""
    tensors = [("weight", layer.weight)] + [
        (p, getattr(layer, p)) for p in layer.method.parameter_names
        if isinstance(getattr(layer, p, None), torch.Tensor)]
    for name, t in tensors:
        if is_sharded(t):
            return f"its {name} was a shard ({type(t).__name__}) when the mask was applied"
    if tuple(layer.weight.shape) != whole:
        return (f"its weight had shape {tuple(layer.weight.shape)} when the mask was applied, "
                f"not the whole {whole}")
    return ""


@torch.no_grad()
def check_masks_applied(model: nn.Module, *args: Any, **kwargs: Any) -> None:
    """Run ``model(*args, **kwargs)`` once (no autograd; every rank must call it under DDP or
    FSDP) and raise :class:`MaskNotAppliedError` naming each masked layer whose mask did not take
    part: its method was never asked for the masked output or weight (a parent computed with the
    raw weight, as fast paths do), or it was asked on a shard of the weight or scores instead of
    the whole tensor. The streams are restored afterwards, so training continues as if the check
    had not run (FSDP2 modules are resharded)."""
    layers = masked_layers(model)
    if not layers:
        raise MaskNotAppliedError("check_masks_applied: the model has no masked layers (convert "
                                  "it with sparseprune.convert before wrapping)")
    before = {name: layer.rng.clone() for name, layer in layers if hasattr(layer, "rng")}
    whole = {name: tuple(layer.weight.shape) for name, layer in layers}  # DTensors: global
    seen: dict[str, str] = {}
    # The two ways a layer's mask enters a forward: the method's forward (the layer's own) and
    # its masked weight (parents such as attention ask for it directly). Per-instance wrappers.
    for name, layer in layers:
        method = layer.method
        for attr in ("forward", "weight"):
            original = getattr(method, attr)

            def wrapper(*a, _original=original, _name=name, _layer=layer, **kw):
                if not seen.get(_name):
                    seen[_name] = _shard_problem(_layer, whole[_name])
                return _original(*a, **kw)
            setattr(method, attr, wrapper)
    try:
        model(*args, **kwargs)
    finally:
        # A forward without backward leaves FSDP2's root unsharded: an optimizer built next
        # would hold the temporary whole tensors instead of the shards.
        for m in fsdp_modules(model):
            m.reshard()
        for name, layer in layers:
            for attr in ("forward", "weight"):
                vars(layer.method).pop(attr, None)
            if name in before:
                layer.rng.copy_(before[name])
    problems = [f"{name!r}: {seen[name]}" if name in seen
                else f"{name!r}: its mask was never applied (its weight was used without it)"
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
