"""Train-prune-retrain methods: "magnitude" (Han et al.) and "lottery" (IMP with rewinding),
driven by sparseprune.training.schedules."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparseprune as sp
from sparseprune.training.schedules import iterative_prune, prune_round, rounds_done


def mlp():
    return nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 25), nn.ReLU(),
                         nn.Linear(25, 10))


def convnet():
    return nn.Sequential(nn.Conv2d(2, 6, 3), nn.ReLU(), nn.Conv2d(6, 8, 3), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 5))


def data(model, n=32):
    shape = (n, 2, 8, 8) if isinstance(model[0], nn.Conv2d) else (n, 20)
    classes = model[-1].out_features
    return torch.randn(shape), torch.randint(0, classes, (n,))


def steps(model, optimizer, count=5):
    x, y = data(model)
    for _ in range(count):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def layers(model):
    return [layer for _, layer in sp.masked_layers(model)]


OPTIMIZERS = {
    "sgd_momentum_wd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-2),
    "sgd_nesterov": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True,
                                              weight_decay=1e-2),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=1e-1),
    "adam_l2": lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-2),
}


# ------------------------------------------------------------------------------------ magnitude

@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_magnitude_pruned_weights_stay_zero_through_optimizer(optimizer):
    """Momentum and weight decay built up before a round must not move pruned weights after it:
    prune_round clears the optimizer's state."""
    model = sp.convert(mlp(), "magnitude", quality=0.8, rounds=2)
    opt = OPTIMIZERS[optimizer](model.parameters())
    steps(model, opt)  # momentum / moments everywhere
    for _ in range(2):
        prune_round(model, opt)
        pruned = [~layer.mask.clone() for layer in layers(model)]
        assert all(p.any() for p in pruned)
        steps(model, opt, 10)
        for layer, p in zip(layers(model), pruned):
            assert torch.equal(layer.weight[p], torch.zeros_like(layer.weight[p]))
            assert not torch.equal(layer.weight[~p], layer.weight[~p] * 0)


