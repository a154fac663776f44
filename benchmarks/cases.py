"""The workloads the benchmarks time. Each builder checks correctness first (fused vs reference on
the same draw where both exist), then returns a zero-argument callable that runs one iteration.

  mask_fused / mask_reference   a mask's forward + backward on one weight (T1, T2, T4, T5)
  topk_selection / topk_fused / topk_kthvalue   Edge-Popup's per-layer selection (T6)
  conv_step                     a Conv2/4/6 training step: dense, fused or reference (T3)
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

import sparseprune as sp
from sparseprune import ops, reference
from sparseprune.runner.models import build_model
from sparseprune.ops.rng import rng_state


# (method, rescale, density) of the mask configurations the overhead suite times.
MASKS = {
    "ASLP": ("aslp", "none", 1.0),
    "ASLP+SR": ("aslp", "smart", 1.0),
    "ASLP+DWR": ("aslp", "dwr", 1.0),
    "Supermask": ("supermask", "none", 1.0),
    "Supermask+DWR": ("supermask", "dwr", 1.0),
    "Edge-Popup": ("edge_popup", "none", 0.5),
}


def mask_fused(shape: tuple[int, ...], name: str = "ASLP") -> Callable[[], None]:
    """Fused mask forward + backward: the masked weight, then the score (and scale) gradients."""
    method, rescale, density = MASKS[name]
    weight, scores, grad = torch.randn(shape), torch.randn(shape), torch.randn(shape)
    scale = torch.ones(1) if rescale == "smart" else None
    rng = rng_state(1, 2)
    if method == "aslp":
        _check_mask(weight, scores, rng)
    need = [False, True, scale is not None]

    def step():
        ops.masked_weight(weight, scores, scale, method, rescale, 1.0, density, rng)
        torch.ops.sparseprune.masked_weight_backward(grad, weight, scores, scale, method, rescale,
                                                     1.0, density, rng, need)
    return step


def _check_mask(weight, scores, rng):
    # Same draw, same masks as the pure-PyTorch reference (up to boundary rounding).
    n = min(weight.numel(), 1 << 16)
    w, s = weight.reshape(-1)[:n], scores.reshape(-1)[:n]
    fused = ops.aslp_weight(w, s, None, 1.0, rng) != 0
    expect = (s.double() + reference.logistic_noise(n, 1, 2)) > 0
    assert (fused != expect).float().mean() < 1e-4, "fused masks disagree with the reference"


def mask_reference(shape: tuple[int, ...], name: str = "ASLP") -> Callable[[], None]:
    """The seed papers' code paths (reference.py), forward + autograd backward."""
    method, rescale, density = MASKS[name]
    weight, grad = torch.randn(shape), torch.randn(shape)
    scores = torch.randn(shape, requires_grad=True)
    scale = torch.ones(1, requires_grad=True) if rescale == "smart" else None
    if method == "aslp" and rescale != "dwr":
        def forward():
            return reference.gumbel_softmax_weight(weight, scores, scale)
    elif method == "supermask" and rescale != "smart":
        def forward():
            return reference.bernoulli_dwr_weight(weight, scores, dwr=rescale == "dwr")
    elif method == "edge_popup":
        def forward():
            return reference.kthvalue_weight(weight, scores, density=density)
    else:
        raise ValueError(f"no seed-paper code path for {name}")

    def step():
        forward().backward(grad)
        scores.grad = None
    return step


def topk_fused(shape: tuple[int, ...], density: float = 0.5) -> Callable[[], None]:
    """Edge-Popup's fused forward: the per-layer top-k selection and the masked weight."""
    weight, scores = torch.randn(shape), torch.randn(shape)
    return lambda: ops.masked_weight(weight, scores, None, "edge_popup", "none", 1.0, density,
                                     rng_state(0, 0))


def topk_selection(shape: tuple[int, ...], density: float = 0.5) -> Callable[[], None]:
    """Edge-Popup's selection alone: the top-k threshold of |scores| (checked against kthvalue)."""
    scores = torch.randn(shape)
    k = round(density * scores.numel())
    got = torch.ops.sparseprune.topk_threshold(scores, density)
    assert got.item() == scores.abs().flatten().kthvalue(scores.numel() - k + 1).values.item()
    return lambda: torch.ops.sparseprune.topk_threshold(scores, density)


def topk_kthvalue(shape: tuple[int, ...], density: float = 0.5) -> Callable[[], None]:
    """The reference selection alone: torch.kthvalue of |scores|."""
    scores = torch.randn(shape)
    pruned = scores.numel() - round(density * scores.numel())
    return lambda: torch.kthvalue(scores.abs().flatten(), pruned)


def conv_step(kind: str, net: str = "conv4", batch: int = 64) -> Callable[[], None]:
    """One training step (forward, backward, SGD step) of a Conv2/4/6 on a 32x32x3 batch.

    kind: "dense" (plain layers, weights trained), "fused" (sparseprune ASLP layers, scores
    trained), "reference" (the seed paper's ASLP code, scores trained), or one of the MASKS
    names, fused ("ASLP+SR", "Supermask+DWR", ...).
    """
    torch.manual_seed(0)
    model = build_model(net, (3, 32, 32), 10)
    if kind == "fused":
        sp.convert(model, "aslp")
    elif kind == "reference":
        model = reference.seed_paper_copy(model)
    elif kind in MASKS:
        method, rescale, density = MASKS[kind]
        options = {"density": density} if method == "edge_popup" else \
            {"rescale": None if rescale == "none" else rescale}
        sp.convert(model, method, **options)
    elif kind != "dense":
        raise ValueError(f"kind must be dense, fused, reference or one of {list(MASKS)}, "
                         f"got {kind!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return step


def reparam(shape: tuple[int, ...], kind: str = "fused") -> Callable[[], None]:
    """Budget-aware reparametrisation forward (w_hat and the sum of h) + backward (weight and t
    gradients): the fused op, or autograd over the pure-PyTorch reference."""
    fn = sp.functional.reparam_weight if kind == "fused" else reference.reparam_weight
    weight = (torch.randn(shape) * 0.05).requires_grad_()
    t = torch.tensor([30.0], requires_grad=True)
    grad = torch.randn(shape)
    got = sp.functional.reparam_weight(weight, t)
    torch.testing.assert_close(got, reference.reparam_weight(weight, t), rtol=1e-5, atol=1e-6)

    def run():
        w_hat, h_sum = fn(weight, t, return_sum=True)
        torch.autograd.backward([w_hat, h_sum], [grad, torch.ones_like(h_sum)])

    return run
