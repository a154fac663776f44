"""Pruning-at-init scores against independent slow implementations: central finite differences
weight by weight (SNIP, Iter-SNIP, FORCE), a hand-written network with a full autograd Hessian
(GraSP), SynFlow's path sums by explicit loops, and sorting (magnitude). All in float64."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparseprune as sp
from sparseprune.pruning import compute_scores

@pytest.fixture(autouse=True)
def _one_thread():
    # Thousands of tiny ops: on a shared 2-core machine, OpenMP hand-offs between two threads
    # cost ~1000x the ops themselves.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TOL = dict(rtol=1e-6, atol=1e-9)  # central differences (h = 1e-5) are good to ~1e-10


def conv_net():
    """Conv + Linear, smooth (tanh), float64: 2x1x2x2 conv weights + 3x8 linear weights."""
    return nn.Sequential(nn.Conv2d(1, 2, 2), nn.Tanh(), nn.Flatten(), nn.Linear(8, 3)).double()


def batch(n=5, classes=3, shape=(1, 3, 3), seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=torch.float64), \
        torch.randint(0, classes, (n,), generator=g)


def prunable(model):
    return {n: m for n, m in model.named_modules() if type(m) in (nn.Linear, nn.Conv2d)}


@torch.no_grad()
def fd_weight_gradients(model, loss_of_model, h=1e-5):
    """dL/dw for every prunable weight, by central differences one weight at a time."""
    work = copy.deepcopy(model)
    grads = {}
    for name, layer in prunable(work).items():
        flat = layer.weight.view(-1)
        g = torch.zeros_like(flat)
        for i in range(flat.numel()):
            orig = flat[i].item()
            flat[i] = orig + h
            plus = loss_of_model(work)
            flat[i] = orig - h
            minus = loss_of_model(work)
            flat[i] = orig
            g[i] = (plus - minus) / (2 * h)
        grads[name] = g.view_as(layer.weight)
    return grads


def ce_loss(x, y):
    return lambda m: float(F.cross_entropy(m(x), y))


def test_snip_equals_finite_differences():
    model = conv_net()
    x, y = batch()
    grads = fd_weight_gradients(model, ce_loss(x, y))
    raw = {n: (layer.weight.detach() * grads[n]).abs() for n, layer in prunable(model).items()}
    total = sum(float(r.sum()) for r in raw.values())
    ours = compute_scores(model, "snip", data=(x, y))
    for name in raw:
        torch.testing.assert_close(ours[name], raw[name] / total, **TOL)
    assert math.isclose(sum(float(s.sum()) for s in ours.values()), 1.0, rel_tol=1e-12)


def test_snip_averages_the_gradient_over_batches():
    model = conv_net()
    (x1, y1), (x2, y2) = batch(seed=1), batch(seed=2)
    g1 = fd_weight_gradients(model, ce_loss(x1, y1))
    g2 = fd_weight_gradients(model, ce_loss(x2, y2))
    raw = {n: (layer.weight.detach() * (g1[n] + g2[n]) / 2).abs() for n, layer in prunable(model).items()}
    total = sum(float(r.sum()) for r in raw.values())
    ours = compute_scores(model, "snip", data=[(x1, y1), (x2, y2)], batches=2)
    for name in raw:
        torch.testing.assert_close(ours[name], raw[name] / total, **TOL)


@pytest.mark.parametrize("method", ["iter_snip", "force"])
def test_sparse_point_scores_equal_finite_differences(method):
    model = conv_net()
    x, y = batch()
    g = torch.Generator().manual_seed(3)
    masks = {n: torch.rand(layer.weight.shape, generator=g) < 0.6
             for n, layer in prunable(model).items()}
    sparse = copy.deepcopy(model)
    with torch.no_grad():
        for n, layer in prunable(sparse).items():
            layer.weight.mul_(masks[n])
    grads = fd_weight_gradients(sparse, ce_loss(x, y))  # dL/dw_eff at theta * mask
    ours = compute_scores(model, method, data=(x, y), masks=masks)
    for n, layer in prunable(model).items():
        theta = layer.weight.detach() * masks[n] if method == "iter_snip" else layer.weight.detach()
        torch.testing.assert_close(ours[n], (theta * grads[n]).abs(), **TOL)
        if method == "force":  # pruned weights get a real score, so they can come back
            assert (ours[n][~masks[n]] > 0).any()
        else:
            assert (ours[n][~masks[n]] == 0).all()


def test_iter_snip_and_force_at_the_dense_point_rank_like_snip():
    model = conv_net()
    x, y = batch()
    snip = compute_scores(model, "snip", data=(x, y))
    for method in ("iter_snip", "force"):
        other = compute_scores(model, method, data=(x, y))
        total = sum(float(s.sum()) for s in other.values())
        for n in snip:
            torch.testing.assert_close(other[n] / total, snip[n], **TOL)


# ------------------------------------------------------------------------------------ GraSP

def mlp():
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()


def grasp_reference(model, batches):
    """-theta * (H g) / (|sum| + 1e-10) from a hand-written forward and a full Hessian."""
    w1, b1 = model[0].weight.detach(), model[0].bias.detach()
    w2, b2 = model[2].weight.detach(), model[2].bias.detach()
    n1 = w1.numel()

    def loss(theta, x, y):
        a, b = theta[:n1].view_as(w1), theta[n1:].view_as(w2)
        logits = torch.tanh(x @ a.T + b1) @ b.T + b2
        return F.cross_entropy(logits / 200.0, y)

    theta = torch.cat([w1.reshape(-1), w2.reshape(-1)])
    mean_loss = lambda t: sum(loss(t, x, y) for x, y in batches) / len(batches)  # noqa: E731
    g = torch.autograd.functional.jacobian(mean_loss, theta)
    hessian = torch.autograd.functional.hessian(mean_loss, theta)
    s = -theta * (hessian @ g)
    s = s / (abs(float(s.sum())) + 1e-10)
    return {"0": s[:n1].view_as(w1), "2": s[n1:].view_as(w2)}


def test_grasp_equals_hessian_reference_on_balanced_batches():
    model = mlp()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(12, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([2, 0, 1, 1, 0, 2, 2, 1, 0, 0, 1, 2])
    # samples_per_class=2 takes the first two examples of each class, grouped by class.
    picked = [i for c in range(3) for i in [j for j in range(12) if y[j] == c][:2]]
    expected = grasp_reference(model, [(x[picked], y[picked])])
    ours = compute_scores(model, "grasp", data=[(x[:6], y[:6]), (x[6:], y[6:])],
                          samples_per_class=2)
    for n in expected:
        torch.testing.assert_close(ours[n], expected[n], **TOL)


def test_grasp_uses_the_same_batches_for_g_and_hg():
    model = mlp()
    g = torch.Generator().manual_seed(6)
    batches = [(torch.randn(3, 4, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2]))
               for _ in range(2)]
    expected = grasp_reference(model, batches)
    ours = compute_scores(model, "grasp", data=batches, batches=2, samples_per_class=1)
    for n in expected:
        torch.testing.assert_close(ours[n], expected[n], **TOL)


def test_grasp_removes_the_highest_scores():
    model = mlp()
    x = torch.randn(30, 4, dtype=torch.float64)
    y = torch.arange(30) % 3
    scores = compute_scores(model, "grasp", data=(x, y), samples_per_class=2)
    masks = sp.pruning.compute_masks(model, "grasp", data=(x, y), samples_per_class=2,
                                     density=0.25)
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    kept = torch.cat([m.reshape(-1) for m in masks.values()])
    assert int(kept.sum()) == round(0.25 * flat.numel())
    assert flat[kept].max() <= flat[~kept].min()  # the lowest S survive


# ---------------------------------------------------------------------------------- SynFlow

def synflow_reference(model, masks):
    """SynFlow scores of Linear(4,5) -> ReLU -> Linear(5,3), biases included, by path sums.

    With |theta| everywhere and an all-ones input every pre-activation is positive, so
    R = sum_k (|W2| a)_k + sum |b2| with a = |W1| 1 + |b1|; dR/d|W2|_kj = a_j and
    dR/d|W1|_ji = sum_k |W2|_kj.
    """
    w1 = (model[0].weight.detach().abs() * masks["0"]).tolist()
    w2 = (model[2].weight.detach().abs() * masks["2"]).tolist()
    b1 = model[0].bias.detach().abs().tolist()
    a = [sum(w1[j][i] for i in range(4)) + b1[j] for j in range(5)]
    s2 = [[w2[k][j] * a[j] for j in range(5)] for k in range(3)]
    s1 = [[w1[j][i] * sum(w2[k][j] for k in range(3)) for i in range(4)] for j in range(5)]
    return {"0": torch.tensor(s1, dtype=torch.float64), "2": torch.tensor(s2, dtype=torch.float64)}


def test_synflow_equals_path_sums_without_data():
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))  # float32, signed weights
    before = copy.deepcopy(model.state_dict())
    g = torch.Generator().manual_seed(7)
    masks = {"0": torch.rand(5, 4, generator=g) < 0.7, "2": torch.rand(3, 5, generator=g) < 0.7}
    for m in (None, masks):
        ours = compute_scores(model, "synflow", input_shape=(4,), masks=m)
        expected = synflow_reference(model, m or {k: torch.ones_like(v) for k, v in masks.items()})
        for n in expected:
            assert ours[n].dtype == torch.float64
            torch.testing.assert_close(ours[n], expected[n], rtol=1e-12, atol=0)
    for k, v in model.state_dict().items():  # signs (and everything else) as before
        assert torch.equal(v, before[k]), k


def test_synflow_is_computed_in_float64_where_float32_overflows():
    layers = []
    for _ in range(40):
        layers += [nn.Linear(8, 8, bias=False), nn.ReLU()]
    model = nn.Sequential(*layers)
    with torch.no_grad():
        for m in model[::2]:
            m.weight.uniform_(-40, 40)
    with torch.no_grad():  # float32 cannot hold R: roughly (8 * 20)^40 ~ 1e88
        linear = copy.deepcopy(model)
        for p in linear.parameters():
            p.abs_()
        assert math.isinf(float(linear(torch.ones(1, 8)).sum()))
    scores = compute_scores(model, "synflow", input_shape=(8,))
    assert all(torch.isfinite(s).all() and s.dtype == torch.float64 for s in scores.values())
    masks = sp.pruning.compute_masks(model, "synflow", input_shape=(8,), density=0.5,
                                     iterations=3)
    assert sum(int(m.sum()) for m in masks.values()) == round(0.5 * 40 * 64)


def test_synflow_linearises_batch_norm_and_uses_running_stats():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        model[1].running_mean.copy_(torch.tensor([-1.0, 2.0, -3.0, 0.5]))
        model[1].running_var.copy_(torch.tensor([4.0, 1.0, 0.25, 9.0]))
        model[1].weight.copy_(torch.tensor([-1.0, 0.5, 2.0, -0.2]))
        model[1].bias.copy_(torch.tensor([0.3, -0.7, 0.1, -2.0]))
    before = copy.deepcopy(model.state_dict())
    model.train()
    ours = compute_scores(model, "synflow", input_shape=(3,))
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # Reference: everything |.|, eval-mode batch norm, in float64, by hand.
    d = {k: v.detach().abs().double() for k, v in before.items() if v.is_floating_point()}
    w1 = d["0.weight"].clone().requires_grad_()
    w2 = d["3.weight"].clone().requires_grad_()
    h = torch.ones(1, 3, dtype=torch.float64) @ w1.T + d["0.bias"]
    h = (h - d["1.running_mean"]) / torch.sqrt(d["1.running_var"] + 1e-5) * d["1.weight"] \
        + d["1.bias"]
    out = torch.relu(h) @ w2.T + d["3.bias"]
    out.sum().backward()
    torch.testing.assert_close(ours["0"], (w1 * w1.grad).abs().detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(ours["3"], (w2 * w2.grad).abs().detach(), rtol=1e-12, atol=0)


# ------------------------------------------------------------------------ magnitude, random

def test_magnitude_keeps_the_largest_weights():
    model = conv_net()
    masks = sp.pruning.compute_masks(model, "magnitude", density=0.3)
    flat = torch.cat([m.weight.detach().abs().reshape(-1) for m in prunable(model).values()])
    kept = torch.cat([m.reshape(-1) for m in masks.values()])
    order = torch.sort(flat, descending=True, stable=True).indices
    expected = torch.zeros_like(kept)
    expected[order[:round(0.3 * flat.numel())]] = True
    assert torch.equal(kept, expected)


def test_random_scores_follow_the_generator():
    model = conv_net()
    a = compute_scores(model, "random", generator=torch.Generator().manual_seed(4))
    b = compute_scores(model, "random", generator=torch.Generator().manual_seed(4))
    c = compute_scores(model, "random", generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not all(torch.equal(a[n], c[n]) for n in a)
    torch.manual_seed(9)
    d = compute_scores(model, "random")
    torch.manual_seed(9)
    e = compute_scores(model, "random")
    assert all(torch.equal(d[n], e[n]) for n in d)
