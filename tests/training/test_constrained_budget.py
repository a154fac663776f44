"""The constrained budget (sparseprune.budget.Budget): its schedule, its multipliers' dual ascent,
the methods' straight-through rule mass and disagreement, convergence of the own-rule density on a
small synthetic problem for every learned-density method and scope, the decision-difference
statistic, checkpointed state, and bad input."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparseprune as sp
from sparseprune import reference
from sparseprune.methods.hard_concrete import constrain_
from sparseprune.training.budget import Budget, cubic_schedule, final_densities


def mlp():
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
                         nn.Linear(32, 4))


def numels(model):
    return [layer.weight.numel() for _, layer in sp.masked_layers(model)]


def rule_density(model):
    masks = sp.final_masks(model)
    return sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())


# ------------------------------------------------------------------------------ schedule

def test_cubic_schedule_values():
    assert cubic_schedule(0.5, 0.1, 0.0) == 0.5
    assert cubic_schedule(0.5, 0.1, 0.5) == pytest.approx(0.1 + 0.4 * 0.125)
    assert cubic_schedule(0.5, 0.1, 1.0) == 0.1
    assert cubic_schedule(0.5, 0.1, 3.0) == 0.1 and cubic_schedule(0.5, 0.1, -1.0) == 0.5
    assert cubic_schedule(0.02, 0.3, 0.5) == pytest.approx(0.3 - 0.28 * 0.125)  # ramps up too


def test_budget_target_follows_the_schedule_of_its_training_calls():
    model = sp.convert(mlp(), "aslp")
    budget = Budget(model, 0.1, total_steps=20, warmup=0.5)
    assert budget.initial.tolist() == [0.5, 0.5, 0.5]  # sigmoid(0): the expected density
    seen = []
    for step in range(12):
        seen.append(budget.target())
        assert budget.progress() == step / 20 and budget.settled() == (step >= 10)
        if step < 10:
            assert budget.commit_progress() is None
        else:
            assert budget.commit_progress() == pytest.approx((step - 10) / 10)
        budget().backward()
    assert seen == [pytest.approx(cubic_schedule(0.5, 0.1, s / 10)) for s in range(12)]
    assert seen[10] == seen[11] == 0.1
    with torch.no_grad():
        budget()  # no gradient: no step
    budget.eval()
    budget()  # eval mode: no step either
    assert int(budget.step) == 12
    # Without total_steps: the target from the first step, no commit phase.
    plain = Budget(model, 0.1)
    assert plain.target() == 0.1 and plain.settled() and plain.progress() is None
    assert plain.commit_progress() is None


def test_local_targets_start_from_each_layers_own_density():
    model = sp.convert(mlp(), "aslp")
    with torch.no_grad():
        for i, (_, layer) in enumerate(sp.masked_layers(model)):
            layer.scores.fill_(float(i) - 1.0)
    budget = Budget(model, 0.2, scope="local", total_steps=10, warmup=1.0,
                    min_layer_density=0.25)
    expected = [torch.sigmoid(torch.tensor(float(i) - 1.0)).item() for i in range(3)]
    torch.testing.assert_close(budget.initial, torch.tensor(expected, dtype=torch.float64))
    # the per-layer floor is the local target's lower bound
    assert budget.targets().tolist() == pytest.approx([max(e, 0.25) for e in expected])


# ------------------------------------------------------------------------ multipliers

def test_dual_ascent_and_the_term_it_returns():
    model = sp.convert(mlp(), "aslp")
    with torch.no_grad():
        for _, layer in sp.masked_layers(model):
            layer.scores.normal_(0.0, 2.0)
    budget = Budget(model, 0.25, dual_lr=0.1, dual_gain=3.0)
    c = rule_density(model)
    v = (c - 0.25) / max(c, 0.25)  # relative to the larger: bounded by 1
    term = budget()
    assert term.item() == pytest.approx(3.0 * v * v, rel=1e-5)  # lambda = 0 before the step
    assert budget.dual.tolist() == [pytest.approx(0.1 * v)]
    term = budget()  # same parameters: lambda = 0.1 v now
    assert term.item() == pytest.approx((0.1 * v + 3.0 * v) * v, rel=1e-5)
    assert budget.dual.tolist() == [pytest.approx(0.2 * v)] and int(budget.step) == 2
    assert budget.last["violation"] == [pytest.approx(v)]
    # Gradient: the expected mass's, scaled by the price (lambda + gain * v) / (d N).
    model.zero_grad()
    budget().backward()
    layer = sp.masked_layers(model)[0][1]
    s = layer.scores.detach()
    price = 0.2 * v + 3.0 * v
    want = price / (max(c, 0.25) * sum(numels(model))) * torch.sigmoid(s) * (1 - torch.sigmoid(s))
    torch.testing.assert_close(layer.scores.grad, want.float(), rtol=1e-4, atol=1e-9)


def test_local_multipliers_are_per_layer_prices_and_floors_stay_non_negative():
    model = sp.convert(mlp(), "aslp")
    with torch.no_grad():
        for i, (_, layer) in enumerate(sp.masked_layers(model)):
            layer.scores.normal_(1.0 - 2.0 * i, 1.0)  # layer 0 dense, layer 2 sparse
    local = Budget(model, 0.3, scope="local", dual_lr=0.5, dual_gain=0.0)
    dens = [float(m.float().mean()) for m in sp.final_masks(model).values()]
    local()
    assert local.dual.tolist() == pytest.approx([0.5 * (d - 0.3) / max(d, 0.3) for d in dens])
    floors = Budget(model, 0.3, min_layer_density=0.1, dual_lr=0.5, dual_gain=0.0)
    floors()
    want = [max(0.0, 0.5 * (0.1 - d) / max(d, 0.1)) for d in dens]
    assert floors.floor_dual.tolist() == pytest.approx(want)
    assert want[0] == 0 and want[2] > 0  # only the layer under its floor has a price


def reparam_surrogate(layer):
    """|t w| / (|t w| + x_half), x_half where h = 1/2 (n = 4): 1.1303..."""
    half = (-1.0 / math.log(0.5 + 0.5 * math.exp(-1.0)) - 1.0) ** 0.25
    x = (layer.t * layer.weight).abs()
    return x / (x + half)


def test_rule_mass_is_the_own_rule_count_with_a_surrogate_gradient():
    model = sp.convert(mlp(), "aslp")
    layer = sp.masked_layers(model)[0][1]
    with torch.no_grad():
        layer.scores.normal_()
    mass = layer.method.rule_mass(layer)  # the default: budget_mass's gradient
    assert mass.item() == int((layer.scores >= 0).sum())
    s = layer.scores.detach()
    grad, = torch.autograd.grad(mass, [layer.scores])
    torch.testing.assert_close(grad, torch.sigmoid(s) * (1 - torch.sigmoid(s)))

    model = sp.convert(mlp(), "reparam", t_init=20.0)
    layer = sp.masked_layers(model)[0][1]
    mass = layer.method.rule_mass(layer)  # reparam: a surrogate that switches where h does
    h = reference.reparam_h(layer.weight, layer.t, 4)
    assert mass.item() == int((h >= 0.5).sum())
    surrogate = reparam_surrogate(layer)
    assert torch.equal(surrogate >= 0.5, h >= 0.5)
    got = torch.autograd.grad(mass, [layer.weight, layer.t])
    want = torch.autograd.grad(surrogate.sum(), [layer.weight, layer.t])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


# ----------------------------------------------------------------------- disagreement

def test_disagreement_of_each_method():
    torch.manual_seed(1)
    stochastic = sp.convert(mlp(), "supermask")
    layer = sp.masked_layers(stochastic)[0][1]
    with torch.no_grad():
        layer.scores.normal_(0.0, 3.0)
    keep = torch.rand(layer.weight.shape) < 0.3
    p = torch.sigmoid(layer.scores.detach())
    want = torch.where(keep, 1 - p, p).sum()
    assert layer.method.disagreement(layer, keep).item() == pytest.approx(want.item(), rel=1e-5)
    with torch.no_grad():  # committed to keep: nothing left to disagree on
        layer.scores.copy_(torch.where(keep, 40.0, -40.0))
    assert layer.method.disagreement(layer, keep).item() < 1e-12

    rep = sp.convert(mlp(), "reparam", t_init=20.0)
    layer = sp.masked_layers(rep)[1][1]
    keep = torch.rand(layer.weight.shape) < 0.3
    h = reference.reparam_h(layer.weight.detach(), layer.t.detach(), 4)
    want = torch.where(keep, 1 - h, reparam_surrogate(layer).detach()).sum()
    got = layer.method.disagreement(layer, keep)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    got.backward()
    assert layer.weight.grad is not None and layer.t.grad is None  # t: the count's lever

    for structure in ("weight", "unit"):
        hc = sp.convert(mlp(), "hard_concrete", structure=structure)
        layer = sp.masked_layers(hc)[0][1]
        keep = torch.rand(layer.weight.shape) < 0.3
        q = torch.sigmoid(layer.log_alpha.detach() - (2 / 3) * math.log(0.1 / 1.1))
        q = q.expand(layer.weight.shape)
        want = torch.where(keep, 1 - q, q).sum()
        assert layer.method.disagreement(layer, keep).item() == pytest.approx(want.item(),
                                                                               rel=1e-5)


# ------------------------------------------------------------------------ convergence

METHODS = [("aslp", {}, "sgd"), ("supermask", {}, "sgd"), ("reparam", {"t_init": 30.0}, "adam"),
           ("hard_concrete", {}, "adam")]


def train(method, options, optimizer, density, *, scope="global", steps=300, warmup=0.5,
          **kwargs):
    """A 4-class problem on 32 features, the methods' kind of optimizer, ``steps`` steps with a
    Budget of that length (half of it to ramp: a short run needs a longer commit phase than the
    default fifth, gates move at most lr a step); returns the model and the budget."""
    torch.manual_seed(0)
    model = sp.convert(mlp(), method, **options)
    x = torch.randn(512, 32)
    y = x[:, :4].argmax(1)
    budget = Budget(model, density, scope=scope, total_steps=steps, warmup=warmup, **kwargs)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (torch.optim.SGD(params, lr=5.0, momentum=0.9) if optimizer == "sgd"
           else torch.optim.Adam(params, lr=1e-2))
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, 512, (64,), generator=gen)
        opt.zero_grad()
        (F.cross_entropy(model(x[idx]), y[idx]) + budget()).backward()
        opt.step()
        if method == "hard_concrete":
            constrain_(model)
    return model, budget


@pytest.mark.parametrize("scope", ["global", "local"])
@pytest.mark.parametrize("method,options,optimizer", METHODS, ids=[m[0] for m in METHODS])
def test_own_rule_density_converges_to_the_target(method, options, optimizer, scope):
    model, budget = train(method, options, optimizer, 0.2, scope=scope)
    dens = final_densities(model, 0.2, scope=scope)
    assert dens["rule"] == pytest.approx(0.2, rel=0.1)
    assert dens["changed"] <= 0.02  # the top-k keeps (almost) what the own rule keeps
    assert budget.settled() and budget.commit_progress() == 1.0
    if scope == "local":
        for mask in sp.final_masks(model).values():
            assert float(mask.float().mean()) == pytest.approx(0.2, rel=0.15)
    if method in ("aslp", "supermask"):  # committed: the masks sampled are the mask kept
        assert dens["expected"] == pytest.approx(dens["rule"], rel=0.15)


def test_per_layer_minimum_is_kept():
    free, _ = train("aslp", {}, "sgd", 0.2)
    lowest = min(float(m.float().mean()) for m in sp.final_masks(free).values())
    assert lowest < 0.185  # without a floor, a layer ends below it
    model, budget = train("aslp", {}, "sgd", 0.2, min_layer_density=0.19)
    for mask in sp.final_masks(model).values():
        assert float(mask.float().mean()) >= 0.19 * 0.97
    assert rule_density(model) == pytest.approx(0.2, rel=0.1)
    assert final_densities(model, 0.2, min_layer_density=0.19)["changed"] <= 0.02


def test_commit_drives_the_own_rule_to_the_exact_top_k():
    """The same run with and without the commit phase: with it, the decisions the top-k changes
    and the masks' expected disagreement fall to ~0."""
    with_commit, budget = train("aslp", {}, "sgd", 0.1)
    without, _ = train("aslp", {}, "sgd", 0.1, commit=False)
    a, b = final_densities(with_commit, 0.1), final_densities(without, 0.1)
    assert a["changed"] <= b["changed"] and a["changed"] <= 0.01
    assert abs(a["expected"] - a["rule"]) < abs(b["expected"] - b["rule"])
    assert budget.disagreement().item() < 0.02


