"""Sampled quantities against their distributions, with bounds derived from the sample size."""

import math

import pytest
import torch
import torch.nn.functional as tF

from sparseprune import functional as F

# Bounds are 5 standard errors: a correct sampler fails one of them with probability < 1e-6.
Z = 5.0


@pytest.mark.parametrize("logit", [-3.0, -1.0, 0.0, 0.5, 2.0, 4.0])
def test_keep_rate_is_sigmoid_of_scores(isa, logit):
    n = 400_000
    kept = F.aslp_weight(torch.ones(n), torch.full((n,), logit)) != 0
    p = 1 / (1 + math.exp(-logit))
    assert abs(kept.double().mean().item() - p) < Z * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_keep_rate_with_low_precision_scores(dtype):
    n = 400_000
    scores = torch.full((n,), 1.25, dtype=dtype)  # exactly representable
    kept = F.aslp_weight(torch.ones(n), scores) != 0
    p = 1 / (1 + math.exp(-1.25))
    assert abs(kept.double().mean().item() - p) < Z * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("logit,temperature", [(0.0, 1.0), (1.5, 1.0), (-2.0, 0.5), (0.7, 2.0)])
def test_mean_gradient_matches_torch_gumbel_softmax(logit, temperature):
    # The straight-through gradient d(sum z)/d(scores) per element, averaged over n independent
    # noise draws, for ours and for F.gumbel_softmax(hard=True) on the stacked logits (scores, 0).
    n = 400_000
    scores = torch.full((n,), logit, requires_grad=True)
    F.aslp_weight(torch.ones(n), scores, temperature=temperature).sum().backward()
    ours = scores.grad.double()

    theirs_scores = torch.full((n,), logit, requires_grad=True)
    logits = torch.stack((theirs_scores, torch.zeros(n)))
    tF.gumbel_softmax(logits, tau=temperature, hard=True, dim=0)[0].sum().backward()
    theirs = theirs_scores.grad.double()

    standard_error = math.sqrt(ours.var().item() / n + theirs.var().item() / n)
    assert abs(ours.mean().item() - theirs.mean().item()) < Z * standard_error
    assert ours.var().item() == pytest.approx(theirs.var().item(), rel=0.05)


def test_smart_rescale_gradient_is_sum_over_kept_weights():
    weight = torch.randn(300, 200)
    scale = torch.tensor([2.0], requires_grad=True)
    out = F.aslp_weight(weight, torch.randn(300, 200), scale)
    grad = torch.randn(300, 200)
    out.backward(grad)
    kept = out != 0
    expected = (grad.double() * weight.double() * kept).sum()
    assert scale.grad.item() == pytest.approx(expected.item(), rel=1e-5)
