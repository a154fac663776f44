"""Hard-concrete (L0) gates: the sample's range and distribution (shares of exact zeros and ones,
CDF in between, with bounds from the sample size), the reference stream, the pathwise gradient,
the penalty's closed form, the deterministic test-time gate, gate structures, bad input."""

import copy
import math

import pytest
import torch
from torch import nn

import sparseprune as sp
from sparseprune import functional as F
from sparseprune import reference
from sparseprune.training.budget import BudgetLoss, l0_penalty
from sparseprune.methods.hard_concrete import constrain_

BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1


def cdf(x: float, log_alpha: float) -> float:
    """P(z <= x) for 0 <= x < 1 (x = 0 gives the share of exact zeros)."""
    c = (x - GAMMA) / (ZETA - GAMMA)
    return 1.0 / (1.0 + math.exp(-(BETA * math.log(c / (1 - c)) - log_alpha)))


@pytest.mark.parametrize("log_alpha", [-2.0, 0.0, 1.5])
def test_sample_distribution(isa, log_alpha):
    n = 200_000
    z = F.hard_concrete_sample(torch.full((n,), log_alpha),
                               generator=torch.Generator().manual_seed(7))
    assert z.min() >= 0 and z.max() <= 1
    # Binomial shares: 5 standard deviations of n draws (the 2^-23 uniform grid is far below).
    def bound(p):
        return 5 * math.sqrt(p * (1 - p) / n) + 1e-6
    p0 = cdf(0.0, log_alpha)
    p1 = 1 - 1.0 / (1.0 + math.exp(-(BETA * math.log((1 - GAMMA) / (ZETA - 1)) - log_alpha)))
    assert abs((z == 0).double().mean().item() - p0) < bound(p0)
    assert abs((z == 1).double().mean().item() - p1) < bound(p1)
    for x in (0.25, 0.5, 0.75):
        p = cdf(x, log_alpha)
        assert abs((z <= x).double().mean().item() - p) < bound(p)
    # The penalty's P(z != 0) is the complement of the zeros' share.
    prob = F.hard_concrete_nonzero_probability(torch.tensor(log_alpha, dtype=torch.float64))
    assert prob.item() == pytest.approx(1 - p0, rel=1e-12)


def test_matches_reference_stream_and_seed():
    log_alpha = torch.randn(37, 211, dtype=torch.float64)
    a = F.hard_concrete_sample(log_alpha, generator=torch.Generator().manual_seed(3))
    b = reference.hard_concrete_sample(log_alpha, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    torch.manual_seed(11)
    c = F.hard_concrete_sample(log_alpha)
    torch.manual_seed(11)
    assert torch.equal(c, F.hard_concrete_sample(log_alpha))
    assert not torch.equal(c, F.hard_concrete_sample(log_alpha))


def test_pathwise_gradient():
    log_alpha = torch.randn(500, dtype=torch.float64, requires_grad=True)
    gen = torch.Generator().manual_seed(5)
    z = F.hard_concrete_sample(log_alpha, generator=gen)
    (grad,) = torch.autograd.grad(z.sum(), log_alpha)
    noise = reference.logistic_noise(500, *sp.rng.seed_offset(
        sp.rng.next_rng(torch.Generator().manual_seed(5))))
    s = torch.sigmoid((noise + log_alpha.detach()) / BETA)
    inside = (z > 0) & (z < 1)
    want = torch.where(inside, (ZETA - GAMMA) * s * (1 - s) / BETA, torch.zeros_like(s))
    torch.testing.assert_close(grad, want, rtol=1e-5, atol=1e-6)
    assert (grad[~inside] == 0).all() and inside.any() and (~inside).any()


def test_test_time_gate():
    log_alpha = torch.linspace(-6, 6, 101, dtype=torch.float64)
    z = F.hard_concrete_gate(log_alpha)
    torch.testing.assert_close(z, torch.clamp(torch.sigmoid(log_alpha) * 1.2 - 0.1, 0, 1))
    assert torch.equal(z == 0, torch.sigmoid(log_alpha) <= 1 / 12)


def test_weight_structure_layer_and_finalize():
    torch.manual_seed(0)
    model = sp.convert(nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3)),
                       "hard_concrete")
    layers = sp.masked_layers(model)
    for _, layer in layers:
        assert layer.log_alpha.shape == layer.weight.shape
        assert abs(layer.log_alpha.mean().item()) < 0.01  # droprate 1/2: N(0, 0.01^2)
        with torch.no_grad():
            layer.log_alpha.normal_(0.0, 3.0)
    x = torch.randn(4, 12)
    model.train()
    out = model(x)
    out.sum().backward()
    assert all(layer.log_alpha.grad is not None and layer.weight.grad is not None
               for _, layer in layers)
    model.eval()
    first = layers[0][1]
    z_hat = F.hard_concrete_gate(first.log_alpha)
    torch.testing.assert_close(first(x), nn.functional.linear(x, first.weight * z_hat, first.bias))
    expected_out = model(x)
    kept = sum(int((F.hard_concrete_gate(layer.log_alpha) > 0).sum()) for _, layer in layers)
    assert sp.sparsity_report(model).kept == kept
    final = sp.finalize(copy.deepcopy(model))
    torch.testing.assert_close(final(x), expected_out)