def test_commit_masks_keep_the_own_rules_layer_shares_at_the_exact_count():
    """A layer whose ranking scale is far below the others' (reparam's t) is not cut away: the
    commit target shares round(d N) out in proportion to what each layer's own rule keeps."""
    model = sp.convert(mlp(), "reparam", t_init=30.0)
    layers = [layer for _, layer in sp.masked_layers(model)]
    with torch.no_grad():
        layers[0].t.fill_(8.0)  # layer 0 ranks low against the others
    rule = [int(layer.method.final_mask(layer).sum()) for layer in layers]
    budget = Budget(model, 0.2)
    counts = budget.commit_counts()
    total = round(0.2 * sum(numels(model)))
    assert sum(counts) == total
    assert counts == [pytest.approx(total * r / sum(rule), abs=1) for r in rule]
    masks = budget.commit_masks()
    assert [int(m.sum()) for m in masks] == counts
    for layer, mask, k in zip(layers, masks, counts):  # each layer's best by ranking score
        assert torch.equal(mask, sp.select.top_k_masks([layer.method.ranking_scores(layer)], k)[0])
    exact = sp.final_masks(model, density=0.2)
    assert int(exact["0"].sum()) < counts[0] // 2  # the global top-k would cut layer 0
    # Floors first, then the shares; local scope: each layer's own count.
    floors = Budget(model, 0.2, min_layer_density=0.19).commit_counts()
    assert sum(floors) == total and all(c >= math.ceil(0.19 * n)
                                        for c, n in zip(floors, numels(model)))
    local = Budget(model, 0.2, scope="local").commit_counts()
    assert local == [round(0.2 * n) for n in numels(model)]


