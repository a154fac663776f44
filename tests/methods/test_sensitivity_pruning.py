"""Sensitivity-driven regularisation: thresholding (threshold_), the LOBSTER threshold search,
the plateau detector, and a short training run."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparseprune as sp
from sparseprune import sensitivity as sens
from sparseprune.runner.data import synthetic_dataset
from sparseprune.nn import MaskedLinear

from helpers import sensitivity_batch, sensitivity_net, small_sensitivity_base as small_net


def val_loss_fn(x, y):
    def evaluate(model):
        with torch.no_grad():
            return F.cross_entropy(model(x), y).item()
    return evaluate


def test_threshold_prunes_exactly_below_and_never_revives():
    layer = MaskedLinear(4, 2, method="sensitivity")
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.1, -0.3, 0.5, -0.05], [0.3, 0.29, -0.7, 0.0]]))
    layer.weight.grad = torch.ones_like(layer.weight)
    assert sens.threshold_(layer, 0.3) == {"": 4}  # |w| < 0.3; 0.3 and -0.3 stay
    assert layer.mask.tolist() == [[False, True, True, False], [True, False, True, False]]
    assert (layer.weight[~layer.mask] == 0).all() and (layer.weight.grad[~layer.mask] == 0).all()
    assert torch.equal(layer.weight[layer.mask], torch.tensor([-0.3, 0.5, 0.3, -0.7]))
    with torch.no_grad():
        layer.weight.fill_(2.0)  # pruned entries moved: a threshold never brings them back
    assert sens.threshold_(layer, 0.0) == {"": 0}
    assert layer.mask.sum() == 4 and (layer.weight[~layer.mask] == 0).all()


@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3),
    lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-3)], ids=["sgd", "adam"])
def test_pruned_weights_stay_zero_through_optimizer_and_decay_steps(make_opt):
    model = sensitivity_net(strength=1e-2, density=1.0)
    opt = make_opt(model.parameters())

    def step():
        x, y = sensitivity_batch()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(3):  # momentum / moments build up on every weight
        step()
        sens.sensitivity_step(model, *sensitivity_batch())
    median = float(model[3].weight.detach().abs().median())
    pruned = sens.threshold_(model, median, optimizer=opt)
    assert pruned["3"] > 0
    masks = {n: l.mask.clone() for n, l in sp.masked_layers(model)}
    for _ in range(3):
        step()  # the optimizer state of pruned weights was cleared: they stay 0
        assert all((l.weight[~masks[n]] == 0).all() for n, l in sp.masked_layers(model))
        sens.sensitivity_step(model, *sensitivity_batch())
        assert all((l.weight[~masks[n]] == 0).all() for n, l in sp.masked_layers(model))
    assert all(torch.equal(l.mask, masks[n]) for n, l in sp.masked_layers(model))


def test_search_threshold_finds_the_bisection_edge_and_restores_the_model():
    model = sensitivity_net(density=0.9)
    with torch.no_grad():  # a confident model scored on its own predictions: pruning costs loss
        model[3].weight.mul_(4)
        x = sensitivity_batch(64)[0]
        evaluate = val_loss_fn(x, model(x).argmax(1))
    model[0].weight.grad = torch.randn_like(model[0].weight)
    grad = model[0].weight.grad.clone()
    state = copy.deepcopy(model.state_dict())
    calls = []

    def counted(m):
        calls.append(1)
        return evaluate(m)

    base, iterations = evaluate(model), 10
    t = sens.search_threshold(model, counted, tolerance=0.05, iterations=iterations)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert torch.equal(model[0].weight.grad, grad)
    assert len(calls) <= iterations + 2  # base, max |w|, bisection; repeats come from a cache
    top = max(float(l.weight.detach().abs()[l.mask].max()) for _, l in sp.masked_layers(model))
    assert 0 < t < top

    def loss_after(threshold):
        trial = copy.deepcopy(model)
        sens.threshold_(trial, threshold)
        return evaluate(trial)

    assert loss_after(t) <= 1.05 * base
    assert loss_after(t + top / 2 ** iterations) > 1.05 * base
    sens.threshold_(model, t)
    assert sp.sparsity_report(model).kept < sum(int(m.sum()) for m in
                                                 [state["0.mask"], state["3.mask"]])


def test_search_threshold_returns_max_when_everything_may_go():
    model = sensitivity_net()
    t = sens.search_threshold(model, lambda m: 1.0)
    assert t == max(float(l.weight.detach().abs()[l.mask].max()) for _, l in sp.masked_layers(model))


def test_plateau():
    plateau = sens.Plateau(patience=2)
    fired = [plateau.update(v) for v in [1.0, 0.9, 0.95, 0.9, 0.8, 0.85, 0.85, 5.0, 6.0, 7.0]]
    # 0.95 and 0.9 do not beat 0.9 -> fire; afresh: 0.8 best, 0.85, 0.85 -> fire; 5.0 best, ...
    assert fired == [False, False, False, True, False, False, True, False, False, True]


def test_state_dict_round_trip_and_finalize():
    model = sensitivity_net()
    sens.threshold_(model, 0.1)
    fresh = sp.convert(small_net(), "sensitivity", strength=1e-2)
    fresh.load_state_dict(model.state_dict())
    x = torch.randn(3, 1, 4, 4)
    assert all(torch.equal(fresh.get_submodule(n).mask, l.mask) for n, l in sp.masked_layers(model))
    torch.testing.assert_close(fresh(x), model(x))
    plain = sp.finalize(fresh)
    assert type(plain[3]) is nn.Linear
    torch.testing.assert_close(plain(x), model(x))


def test_density_decreases_on_a_tiny_training_run():
    torch.manual_seed(1)
    data = synthetic_dataset(256, 128, input_shape=(16,), num_classes=4)
    (x, y), (xv, yv) = data.train.tensors, data.val.tensors
    model = sp.convert(nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)),
                       "sensitivity", strength=0.05)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    evaluate = val_loss_fn(xv, yv)
    densities = []
    for epoch in range(4):
        for i in range(0, 256, 32):
            opt.zero_grad()
            F.cross_entropy(model(x[i:i + 32]), y[i:i + 32]).backward()
            opt.step()
            sens.sensitivity_step(model, x[i:i + 32], y[i:i + 32])
        sens.threshold_(model, sens.search_threshold(model, evaluate, tolerance=0.05),
                        optimizer=opt)
        densities.append(sp.sparsity_report(model).density)
    assert densities == sorted(densities, reverse=True) and densities[-1] < 0.9



def test_bad_input_names_the_argument():
    model = sensitivity_net()
    for bad, error in [(-0.1, ValueError), (float("nan"), ValueError), ("0.1", TypeError)]:
        with pytest.raises(error, match="threshold must be a"):
            sens.threshold_(model, bad)
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer"):
        sens.threshold_(model, 0.1, optimizer="sgd")
    evaluate = val_loss_fn(*sensitivity_batch())
    with pytest.raises(ValueError, match="tolerance must be a finite number >= 0, got -0.5"):
        sens.search_threshold(model, evaluate, tolerance=-0.5)
    with pytest.raises(ValueError, match="iterations must be an int >= 1, got 0"):
        sens.search_threshold(model, evaluate, iterations=0)
    with pytest.raises(ValueError, match="evaluate.model. must return a finite loss >= 0"):
        sens.search_threshold(model, lambda m: float("nan"))
    with pytest.raises(TypeError, match="evaluate must be a callable"):
        sens.search_threshold(model, 0.3)
    with pytest.raises(ValueError, match="patience must be an int >= 1, got 0"):
        sens.Plateau(0)
