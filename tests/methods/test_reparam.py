"""Budget-aware weight reparametrisation: the fused op against autograd on the reference (values,
the sum of h, both gradients), gradcheck, bit-identity across ISAs, opcheck, the method end to end
and bad input."""

import copy
import math

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck

import sparseprune as sp
from sparseprune import functional as F
from sparseprune import ops, reference

from conftest import run_on_each_isa
from helpers import assert_matches_truth

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
SHAPES = [(1,), (7, 9), (37, 211), (3, 5, 4, 4), (4096 * 2 + 65,)]


def inputs(shape, dtype, t=30.0, scale=0.05):
    # |t w| around 1: the pit's edge, where h and its slope vary the most.
    weight = (torch.randn(shape, dtype=torch.float64) * scale).to(dtype).requires_grad_()
    tt = torch.tensor([t], dtype=torch.float64 if dtype == torch.float64 else torch.float32,
                      requires_grad=True)
    return weight, tt


def test_sanity_values():
    t = torch.tensor([1.0])
    x = torch.tensor([0.0, 1.0, -1.0, 2.0, 1e3, -1e30, 1e-30])
    w_hat = F.reparam_weight(x, t)
    h = w_hat[1:4] / x[1:4]
    torch.testing.assert_close(h, torch.tensor([0.378, 0.378, 0.910]), atol=2e-3, rtol=0)
    assert w_hat[0] == 0 and w_hat[6] == 0  # h(0) = 0 exactly (C2 by the same exp)
    assert w_hat[4] == 1e3 and w_hat[5] == -1e30  # h = 1 exactly far from the pit


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("power", [4, 1, 3])
def test_matches_reference(isa, shape, dtype, power):
    weight, t = inputs(shape, dtype)
    w_hat, h_sum = F.reparam_weight(weight, t, power=power, return_sum=True)
    ref_hat, ref_sum = reference.reparam_weight(weight, t, power=power, return_sum=True)
    wide_w, wide_t = (v.detach().double().requires_grad_() for v in (weight, t))
    true_hat, true_sum = reference.reparam_weight(wide_w, wide_t, power=power, return_sum=True)
    assert w_hat.dtype == dtype and w_hat.shape == weight.shape
    assert h_sum.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert_matches_truth(w_hat, ref_hat, true_hat, dtype)
    sum_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    torch.testing.assert_close(h_sum.double(), true_sum, rtol=1e-9 if dtype == torch.float64
                               else 1e-5 if dtype == torch.float32 else 2e-2, atol=1e-6)
    # Gradients of a loss using both outputs.
    g = torch.randn(shape, dtype=torch.float64)
    gs = 0.37

    def grads(w_hat, h_sum, params):
        loss = (w_hat * g.to(w_hat.dtype)).sum() + gs * h_sum
        return torch.autograd.grad(loss, params)

    got = grads(w_hat, h_sum, (weight, t))
    low = grads(ref_hat, ref_sum.to(sum_dtype), (weight, t))
    true = grads(true_hat, true_sum, (wide_w, wide_t))
    assert_matches_truth(got[0], low[0], true[0], dtype)
    assert got[1].dtype == t.dtype and got[1].shape == t.shape
    if dtype in (torch.float32, torch.float64):
        # dLoss/dt sums one term per weight: allow the float32 accumulation's rounding.
        tol = 1e-9 if dtype == torch.float64 else 1e-4
        torch.testing.assert_close(got[1].double(), true[1], rtol=tol, atol=tol)
    else:
        err = (got[1].double() - true[1]).abs()
        assert err <= 2 * (low[1].double() - true[1]).abs() + 2e-2 * true[1].abs() + 1e-3


@pytest.mark.parametrize("power", [4, 2, 1])
def test_gradcheck(power):
    weight = (torch.randn(6, 7, dtype=torch.float64) * 0.05).requires_grad_()
    t = torch.tensor([25.0], dtype=torch.float64, requires_grad=True)
    if power == 1:  # |x| has a kink at 0
        weight = (weight.detach() + 0.1 * torch.sign(weight.detach())).requires_grad_()

    def f(weight, t):
        return F.reparam_weight(weight, t, power=power, return_sum=True)

    assert gradcheck(f, (weight, t))


def test_grad_of_w_hat_alone_and_of_the_sum_alone():
    weight, t = inputs((13, 17), torch.float64)
    ref = reference.reparam_weight(weight, t).sum()
    got = F.reparam_weight(weight, t).sum()
    for a, b in zip(torch.autograd.grad(got, (weight, t)), torch.autograd.grad(ref, (weight, t))):
        torch.testing.assert_close(a, b)
    _, h_sum = F.reparam_weight(weight, t, return_sum=True)
    _, ref_sum = reference.reparam_weight(weight, t, return_sum=True)
    for a, b in zip(torch.autograd.grad(h_sum, (weight, t)),
                    torch.autograd.grad(ref_sum, (weight, t))):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_identical_across_isas(dtype):
    shape = (37, 211)  # 7807 elements: two tiles and a partial chunk
    weight, t = inputs(shape, dtype)
    g = torch.randn(shape).to(dtype)

    def run():
        w, tt = weight.detach().clone().requires_grad_(), t.detach().clone().requires_grad_()
        w_hat, h_sum = F.reparam_weight(w, tt, return_sum=True)
        ((w_hat * g).sum() + 0.5 * h_sum).backward()
        return w_hat, h_sum, w.grad, tt.grad

    results = run_on_each_isa(run)
    first = next(iter(results.values()))
    for name, res in results.items():
        for a, b in zip(first, res):
            assert torch.equal(a, b), name