def test_decision_difference_statistic():
    model = sp.convert(mlp(), "aslp")
    with torch.no_grad():
        for _, layer in sp.masked_layers(model):
            layer.scores.normal_()
    dens = final_densities(model, 0.2)
    rule, exact = sp.final_masks(model), sp.final_masks(model, density=0.2)
    differ = sum(int((rule[n] != exact[n]).sum()) for n in rule)
    assert dens["changed"] == differ / sum(numels(model))
    # Both are thresholds of the same scores here: they differ by the difference of the counts.
    assert dens["changed"] == pytest.approx(abs(dens["rule"] - dens["exact"]), abs=1e-12)
    dens_local = final_densities(model, 0.2, scope="local")
    exact_local = sp.final_masks(model, density=0.2, scope="local")
    differ = sum(int((rule[n] != exact_local[n]).sum()) for n in rule)
    assert dens_local["changed"] == differ / sum(numels(model))
    with torch.no_grad():  # the own rule keeping exactly the top 20 %: nothing changes
        scores = [layer.scores for _, layer in sp.masked_layers(model)]
        for s, keep in zip(scores, sp.final_masks(model, density=0.2).values()):
            s.copy_(torch.where(keep, 1.0, -1.0))
    assert final_densities(model, 0.2)["changed"] == 0.0


