"""BudgetLoss equals its formula (global, local, per-layer floor), reuses the forward's sums only
while they are current, drives training to the target; finalize then meets it exactly."""

import copy

import pytest
import torch
from torch import nn

import sparseprune as sp
from sparseprune import reference
from sparseprune.training.budget import BudgetLoss, final_densities


def mlp():
    return nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 10), nn.ReLU(),
                         nn.Linear(10, 4))


def reparam_masses(model):
    return [reference.reparam_h(layer.weight, layer.t, layer.method.power).sum()
            for _, layer in sp.masked_layers(model)]


def numels(model):
    return [layer.weight.numel() for _, layer in sp.masked_layers(model)]


def test_global_formula_and_fixed_initial_cost():
    model = sp.convert(mlp(), "reparam", t_init=10.0)
    budget = BudgetLoss(model, 0.25)
    c0 = sum(m.item() for m in reparam_masses(model))
    with torch.no_grad():
        for _, layer in sp.masked_layers(model):
            layer.weight.mul_(0.5)
    c = sum(m.item() for m in reparam_masses(model))
    expected = ((c - 0.25 * sum(numels(model))) / c0) ** 2
    assert budget().item() == pytest.approx(expected, rel=1e-5)
    assert budget.initial.sum().item() == pytest.approx(c0, rel=1e-5)
    budget.reset()
    assert budget.initial.sum().item() == pytest.approx(c, rel=1e-5)


def test_local_formula_with_floor_on_aslp_layers():
    model = sp.convert(mlp(), "aslp")
    layers = sp.masked_layers(model)
    with torch.no_grad():
        for i, (_, layer) in enumerate(layers):
            layer.scores.normal_(0.5 * i, 1.0)
    budget = BudgetLoss(model, 0.4, scope="local", min_layer_density=0.3, strength=2.0)
    c0 = [torch.sigmoid(layer.scores).sum().item() for _, layer in layers]
    with torch.no_grad():
        layers[0][1].scores.fill_(-3.0)  # layer 0 falls below the floor
    c = [torch.sigmoid(layer.scores).sum().item() for _, layer in layers]
    n = numels(model)
    term = sum(((ci - 0.4 * ni) / c0i) ** 2 for ci, ni, c0i in zip(c, n, c0)) / len(n)
    hinge = sum((max(0.0, 0.3 * ni - ci) / c0i) ** 2 for ci, ni, c0i in zip(c, n, c0)) / len(n)
    assert hinge > 0
    assert budget().item() == pytest.approx(2.0 * (term + hinge), rel=1e-5)
    budget().backward()
    assert all(layer.scores.grad is not None for _, layer in layers)


def test_gradients_reach_weights_and_t_and_match_the_reference():
    model = sp.convert(mlp(), "reparam", t_init=10.0)
    budget = BudgetLoss(model, 0.5)
    model(torch.randn(3, 20))  # the forward's sums are reused
    loss = budget()
    params = [p for _, layer in sp.masked_layers(model) for p in (layer.weight, layer.t)]
    got = torch.autograd.grad(loss, params)
    c = torch.stack(reparam_masses(model)).sum()
    c0 = budget.initial.sum().item()
    ref = ((c - 0.5 * sum(numels(model))) / c0) ** 2
    want = torch.autograd.grad(ref, params)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_sums_are_reused_only_while_current():
    model = sp.convert(mlp(), "reparam", t_init=10.0)
    layer = sp.masked_layers(model)[0][1]
    model(torch.randn(2, 20))
    cached = layer.method.budget_mass(layer)
    assert cached is layer.method.budget_mass(layer)
    with torch.no_grad():
        layer.weight.mul_(2.0)  # an optimizer step
    fresh = layer.method.budget_mass(layer)
    assert fresh is not cached
    torch.testing.assert_close(fresh, reparam_masses(model)[0].detach().float(), rtol=1e-5,
                               atol=1e-4)


@pytest.mark.parametrize("method,options", [("reparam", {"t_init": 30.0}),
                                            ("supermask", {"train_weights": True})])
def test_training_meets_the_target_and_finalize_lands_exactly(method, options):
    torch.manual_seed(0)
    model = sp.convert(mlp(), method, **options)
    budget = BudgetLoss(model, 0.3)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x = torch.randn(64, 20)
    y = torch.randint(0, 4, (64,))
    for _ in range(150):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y) + 5.0 * budget()
        loss.backward()
        opt.step()
    assert budget.expected_density() == pytest.approx(0.3, abs=0.03)
    dens = final_densities(model, 0.3)
    total = sum(numels(model))
    assert dens["exact"] == round(0.3 * total) / total
    final = sp.finalize(copy.deepcopy(model), density=0.3)
    assert sp.sparsity_report(final).kept == round(0.3 * total)


@pytest.mark.parametrize("kwargs,error,pattern", [
    (dict(density=0.0), ValueError, r"density must be a number in \(0, 1\], got 0.0"),
    (dict(density=1.5), ValueError, r"density must be a number in \(0, 1\], got 1.5"),
    (dict(density=0.5, scope="layer"), ValueError, "scope must be one of .* got 'layer'"),
    (dict(density=0.5, min_layer_density=-0.1), ValueError,
     r"min_layer_density must be a number in \[0, 1\], got -0.1"),
    (dict(density=0.5, min_layer_density=2), ValueError, r"min_layer_density must be a number in \[0, 1\], got 2"),
    (dict(density=0.5, strength=-1.0), ValueError, "strength must be a finite number >= 0, got -1.0"),
])
def test_bad_arguments(kwargs, error, pattern):
    model = sp.convert(mlp(), "reparam")
    with pytest.raises(error, match=pattern):
        BudgetLoss(model, **kwargs)


def test_rejects_models_without_learned_density():
    with pytest.raises(ValueError, match="no masked layers"):
        BudgetLoss(mlp(), 0.5)
    with pytest.raises(TypeError, match="'edge_popup', whose density is not learned"):
        BudgetLoss(sp.convert(mlp(), "edge_popup"), 0.5)
