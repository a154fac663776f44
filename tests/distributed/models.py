"""Small models and a recording training loop shared by the distributed tests: ``train`` runs
``steps`` SGD steps on a rank's slice of each global batch and records every masked layer's mask
per step, recomputed bit for bit from the scores and the ``[seed, offset]`` pair the layer drew."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import sparseprune as sp
from sparseprune import functional as SF

GLOBAL_BATCH = 8


def mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 24), nn.ReLU(),
                          nn.Linear(24, 4))
    return sp.convert(model, "aslp", rescale="smart", train_weights=True)


class Transformer(nn.Module):
    """Two encoder blocks (masked attention in-projections, out-projections and MLPs) and a head."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(width, 2, 2 * width, dropout=0.0, batch_first=True)
            for _ in range(2))
        self.head = nn.Linear(width, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(1))


def transformer(seed: int, method: str = "aslp", **options) -> nn.Module:
    torch.manual_seed(seed)
    return sp.convert(Transformer(), method, **options)


def batches(steps: int, shape: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The same global batches in every process (their own generator)."""
    g = torch.Generator().manual_seed(1234)
    return [(torch.randn(GLOBAL_BATCH, *shape, generator=g),
             torch.randint(0, 4, (GLOBAL_BATCH,), generator=g)) for _ in range(steps)]


def record_masks(model: nn.Module) -> list[dict[str, torch.Tensor]]:
    """Per forward, each masked layer's sampled mask (``log[step][name]``), recomputed from the
    scores it saw and the pair it drew (so it is the mask the fused op used, bit for bit)."""
    log: list[dict[str, torch.Tensor]] = []
    for name, layer in sp.masked_layers(model):
        draw = layer.next_rng

        def next_rng(layer=layer, name=name, draw=draw):
            pair = draw()
            mask = sampled_mask(layer, pair)
            if not log or name in log[-1]:
                log.append({})
            log[-1][name] = mask
            return pair
        layer.next_rng = next_rng
    return log


def sampled_mask(layer: nn.Module, pair: torch.Tensor) -> torch.Tensor:
    """The mask an ASLP layer (unstructured, or learned N:M logits) samples from ``pair``."""
    scores = layer.scores.detach().float().cpu()
    pattern = getattr(layer.method, "pattern_name", None)
    if pattern is None:
        return SF.masked_weight(torch.ones(scores.shape), scores, method="aslp", rng=pair) != 0
    ones = torch.ones(layer.method.logical(layer, layer.weight).shape)
    return SF.masked_weight(ones, scores, method="nm_gumbel", pattern=pattern,
                            schedule=layer.method.schedule, hard=layer.method.hard,
                            rng=pair) != 0


def optimizer(model: nn.Module, lr: float = 0.5) -> torch.optim.Optimizer:
    return torch.optim.SGD(sp.param_groups(model, lr=lr, lrs={"weights": 0.05}), momentum=0.9)


def train(model: nn.Module, steps: int, shape: tuple[int, ...], rank: int = 0, world: int = 1,
          *, opt: torch.optim.Optimizer | None = None, wrapped: nn.Module | None = None,
          start: int = 0):
    """SGD on this rank's slice of global batches ``start`` to ``start + steps``; returns (masks
    per step, losses)."""
    log = record_masks(model)
    opt = opt or optimizer(model)
    per_rank = GLOBAL_BATCH // world
    losses = []
    for x, y in batches(start + steps, shape)[start:]:
        x, y = x[rank * per_rank:(rank + 1) * per_rank], y[rank * per_rank:(rank + 1) * per_rank]
        loss = F.cross_entropy((wrapped or model)(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return log, losses
