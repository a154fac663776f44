"""The workloads the benchmarks time. Each builder checks correctness first (fused vs reference on
the same draw where both exist), then returns a zero-argument callable that runs one iteration.

  mask_fused / mask_reference   ASLP mask forward + backward on one weight (T1, T2)
  conv4_step                    a Conv4 training step: dense, fused ASLP or reference ASLP (T3)
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

import sparseprune as sp
from sparseprune import ops, reference
from sparseprune.models import build_model
from sparseprune.rng import rng_state


def mask_fused(shape: tuple[int, ...]) -> Callable[[], None]:
    """Fused ASLP mask forward + backward: the masked weight, then the score gradient."""
    weight, scores, grad = torch.randn(shape), torch.randn(shape), torch.randn(shape)
    rng = rng_state(1, 2)
    _check_mask(weight, scores, rng)

    def step():
        ops.aslp_weight(weight, scores, None, 1.0, rng)
        torch.ops.sparseprune.aslp_weight_backward(grad, weight, scores, None, 1.0, rng,
                                                   [False, True, False])
    return step


def _check_mask(weight, scores, rng):
    # Same draw, same masks as the pure-PyTorch reference (up to boundary rounding).
    n = min(weight.numel(), 1 << 16)
    w, s = weight.reshape(-1)[:n], scores.reshape(-1)[:n]
    fused = ops.aslp_weight(w, s, None, 1.0, rng) != 0
    expect = (s.double() + reference.logistic_noise(n, 1, 2)) > 0
    assert (fused != expect).float().mean() < 1e-4, "fused masks disagree with the reference"


def mask_reference(shape: tuple[int, ...]) -> Callable[[], None]:
    """The seed paper's code path: F.gumbel_softmax on stacked logits, autograd backward."""
    weight, grad = torch.randn(shape), torch.randn(shape)
    scores = torch.randn(shape, requires_grad=True)

    def step():
        out = reference.gumbel_softmax_weight(weight, scores)
        out.backward(grad)
        scores.grad = None
    return step


def conv4_step(kind: str, batch: int = 64) -> Callable[[], None]:
    """One training step (forward, backward, SGD step) of Conv4 on a 32x32x3 batch.

    kind: "dense" (plain layers, weights trained), "fused" (sparseprune ASLP layers, scores
    trained) or "reference" (the seed paper's mask code, scores trained).
    """
    torch.manual_seed(0)
    model = build_model("conv4", (3, 32, 32), 10)
    if kind == "fused":
        sp.convert(model, "aslp")
    elif kind == "reference":
        model = reference.seed_paper_copy(model)
    elif kind != "dense":
        raise ValueError(f"kind must be dense, fused or reference, got {kind!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return step