def test_magnitude_quality_rule_per_layer():
    model = sp.convert(mlp(), "magnitude", quality=0.7, rounds=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for r in range(1, 4):
        before = [(layer.mask.clone(), layer.weight.detach().clone()) for layer in layers(model)]
        prune_round(model, opt)
        for layer, (alive, w) in zip(layers(model), before):
            threshold = 0.7 * w[alive].std()
            assert torch.equal(layer.mask, alive & (w.abs() >= threshold))
            assert not (layer.mask & ~alive).any()  # never revived
        assert rounds_done(model) == r
        steps(model, opt)


def test_magnitude_quality_default_is_one():
    method = sp.methods.create("magnitude")
    assert method.quality == 1.0 and method.density is None and method.rule == "quality"


@pytest.mark.parametrize("density, rounds", [(0.1, 1), (0.1, 3), (0.37, 4)])
def test_magnitude_density_rule_exact_global_counts(density, rounds):
    model = sp.convert(convnet(), "magnitude", density=density, rounds=rounds)
    n = sum(layer.weight.numel() for layer in layers(model))
    history = iterative_prune(model, lambda m, r: steps(m, torch.optim.SGD(m.parameters(), lr=0.05)))
    assert [h.round for h in history] == list(range(rounds + 1))
    for h, d in zip(history[1:], sp.select.densities(density, rounds)):
        assert h.density == round(d * n) / n
    kept = [layer.method.ranking_scores(layer) for layer in layers(model)]
    assert sum(int(layer.mask.sum()) for layer in layers(model)) == round(density * n)
    # The survivors are the largest |w| of the last round (ties aside): min kept >= max pruned.
    alive = torch.cat([k[k > -math.inf] for k in kept])
    pruned = torch.cat([layer.weight.detach().abs()[~layer.mask] for layer in layers(model)])
    assert alive.min() >= pruned.max()  # pruned weights are 0


# -------------------------------------------------------------------------------------- lottery

@pytest.mark.parametrize("rounds", [1, 3, 6])
def test_lottery_local_density_is_geometric_within_one_weight(rounds):
    model = sp.convert(convnet(), "lottery", rate=0.2, conv_rate=0.1, output_rate=0.15,
                       rounds=rounds)
    iterative_prune(model, lambda m, r: steps(m, torch.optim.Adam(m.parameters(), lr=1e-2)))
    rates = [0.1, 0.1, 0.2, 0.15]  # conv, conv, fc, output
    for layer, p in zip(layers(model), rates):
        n = layer.weight.numel()
        assert abs(int(layer.mask.sum()) - n * (1 - p) ** rounds) <= 1


def test_lottery_global_scope_and_dense_output_layer():
    model = sp.convert(mlp(), "lottery", scope="global", rate=0.3, output_rate=0.0, rounds=2)
    iterative_prune(model, lambda m, r: steps(m, torch.optim.SGD(m.parameters(), lr=0.1)))
    body, out = layers(model)[:-1], layers(model)[-1]
    n = sum(layer.weight.numel() for layer in body)
    assert sum(int(layer.mask.sum()) for layer in body) == round(n * 0.7 ** 2)
    assert bool(out.mask.all())


def test_lottery_rewinds_survivors_to_init_exactly():
    model = sp.convert(mlp(), "lottery", rounds=2)
    init = [(layer.weight.detach().clone(), layer.bias.detach().clone()) for layer in layers(model)]
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    steps(model, opt)
    prune_round(model, opt)
    for layer, (w0, b0) in zip(layers(model), init):
        assert torch.equal(layer.weight, torch.where(layer.mask, w0, torch.zeros_like(w0)))
        assert torch.equal(layer.bias, b0)
    # The mask was chosen on the trained weights, not the initial ones.
    steps(model, opt)
    prune_round(model, opt)
    for layer, (w0, _) in zip(layers(model), init):
        assert torch.equal(layer.weight[layer.mask], w0[layer.mask])


def test_lottery_rewinds_to_step_k():
    k = 3
    model = sp.convert(mlp(), "lottery", rewind_step=k, rounds=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    steps(model, opt, k)
    theta_k = [layer.weight.detach().clone() for layer in layers(model)]
    with torch.no_grad():
        model.eval()(torch.randn(4, 20))  # evaluation forwards do not count as steps
    model.train()
    steps(model, opt, 4)
    prune_round(model, opt)
    for layer, w in zip(layers(model), theta_k):
        assert torch.equal(layer.weight, torch.where(layer.mask, w, torch.zeros_like(w)))


def test_lottery_without_rewinding_keeps_trained_values():
    model = sp.convert(mlp(), "lottery", rewind_step=None)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    steps(model, opt)
    trained = [layer.weight.detach().clone() for layer in layers(model)]
    prune_round(model, opt)
    for layer, w in zip(layers(model), trained):
        assert torch.equal(layer.weight, torch.where(layer.mask, w, torch.zeros_like(w)))


def test_lottery_rewind_step_not_reached_is_an_error():
    model = sp.convert(mlp(), "lottery", rewind_step=50)
    steps(model, torch.optim.SGD(model.parameters(), lr=0.1), 5)
    with pytest.raises(RuntimeError, match="rewind_step=50.*only 5 training steps"):
        prune_round(model)


def test_state_dict_resumes_mid_schedule():
    model = sp.convert(mlp(), "lottery", rewind_step=2, rounds=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    steps(model, opt)
    prune_round(model, opt)
    steps(model, opt)
    clone = sp.convert(mlp(), "lottery", rewind_step=2, rounds=3)
    clone.load_state_dict(model.state_dict())
    assert rounds_done(clone) == 1
    prune_round(model)
    prune_round(clone)
    for a, b in zip(layers(model), layers(clone)):
        assert torch.equal(a.mask, b.mask) and torch.equal(a.weight, b.weight)
        assert int(a.rounds_done) == int(b.rounds_done) == 2


def test_finalize_after_rounds_matches_masked_model():
    model = sp.convert(convnet(), "lottery", rounds=2)
    iterative_prune(model, lambda m, r: steps(m, torch.optim.Adam(m.parameters(), lr=1e-2)))
    x, _ = data(model)
    expected = model.eval()(x)
    final = sp.finalize(model)
    torch.testing.assert_close(final(x), expected)
    assert sp.sparsity_report(final).density < 1


# ------------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("name, options, message", [
    ("lottery", {"rate": 1.0}, r"rate must be a number in \[0, 1\)"),
    ("lottery", {"conv_rate": -0.1}, r"conv_rate must be a number in \[0, 1\)"),
    ("lottery", {"output_rate": float("nan")}, r"output_rate must be a number in \[0, 1\)"),
    ("lottery", {"scope": "layer"}, "scope must be one of"),
    ("lottery", {"rewind_step": -1}, "rewind_step must be an int >= 0 or None"),
    ("lottery", {"rounds": 0}, "rounds must be an int >= 1"),
    ("magnitude", {"quality": -1.0}, "quality must be a finite number >= 0"),
    ("magnitude", {"density": 1.5}, "density must be a number in \\(0, 1\\]"),
    ("magnitude", {"density": 0.0}, "density must be a number in \\(0, 1\\]"),
    ("magnitude", {"quality": 1.0, "density": 0.1}, "either quality .* or density"),
    ("magnitude", {"rounds": 2.5}, "rounds must be an int >= 1"),
])
def test_bad_options(name, options, message):
    with pytest.raises(ValueError, match=message):
        sp.convert(mlp(), name, **options)


def test_schedules_need_iterative_layers_of_one_method():
    with pytest.raises(ValueError, match="no layers of an iterative method"):
        prune_round(sp.convert(mlp(), "aslp"))
    model = mlp()
    sp.convert(model, "lottery", include="0")
    sp.convert(model, "magnitude", include=["2", "4"])
    with pytest.raises(ValueError, match="share one method and rounds"):
        prune_round(model)
    with pytest.raises(TypeError, match="train must be a callable"):
        iterative_prune(sp.convert(mlp(), "lottery"), None)
    with pytest.raises(ValueError, match="rounds must be an int >= 0"):
        iterative_prune(sp.convert(mlp(), "lottery"), lambda m, r: None, rounds=-1)


def test_repr_shows_non_default_options():
    model = sp.convert(mlp(), "lottery", rate=0.3, rewind_step=None, rounds=4)
    assert "lottery(rate=0.3, rewind_step=None, rounds=4)" in repr(model)
