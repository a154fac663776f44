"""The workloads the benchmarks time. Each builder checks correctness first (fused vs reference on
the same draw where both exist), then returns a zero-argument callable that runs one iteration.

  mask_fused / mask_reference   ASLP mask forward + backward on one weight (T1, T2)
  conv4_step                    a Conv4 training step: dense, fused ASLP or reference ASLP (T3)
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

import sparseprune as sp
from sparseprune import ops, reference
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


class Conv4(nn.Module):
    """Conv4 of the Supermask / Edge-Popup / ASLP papers for 32x32x3 inputs."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.Conv2d(128, 128, 3, padding=1),
            nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(128 * 8 * 8, 256), nn.ReLU(),
                                        nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


class ReferenceASLP(nn.Module):
    """A layer masked by the seed paper's code path (reference.gumbel_softmax_weight)."""

    def __init__(self, dense: nn.Module):
        super().__init__()
        self.dense = dense
        dense.weight.requires_grad_(False)
        if dense.bias is not None:
            dense.bias.requires_grad_(False)
        self.scores = nn.Parameter(torch.zeros_like(dense.weight))

    def forward(self, x):
        weight = reference.gumbel_softmax_weight(self.dense.weight, self.scores)
        if isinstance(self.dense, nn.Linear):
            return F.linear(x, weight, self.dense.bias)
        return self.dense._conv_forward(x, weight, self.dense.bias)


def _reference_aslp(model: nn.Module) -> nn.Module:
    for name, module in list(model.named_modules()):
        if type(module) in (nn.Linear, nn.Conv2d):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, ReferenceASLP(module))
    return model


def conv4_step(kind: str, batch: int = 64) -> Callable[[], None]:
    """One training step (forward, backward, SGD step) of Conv4 on a 32x32x3 batch.

    kind: "dense" (plain layers, weights trained), "fused" (sparseprune ASLP layers, scores
    trained) or "reference" (the seed paper's mask code, scores trained).
    """
    torch.manual_seed(0)
    model = Conv4()
    if kind == "fused":
        sp.convert(model, "aslp")
    elif kind == "reference":
        _reference_aslp(model)
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
