"""``--fsdp``: the runner's model sharded with FSDP2 over the torchrun ranks.

Each masked layer is a ``fully_shard`` unit and the root holds the rest, so weights, scores,
gradients and optimizer state are split across ranks; the masked op still sees whole tensors in
the forward (so the masks equal the unsharded run's). Checkpoints are DCP directories
(``checkpoint.dcp``, :mod:`sparseprune.training.dcp`); ``best.pt`` and the final evaluation use
the whole state, gathered into an unsharded twin kept from before sharding.

Supported: methods that need nothing from the loop besides forward, backward and step (ASLP,
Supermask, Edge-Popup, ...), without a budget loss (which reads every score outside the forward).
"""

from __future__ import annotations

import copy
from typing import Optional

from torch import nn

import sparseprune as sp
from sparseprune.methods import TrainingHooks as MethodHooks

from .config import ConfigError, RunConfig
from .hooks import TrainingHooks
from .ranks import Ranks


def check(config: RunConfig, ranks: Ranks, hooks: TrainingHooks) -> None:
    """ConfigError when ``--fsdp`` cannot run this configuration, saying why."""
    if not ranks.distributed:
        raise ConfigError("--fsdp shards over several processes: launch with torchrun "
                          "--nproc-per-node N (N >= 2)")
    if hooks.budget is not None:
        raise ConfigError(f"--fsdp with --density {config.density} and --method "
                          f"{config.method}: the budget loss reads every score outside the "
                          "forward, which FSDP shards; use DDP (drop --fsdp) or "
                          "--budget-strength 0")
    busy = [name for name, h in hooks.hooks.items() if type(h) is not MethodHooks]
    if busy:
        raise ConfigError(f"--fsdp with --method {busy[0]}: the method changes the model between "
                          "steps or epochs, which is not supported on sharded parameters; "
                          "use DDP (drop --fsdp)")


def shard(model: nn.Module) -> nn.Module:
    """``fully_shard`` every masked layer, then the root (in place); returns the unsharded twin
    (a deep copy from before sharding) for the whole-state work at the end."""
    from torch.distributed.fsdp import fully_shard

    twin = copy.deepcopy(model)
    for _, layer in sp.masked_layers(model):
        fully_shard(layer)
    fully_shard(model)
    return twin


def gather(model: nn.Module, twin: Optional[nn.Module]) -> nn.Module:
    """The whole model: ``twin`` loaded with the sharded ``model``'s state and method states
    (a collective: every rank calls it), or ``model`` itself when it is not sharded."""
    if twin is None:
        return model
    from sparseprune.training.dcp import method_states, restore_method_states

    twin.load_state_dict(sp.distributed.full_state_dict(model))
    restore_method_states(twin, method_states(model))
    return twin
