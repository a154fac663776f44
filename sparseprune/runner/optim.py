"""Per-method training defaults, in one place: optimizer, learning rate per parameter group, weight
decay, schedule and weight initialisation. ``--lr`` overrides the main group's learning rate and
``--group-lr NAME=LR`` any group's.

Parameter groups are the names of :func:`sparseprune.mask_parameters` (``scores``, ``scale``, ...)
plus ``weights``: every other trainable parameter (weights and biases that a method leaves
trainable, e.g. after pruning at initialisation). A method without a row here gets ``FALLBACK``
(and the run says so); add its row when it lands.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

import sparseprune as sp

from .config import INITS, ConfigError, RunConfig

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = (None, "cosine")


@dataclass(frozen=True)
class TrainSpec:
    """How a method trains by default, and where that comes from."""

    lrs: dict[str, float]                 # group -> learning rate; the first one is the main group
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: Optional[str] = None        # None or "cosine" (over the configured epochs)
    init: str = "kaiming_normal"          # "kaiming_normal" (ASLP reference) or "default" (torch's)
    source: str = ""

    @property
    def main_group(self) -> str:
        return next(iter(self.lrs))


WEIGHTS_LR = 0.1  # the "weights" group when a row does not name it

DEFAULTS: dict[str, TrainSpec] = {
    "aslp": TrainSpec({"scores": 50.0, "scale": 1e-3}, source="METHODS.md 1.5 (ASLP reference)"),
    "supermask": TrainSpec({"scores": 50.0, "scale": 1e-3},
                           source="METHODS.md 2.4 (ASLP reference's Supermask: SGD lr 50)"),
    "edge_popup": TrainSpec({"scores": 0.1}, weight_decay=1e-4, schedule="cosine",
                            source="METHODS.md 3.4 (hidden-networks small-scale configs)"),
}
# Weights trained with the masks (Adam; the rates of the papers' small nets).
DEFAULTS.update({
    "lottery": TrainSpec({"weights": 1.2e-3}, optimizer="adam",
                         source="METHODS.md 8.2 (F&C LeNet-300-100: Adam 1.2e-3, per round)"),
    "magnitude": TrainSpec({"weights": 1.2e-3}, optimizer="adam", weight_decay=1e-4,
                           source="METHODS.md 7 (L2 during training and retraining; the lr is "
                                  "unconfirmed: F&C's LeNet rate)"),
    "reparam": TrainSpec({"weights": 1e-3, "t": 1.0}, optimizer="adam",
                         source="METHODS.md 4.3 (unconfirmed; t needs its own, larger rate)"),
    "hard_concrete": TrainSpec({"weights": 1e-3, "log_alpha": 1e-2}, optimizer="adam",
                               source="METHODS.md 5.5 (Adam 1e-3; log_alpha 1e-2 so a short "
                                      "run reaches its budget)"),
    "sensitivity": TrainSpec({"weights": 0.1}, source="METHODS.md 6.4 (LOBSTER's example: "
                                                      "SGD lr 0.1)"),
})
# Pruning at initialisation trains the remaining weights with the mask fixed.
for _name in ("snip", "grasp", "synflow", "iter_snip", "force", "random", "magnitude_init"):
    DEFAULTS[_name] = TrainSpec({"weights": 0.1}, weight_decay=1e-4, schedule="cosine",
                                init="kaiming_normal",
                                source="common small-scale setting; METHODS.md section 9")
FALLBACK = TrainSpec({"scores": 0.1}, source="generic fallback (no row for this method yet)")


def spec_for(method: str) -> TrainSpec:
    """The method's row of ``DEFAULTS``, or ``FALLBACK``."""
    return DEFAULTS.get(method, FALLBACK)


def groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Trainable parameters by group name: the methods' groups, then ``weights`` for the rest."""
    out = {name: list(params) for name, params in sp.mask_parameters(model).items()}
    taken = {id(p) for params in out.values() for p in params}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
    if rest:
        out["weights"] = rest
    return out


def learning_rates(config: RunConfig, present: list[str]) -> dict[str, float]:
    """Learning rate of each present group: the spec, then ``--lr`` (main group), then
    ``--group-lr``. Unknown ``--group-lr`` names raise ConfigError."""
    spec = spec_for(config.method)
    unknown = sorted(set(config.group_lr) - set(present))
    if unknown:
        raise ConfigError(f"--group-lr: no parameter group {', '.join(unknown)} in this run; "
                          f"groups: {', '.join(present) or '(none)'}")
    main = spec.main_group if spec.main_group in present else (present[0] if present else None)
    lrs = {}
    for name in present:
        lr = spec.lrs.get(name, WEIGHTS_LR if name == "weights" else spec.lrs[spec.main_group])
        if name == main and config.lr is not None:
            lr = config.lr
        lrs[name] = float(config.group_lr.get(name, lr))
    return lrs


def build_optimizer(model: nn.Module, config: RunConfig
                    ) -> tuple[torch.optim.Optimizer, Optional[torch.optim.lr_scheduler.LRScheduler],
                               list[str]]:
    """(optimizer, scheduler or None, group names in optimizer order) for ``model``."""
    spec = spec_for(config.method)
    params = groups(model)
    if not params:
        raise ConfigError(f"method {config.method!r} left no trainable parameter in model "
                          f"{config.model!r}")
    lrs = learning_rates(config, list(params))
    param_groups = [{"params": ps, "lr": lrs[name], "name": name} for name, ps in params.items()]
    if spec.optimizer == "sgd":
        opt = torch.optim.SGD(param_groups, lr=lrs[next(iter(lrs))], momentum=spec.momentum,
                              weight_decay=spec.weight_decay)
    else:
        opt = torch.optim.Adam(param_groups, lr=lrs[next(iter(lrs))],
                               weight_decay=spec.weight_decay)
    sched = None
    if spec.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.epochs)
    return opt, sched, list(params)


def init_weights(model: nn.Module, config: RunConfig) -> nn.Module:
    """Initialise the weights as the run asks (``--init``, else the method's default)."""
    from ..models import kaiming_normal_

    init = config.init or spec_for(config.method).init
    assert init in INITS, init  # config.validate checked --init; rows use valid names
    return kaiming_normal_(model) if init == "kaiming_normal" else model
