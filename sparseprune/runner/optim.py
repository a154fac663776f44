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


def learning_rates(config: RunConfig, present: list[str]) -> dict[str, float]:
    """Learning rate of each present group: the method's recipe, then ``--lr`` (main group), then
    ``--group-lr``; bad names raise ConfigError."""
    try:
        return methods.recipe(config.method).learning_rates(present, config.lr, config.group_lr)
    except ValueError as exc:
        raise ConfigError(f"--group-lr: {exc}") from None


def build_optimizer(model: nn.Module, config: RunConfig
                    ) -> tuple[torch.optim.Optimizer, Optional[torch.optim.lr_scheduler.LRScheduler],
                               list[str]]:
    """(optimizer, scheduler or None, group names in optimizer order) for ``model``."""
    recipe = methods.recipe(config.method)
    try:
        param_groups = sp.param_groups(model, lr=config.lr, lrs=config.group_lr)
    except ValueError as exc:
        raise ConfigError(f"--group-lr: {exc}") from None
    if not param_groups:
        raise ConfigError(f"method {config.method!r} left no trainable parameter in model "
                          f"{config.model!r}")
    lrs = {g["name"]: g["lr"] for g in param_groups}
    if recipe.optimizer == "sgd":
        opt = torch.optim.SGD(param_groups, lr=lrs[next(iter(lrs))], momentum=recipe.momentum,
                              weight_decay=recipe.weight_decay)
    else:
        opt = torch.optim.Adam(param_groups, lr=lrs[next(iter(lrs))],
                               weight_decay=recipe.weight_decay)
    sched = None
    if recipe.lr_schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs)
    return opt, sched, list(lrs)


def init_weights(model: nn.Module, config: RunConfig) -> nn.Module:
    """Initialise the weights as the run asks (``--init``, else the method's default)."""
    init = config.init or methods.recipe(config.method).init
    return kaiming_normal_(model) if init == "kaiming_normal" else model
