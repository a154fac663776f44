"""The run's optimizer from the method's training recipe (:class:`sparseprune.methods.Recipe`:
optimizer, learning rate per parameter group, weight decay, schedule, weight initialisation).
``--lr`` overrides the main group's learning rate and ``--group-lr NAME=LR`` any group's.

Parameter groups are the names of :func:`sparseprune.mask_parameters` (``scores``, ``scale``, ...)
plus ``weights``: every other trainable parameter (weights and biases that a method leaves
trainable, e.g. after pruning at initialisation).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

import sparseprune as sp

from . import methods
from .config import ConfigError, RunConfig
from .models import kaiming_normal_


def groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Trainable parameters by group name: the methods' groups, then ``weights`` for the rest."""
    out = {name: list(params) for name, params in sp.mask_parameters(model).items()}
    taken = {id(p) for params in out.values() for p in params}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
    if rest:
        out["weights"] = rest
    return out


def learning_rates(config: RunConfig, present: list[str]) -> dict[str, float]:
    """Learning rate of each present group: the recipe, then ``--lr`` (main group), then
    ``--group-lr``. Unknown ``--group-lr`` names raise ConfigError."""
    recipe = methods.recipe(config.method)
    unknown = sorted(set(config.group_lr) - set(present))
    if unknown:
        raise ConfigError(f"--group-lr: no parameter group {', '.join(unknown)} in this run; "
                          f"groups: {', '.join(present) or '(none)'}")
    main = recipe.main_group if recipe.main_group in present else (present[0] if present else None)
    lrs = {}
    for name in present:
        lr = recipe.lr(name)
        if name == main and config.lr is not None:
            lr = config.lr
        lrs[name] = float(config.group_lr.get(name, lr))
    return lrs


def build_optimizer(model: nn.Module, config: RunConfig
                    ) -> tuple[torch.optim.Optimizer, Optional[torch.optim.lr_scheduler.LRScheduler],
                               list[str]]:
    """(optimizer, scheduler or None, group names in optimizer order) for ``model``."""
    recipe = methods.recipe(config.method)
    params = groups(model)
    if not params:
        raise ConfigError(f"method {config.method!r} left no trainable parameter in model "
                          f"{config.model!r}")
    lrs = learning_rates(config, list(params))
    param_groups = [{"params": ps, "lr": lrs[name], "name": name} for name, ps in params.items()]
    if recipe.optimizer == "sgd":
        opt = torch.optim.SGD(param_groups, lr=lrs[next(iter(lrs))], momentum=recipe.momentum,
                              weight_decay=recipe.weight_decay)
    else:
        opt = torch.optim.Adam(param_groups, lr=lrs[next(iter(lrs))],
                               weight_decay=recipe.weight_decay)
    sched = None
    if recipe.lr_schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs)
    return opt, sched, list(params)


def init_weights(model: nn.Module, config: RunConfig) -> nn.Module:
    """Initialise the weights as the run asks (``--init``, else the method's default)."""
    init = config.init or methods.recipe(config.method).init
    return kaiming_normal_(model) if init == "kaiming_normal" else model