def test_non_contiguous_and_empty():
    weight, t = inputs((8, 6), torch.float32)
    wt = weight.detach().t()
    torch.testing.assert_close(F.reparam_weight(wt, t), reference.reparam_weight(wt, t))
    w_hat, h_sum = F.reparam_weight(torch.empty(0, 3), t, return_sum=True)
    assert w_hat.shape == (0, 3) and h_sum.item() == 0


def test_opcheck():
    weight, t = inputs((6, 5), torch.float32)
    torch.library.opcheck(torch.ops.sparseprune.reparam_weight.default, (weight, t, 4, True))
    torch.library.opcheck(torch.ops.sparseprune.reparam_weight.default, (weight, t, 3, False))


@pytest.mark.parametrize("call,error,pattern", [
    (lambda: F.reparam_weight(torch.randn(3), torch.ones(2)), ValueError,
     r"t must hold exactly one element .*\[2\]"),
    (lambda: F.reparam_weight(torch.randn(3), torch.ones(1, dtype=torch.int64)), TypeError,
     "t must be float32 or float64, got Long"),
    (lambda: F.reparam_weight(torch.randn(3).long(), torch.ones(1)), TypeError,
     "weight must be float32.*got Long"),
    (lambda: F.reparam_weight(torch.randn(3), torch.ones(1), power=0), ValueError,
     r"power \(the exponent n\) must be an integer in \[1, 64\], got 0"),
    (lambda: F.reparam_weight(torch.randn(3), torch.ones(1), power=2.5), ValueError,
     "power .* got 2.5"),
    (lambda: F.reparam_weight(torch.randn(3), 1.0), TypeError, "t must be a Tensor, got float"),
    (lambda: ops.reparam_weight(torch.randn(3), torch.ones(1), 0, True), ValueError,
     r"power \(the exponent n\) must be an integer in \[1, 64\], got 0"),
    (lambda: F.reparam_weight(torch.randn(3), torch.ones(1, device="meta")), ValueError,
     "same device"),
    (lambda: torch.ops.sparseprune.reparam_weight_backward(
        torch.randn(2), None, torch.randn(3), torch.ones(1), 4, [True, True]), ValueError,
     r"grad must have the weight's shape \[3\], got \[2\]"),
    (lambda: sp.convert(nn.Linear(3, 2), "reparam", t_init=0.0), ValueError,
     "t_init must be a finite number > 0, got 0.0"),
    (lambda: sp.convert(nn.Linear(3, 2), "reparam", power=0), ValueError, "power .* got 0"),
])
def test_bad_input(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def small_model():
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 10),
                         nn.ReLU(), nn.Linear(10, 3))


def test_method_trains_weights_and_t():
    model = sp.convert(small_model(), "reparam")
    layers = sp.masked_layers(model)
    assert all(layer.t.item() == 100.0 and layer.weight.requires_grad for _, layer in layers)
    assert set(sp.mask_parameters(model)) == {"t"}
    x = torch.randn(5, 2, 6, 6)
    out = model(x)
    # The layers compute with w_hat (checked through the reference on one layer).
    conv = layers[0][1]
    expected = nn.functional.conv2d(x, reference.reparam_weight(conv.weight, conv.t), conv.bias)
    torch.testing.assert_close(conv(x), expected)
    out.square().sum().backward()
    for _, layer in layers:
        assert layer.weight.grad is not None and layer.t.grad is not None
    model.eval()
    torch.testing.assert_close(model(x), out.detach())  # eval computes with w_hat too
    copy.deepcopy(model)  # the cached sum (with its graph) is not copied


def test_finalize_rules():
    torch.manual_seed(1)
    model = sp.convert(small_model(), "reparam", t_init=20.0)
    layers = sp.masked_layers(model)
    total = sum(layer.weight.numel() for _, layer in layers)
    h = {name: layer.method.h(layer) for name, layer in layers}
    # Own rule: h >= 0.5.
    kept_rule = sum(int((v >= 0.5).sum()) for v in h.values())
    report = sp.sparsity_report(model)
    assert report.kept == kept_rule
    dens = sp.budget.final_densities(model, 0.3)
    assert dens["rule"] == kept_rule / total
    assert dens["exact"] == round(0.3 * total) / total
    assert dens["expected"] == pytest.approx(sum(float(v.sum()) for v in h.values()) / total,
                                             rel=1e-5)
    # Exact: the round(D N) largest h over all layers; kept weights carry w * h.
    x = torch.randn(3, 2, 6, 6)
    final = sp.finalize(copy.deepcopy(model), density=0.3)
    weights = [m.weight for m in final.modules() if type(m) in (nn.Linear, nn.Conv2d)]
    assert sum(int((w != 0).sum()) for w in weights) == round(0.3 * total)
    all_h = torch.cat([v.flatten() for v in h.values()])
    kept_h = torch.cat([v[w != 0] for v, w in zip(h.values(), weights)])
    assert kept_h.min() >= all_h.sort(descending=True).values[round(0.3 * total) - 1] - 1e-6
    for (name, layer), w in zip(layers, weights):
        mask = w != 0
        torch.testing.assert_close(w[mask], (layer.weight * h[name])[mask].detach())
    # Density 1: the finalized model computes what the reparametrised one does.
    full = sp.finalize(copy.deepcopy(model), density=1.0)
    torch.testing.assert_close(full(x), model.eval()(x), rtol=1e-5, atol=1e-5)


def test_runs_under_torch_compile_with_the_budget():
    model = sp.convert(small_model(), "reparam")
    budget = sp.budget.BudgetLoss(model, 0.5)
    compiled = torch.compile(model)
    x = torch.randn(4, 2, 6, 6)
    for _ in range(2):
        model.zero_grad()
        (compiled(x).sum() + budget()).backward()
    assert all(layer.t.grad is not None for _, layer in sp.masked_layers(model))