# ------------------------------------------------------------------------- checkpoints

def test_state_dict_resumes_exactly():
    """Steps 1-10, save model + optimizer + budget, steps 11-20 in a fresh copy: the same
    parameters and multipliers as 20 uninterrupted steps."""
    def make():
        torch.manual_seed(3)
        model = sp.convert(mlp(), "reparam", t_init=30.0)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        return model, opt, Budget(model, 0.2, total_steps=20, warmup=0.3)

    x, y = torch.randn(64, 32), torch.randint(0, 4, (64,))

    def steps(model, opt, budget, n):
        for _ in range(n):
            opt.zero_grad()
            (F.cross_entropy(model(x), y) + budget()).backward()
            opt.step()

    model, opt, budget = make()
    steps(model, opt, budget, 20)
    cut_model, cut_opt, cut_budget = make()
    steps(cut_model, cut_opt, cut_budget, 10)
    saved = copy.deepcopy((cut_model.state_dict(), cut_opt.state_dict(), cut_budget.state_dict()))
    new_model, new_opt, _ = make()
    new_model.load_state_dict(saved[0])
    new_opt.load_state_dict(saved[1])
    new_budget = Budget(new_model, 0.2, total_steps=99, warmup=0.3)  # the saved length wins
    new_budget.load_state_dict(saved[2])
    assert int(new_budget.total_steps) == 20 and int(new_budget.step) == 10
    steps(new_model, new_opt, new_budget, 10)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(new_model.state_dict()[k], v, rtol=0, atol=0)
    for k, v in budget.state_dict().items():
        torch.testing.assert_close(new_budget.state_dict()[k], v, rtol=0, atol=0)
    assert (budget.commit_dual > 0).all()  # the commit phase ran and was resumed


