"""Time one training step of a masked model three ways: sparseprune's fused kernels, the seed
paper's code path (``F.gumbel_softmax`` per layer, :func:`sparseprune.reference.seed_paper_copy`)
and the same network dense with trainable weights."""

from __future__ import annotations

import copy
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import sparseprune as sp
from sparseprune import reference

FUSED, PAPER, DENSE = "fused (sparseprune)", "seed paper (F.gumbel_softmax)", "dense (trainable weights)"


def _step(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor) -> Callable[[], None]:
    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return step


def step_times(model: nn.Module, dense: nn.Module, x: Tensor, y: Tensor, *,
               lrs: dict[str, float], repeats: int = 20, warmup: int = 3) -> dict[str, float]:
    """Median seconds per training step (forward, backward, SGD step) on the batch ``(x, y)``.

    ``model`` has masked layers (it is copied, not changed); ``dense`` is the same architecture
    with plain layers. ``lrs`` gives the learning rate per mask group (``scores``, ``scale``). The
    three are timed in turns, one step each per round, so load from other processes affects them
    alike.
    """
    fused = copy.deepcopy(model).train()
    groups = sp.mask_parameters(fused)
    fused_opt = torch.optim.SGD([{"params": ps, "lr": lrs.get(n, 0.1)} for n, ps in groups.items()],
                                momentum=0.9)
    paper = reference.seed_paper_copy(model).train()
    layers = [m for m in paper.modules() if isinstance(m, reference.SeedPaperLayer)]
    paper_groups = {"scores": [m.scores for m in layers],
                    "scale": [m.scale for m in layers if m.scale is not None]}
    paper_opt = torch.optim.SGD([{"params": ps, "lr": lrs.get(n, 0.1)}
                                 for n, ps in paper_groups.items() if ps], momentum=0.9)
    dense = copy.deepcopy(dense).train().requires_grad_(True)
    dense_opt = torch.optim.SGD(dense.parameters(), lr=0.01, momentum=0.9)
    steps = {FUSED: _step(fused, fused_opt, x, y), PAPER: _step(paper, paper_opt, x, y),
             DENSE: _step(dense, dense_opt, x, y)}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_ in range(repeats + warmup):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def timing_table(times: dict[str, float], batch_size: int) -> str:
    """Milliseconds per step and the ratio to the fused kernels."""
    fused = times[FUSED]
    width = max(map(len, times))
    lines = [f"{f'training step (batch {batch_size})':<{width}}  {'median ms':>9}  {'x fused':>7}"]
    lines += [f"{name:<{width}}  {t * 1e3:9.2f}  {t / fused:7.2f}" for name, t in times.items()]
    return "\n".join(lines)