def test_unit_structure():
    torch.manual_seed(0)
    model = sp.convert(nn.Sequential(nn.Conv2d(3, 6, 3), nn.Flatten(), nn.Linear(6 * 4 * 4, 5)),
                       "hard_concrete", structure="unit")
    conv, lin = (layer for _, layer in sp.masked_layers(model))
    assert conv.log_alpha.shape == (6, 1, 1, 1) and lin.log_alpha.shape == (1, 96)
    with torch.no_grad():
        conv.log_alpha.copy_(torch.tensor([-5.0, 5, -5, 5, 5, 5]).view(6, 1, 1, 1))
        lin.log_alpha.normal_(0, 3)
    final = sp.finalize(copy.deepcopy(model))
    w = final[0].weight
    assert (w[[0, 2]] == 0).all() and (w[[1, 3, 4, 5]] != 0).all()  # whole output maps
    lw = final[2].weight
    dead = F.hard_concrete_gate(lin.log_alpha)[0] == 0
    assert (lw[:, dead] == 0).all() and (lw[:, ~dead] != 0).all()  # whole input units
    # Expected kept weights: P(z != 0) times the weights per gate.
    mass = conv.method.budget_mass(conv)
    want = F.hard_concrete_nonzero_probability(conv.log_alpha).sum() * 27
    torch.testing.assert_close(mass, want)


def test_l0_penalty_closed_form_and_budget():
    torch.manual_seed(0)
    model = sp.convert(nn.Sequential(nn.Linear(10, 6), nn.ReLU(), nn.Conv2d(6, 4, 1)),
                       "hard_concrete", include="0")
    sp.convert(model, "hard_concrete", structure="unit", include="2")
    lin, conv = (layer for _, layer in sp.masked_layers(model))
    shift = BETA * math.log(-GAMMA / ZETA)
    p_lin = torch.sigmoid(lin.log_alpha - shift)
    p_conv = torch.sigmoid(conv.log_alpha - shift).flatten()
    assert l0_penalty(model).item() == pytest.approx((p_lin.sum() + p_conv.sum()).item(), rel=1e-6)
    wd = 0.3
    norms = conv.weight.square().sum(dim=(1, 2, 3))
    want = (p_lin * (1 + 0.5 * wd * lin.weight.square())).sum() + \
        (p_conv * (1 + 0.5 * wd * norms)).sum()
    assert l0_penalty(model, weight_decay=wd).item() == pytest.approx(want.item(), rel=1e-6)
    budget = BudgetLoss(model, 0.5)
    c = p_lin.sum() + p_conv.sum() * 6
    assert budget().item() == pytest.approx((((c - 0.5 * 84) / c) ** 2).item(), abs=1e-7)
    with torch.no_grad():
        lin.log_alpha.fill_(10.0)
    constrain_(model)
    assert lin.log_alpha.max().item() == pytest.approx(math.log(100.0))


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(structure="row"), "structure must be one of .* got 'row'"),
    (dict(droprate_init=0.0), r"droprate_init must be a number in \(0, 1\), got 0.0"),
    (dict(droprate_init=1.0), r"droprate_init must be a number in \(0, 1\), got 1.0"),
    (dict(beta=0.0), "beta must be a finite number > 0, got 0.0"),
    (dict(gamma=0.1), "gamma must be < 0 .* got 0.1"),
    (dict(zeta=1.0), "zeta must be > 1 .* got 1.0"),
])
def test_bad_options(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        sp.convert(nn.Linear(3, 2), "hard_concrete", **kwargs)


def test_bad_functional_input():
    with pytest.raises(TypeError, match="log_alpha must be a Tensor, got float"):
        F.hard_concrete_sample(1.0)
    with pytest.raises(ValueError, match="no hard_concrete layers"):
        l0_penalty(nn.Linear(2, 2))