# ---------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs,pattern", [
    (dict(density=0.0), r"density must be a number in \(0, 1\], got 0.0"),
    (dict(density=1.5), r"density must be a number in \(0, 1\], got 1.5"),
    (dict(density=0.5, scope="layer"), "scope must be one of .* got 'layer'"),
    (dict(density=0.5, min_layer_density=-0.1),
     r"min_layer_density must be a number in \[0, 1\], got -0.1"),
    (dict(density=0.1, min_layer_density=0.5), "min_layer_density=0.5 keeps at least"),
    (dict(density=0.5, total_steps=0), "total_steps must be an int >= 1 or None, got 0"),
    (dict(density=0.5, total_steps=2.5), "total_steps must be an int >= 1 or None, got 2.5"),
    (dict(density=0.5, warmup=1.5), r"warmup must be a number in \[0, 1\], got 1.5"),
    (dict(density=0.5, dual_lr=-1.0), "dual_lr must be a finite number >= 0, got -1.0"),
    (dict(density=0.5, dual_gain=math.inf), "dual_gain must be a finite number >= 0, got inf"),
])
def test_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        Budget(sp.convert(mlp(), "aslp"), **kwargs)


def test_rejects_models_without_learned_density():
    with pytest.raises(ValueError, match="Budget: the model has no masked layers"):
        Budget(mlp(), 0.5)
    with pytest.raises(TypeError, match="'edge_popup', whose density is not learned"):
        Budget(sp.convert(mlp(), "edge_popup"), 0.5)


def test_a_method_without_disagreement_trains_without_commit():
    class Gate(sp.methods.get("aslp")):
        name = "budget_test_gate"
        disagreement = sp.methods.MaskMethod.disagreement

    model = sp.convert(mlp(), Gate())
    with pytest.warns(UserWarning, match="budget_test_gate define no disagreement"):
        budget = Budget(model, 0.3, total_steps=4)
    assert not budget.commit
    for _ in range(4):
        budget().backward()
    assert budget.commit_progress() is None
