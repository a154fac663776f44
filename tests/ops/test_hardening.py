"""Issue 20: no crash and no silent wrong answer on bad input. Each test here failed on the code
before the hardening (crash, wrong value or unclear error) and pins the fix."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import sparseprune as sp
import sparseprune.functional as SF
from sparseprune import ops, reference
from sparseprune.ops import formats
from sparseprune.ops.rng import rng_state

RNG = rng_state(1, 2)
META = torch.device("meta")


def _weight():
    torch.manual_seed(0)
    w = torch.randn(6, 40)
    w[w.abs() < 0.8] = 0
    return w


def _malformed(format, kind):
    values, row_ptr, indices = (t.clone() for t in formats.compress(_weight(), format))
    if kind == "index_huge":
        indices.view(-1)[0] = 2**30
    elif kind == "index_negative":
        indices.view(-1)[-1] = -5
    elif kind == "row_ptr_not_monotone":
        a, b = int(row_ptr[2]), int(row_ptr[3])
        row_ptr[2], row_ptr[3] = b + 3, a  # row 2 ends before it starts
    elif kind == "surplus_bits":
        indices[0, -1] |= 1 << 30  # column 62 of 40
    elif kind == "bit_count":
        indices[1] = 0
    return values, row_ptr, indices


CASES = [("csr", "index_huge"), ("csr", "index_negative"), ("csr", "row_ptr_not_monotone"),
         ("bitmap", "index_huge"), ("bitmap", "row_ptr_not_monotone"),
         ("bitmap", "surplus_bits"), ("bitmap", "bit_count")]


@pytest.mark.parametrize("format,kind", CASES)
@pytest.mark.parametrize("batch", [1, 5])
def test_sparse_linear_refuses_malformed_structure(format, kind, batch):
    values, row_ptr, indices = _malformed(format, kind)
    with pytest.raises(ValueError, match="sparseprune::sparse_linear: (row_ptr|csr column|bitmap)"):
        ops.sparse_linear(torch.randn(batch, 40), values, row_ptr, indices, None, format, (6, 40))


@pytest.mark.parametrize("format,kind", CASES)
def test_sparse_conv2d_refuses_malformed_structure(format, kind):
    values, row_ptr, indices = _malformed(format, kind)
    with pytest.raises(ValueError, match="sparseprune::sparse_conv2d"):
        ops.sparse_conv2d(torch.randn(2, 10, 6, 6), values, row_ptr, indices, None, format,
                          (6, 10, 2, 2), (1, 1), (0, 0), (1, 1), 1)


@pytest.mark.parametrize("format,kind", CASES)
def test_sparse_layers_revalidate_edited_buffers(format, kind):
    layer = sp.nn.SparseLinear.from_dense(nn.Linear(40, 6), format, weight=_weight())
    values, row_ptr, indices = _malformed(format, kind)
    with torch.no_grad():  # edits that bypass the layer, as a user might make them
        layer.values.data, layer.row_ptr.data, layer.indices.data = values, row_ptr, indices
        with pytest.raises(ValueError, match="sparseprune::sparse_linear"):
            layer(torch.randn(3, 40))


def test_compress_output_with_an_edited_index_is_refused():
    values, row_ptr, indices = formats.compress(_weight(), "csr")
    indices[0] = 2**30
    with pytest.raises(ValueError, match=r"csr column indices must lie in \[0, 40\), got 1073741824"):
        ops.sparse_linear(torch.randn(1, 40), values, row_ptr, indices, None, "csr", (6, 40))


# ---- double backward: a clear error, never a silently wrong value

def _second_backward(make):
    w = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    s = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    g, = torch.autograd.grad(make(x, w, s).square().sum(), w, create_graph=True)
    torch.autograd.grad(g.square().sum(), w)


@pytest.mark.parametrize("op,make", [
    ("masked_linear", lambda x, w, s: SF.masked_linear(x, w, s, rng=RNG)),
    ("masked_weight", lambda x, w, s: SF.aslp_weight(w, s, rng=RNG)),
    ("masked_weight", lambda x, w, s: SF.edge_popup_weight(w, s, density=0.5)),
    ("masked_conv2d", lambda x, w, s: SF.masked_conv2d(
        x.reshape(1, 3, 5, 1), w[:, :3].reshape(6, 3, 1, 1), s[:, :3].reshape(6, 3, 1, 1),
        rng=RNG)),
    ("reparam_weight", lambda x, w, s: SF.reparam_weight(w, torch.tensor([3.0]))),
    ("hard_concrete_sample", lambda x, w, s: SF.hard_concrete_sample(w, rng=RNG)),
])
def test_double_backward_raises_clearly(op, make):
    with pytest.raises(RuntimeError, match=f"sparseprune::{op} does not support double backward"):
        _second_backward(make)


def test_single_backward_with_create_graph_still_works():
    w = torch.randn(6, 5, requires_grad=True)
    s = torch.randn(6, 5, requires_grad=True)
    g, = torch.autograd.grad(SF.aslp_weight(w, s, rng=RNG).sum(), s, create_graph=True)
    plain, = torch.autograd.grad(SF.aslp_weight(w, s, rng=RNG).sum(), s)
    torch.testing.assert_close(g, plain)


# ---- a meta tensor among CPU arguments

W, S, X = torch.randn(4, 5), torch.randn(4, 5), torch.randn(3, 5)


@pytest.mark.parametrize("call", [
    lambda: ops.masked_linear(X, W, S, torch.zeros(4, device=META), None, "aslp", "none", 1.0,
                              1.0, RNG),
    lambda: ops.masked_linear(X, W, S, None, None, "aslp", "none", 1.0, 1.0, RNG.to(META)),
    lambda: ops.masked_weight(W, S, None, "supermask", "none", 1.0, 1.0, RNG.to(META)),
    lambda: torch.ops.sparseprune.masked_weight_backward(
        torch.ones(4, 5, device=META), W, S, None, "aslp", "none", 1.0, 1.0, RNG,
        [True, True, False]),
    lambda: ops.hard_concrete_sample(W, 2 / 3, -0.1, 1.1, RNG.to(META)),
    lambda: ops.sparse_linear(X, *(t.to(META) if i == 0 else t for i, t in enumerate(
        formats.compress(W, "csr"))), None, "csr", (4, 5)),
])
def test_meta_tensor_among_cpu_arguments_is_refused(call):
    with pytest.raises(ValueError, match="(must be on the same device|rng must be)"):
        call()


# ---- NaN: the same checks forward and backward, for every learned parameter

@pytest.mark.parametrize("method", ["aslp", "supermask", "edge_popup"])
def test_backward_op_refuses_nan_scores_as_forward_does(method):
    s = S.clone()
    s[1, 2] = math.nan
    with pytest.raises(ValueError, match="masked_weight_backward: scores contain NaN"):
        torch.ops.sparseprune.masked_weight_backward(
            torch.ones(4, 5), W, s, None, method, "none", 1.0,
            0.5 if method == "edge_popup" else 1.0, RNG, [True, True, False])


def test_nan_t_log_alpha_and_scale_are_refused():
    with pytest.raises(ValueError, match="reparam_weight: t is NaN"):
        SF.reparam_weight(W, torch.tensor([math.nan]))
    la = S.clone()
    la[0, 0] = math.nan
    with pytest.raises(ValueError, match="hard_concrete_sample: log_alpha contain NaN"):
        SF.hard_concrete_sample(la, rng=RNG)
    with pytest.raises(ValueError, match="scale is NaN"):
        SF.aslp_weight(W, S, torch.tensor([math.nan]), rng=RNG)


# ---- temperatures: every accepted one gives the float64 gradient

@pytest.mark.parametrize("tau", [1e-39, 1e-38, 1e-4, 0.0009999])
def test_temperatures_below_the_bound_are_refused(tau):
    with pytest.raises(ValueError, match=r"temperature must be a finite number in \[0.001, 1e\+30\]"):
        SF.aslp_weight(W, S, temperature=tau)
    with pytest.raises(ValueError, match="sparseprune::masked_weight: temperature"):
        ops.masked_weight(W, S, None, "aslp", "none", tau, 1.0, RNG)


@pytest.mark.parametrize("tau", [1e-3, 1e-2, 1.0, 1e3, 1e30])
def test_accepted_temperatures_give_the_float64_gradient(tau):
    torch.manual_seed(1)
    w, s = torch.randn(64, 64), torch.randn(64, 64, requires_grad=True)
    rng = rng_state(5, 6)
    SF.aslp_weight(w, s, temperature=tau, rng=rng).sum().backward()
    noise = reference.logistic_noise(w.numel(), 5, 6).reshape(w.shape)
    y = torch.sigmoid((s.detach().double() + noise) / tau)
    ref = w.double() * y * (1 - y) / tau
    scale = max(1.0, float(ref.abs().max()))
    assert torch.isfinite(s.grad).all()
    torch.testing.assert_close(s.grad.double(), ref, rtol=1e-2, atol=1e-3 * scale)


# ---- hard-concrete: the exact density's report matches what finalize keeps

def test_hard_concrete_final_density_report_matches_finalize():
    model = nn.Sequential(nn.Linear(20, 10))
    sp.convert(model, "hard_concrete")
    with torch.no_grad():
        model[0].log_alpha.fill_(-5.0)  # test-time gate 0
        model[0].log_alpha[:2] = 3.0
    report = sp.budget.final_densities(model, 1.0)
    with pytest.warns(UserWarning, match="selects 200 weights but 40 stay nonzero"):
        final = sp.finalize(copy.deepcopy(model), density=1.0)
    kept = int(torch.count_nonzero(final[0].weight)) / final[0].weight.numel()
    assert report["exact"] == kept == 0.2


# ---- errors that named ATen internals

@pytest.mark.parametrize("method", ["aslp", "supermask"])
def test_zero_width_layers_train(method):
    model = nn.Sequential(nn.Linear(0, 4))
    sp.convert(model, method)
    x = torch.randn(3, 0, requires_grad=True)
    model(x).sum().backward()
    assert x.grad.shape == (3, 0) and model[0].scores.grad.shape == (4, 0)


@pytest.mark.parametrize("shape", [(3, 5), (2, 4), (12,), (3, 4, 1)])
def test_linear_backward_names_a_bad_grad_output(shape):
    with pytest.raises(ValueError, match=r"masked_linear_backward: grad_output must have the "
                                         r"forward output's shape \[3, 4\]"):
        torch.ops.sparseprune.masked_linear_backward(
            torch.ones(shape), X, W, S, None, "aslp", "none", 1.0, 1.0, RNG,
            [True, True, True, True, False])


def test_conv2d_backward_names_a_bad_grad_output():
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    with pytest.raises(ValueError, match=r"grad_output must have the forward output's shape "
                                         r"\[1, 3, 3, 3\]"):
        torch.ops.sparseprune.masked_conv2d_backward(
            torch.ones(1, 3, 4, 4), x, w, w.clone(), None, [1, 1], [0, 0], [1, 1], 1, "aslp",
            "none", 1.0, 1.0, RNG, [True, True, True, True, False])


@pytest.mark.parametrize("numel", [2**61, 2**63 - 1, -1])
def test_philox_bits_range(numel):
    with pytest.raises(ValueError, match=r"philox_bits: numel must be in \[0, 2\^61\)"):
        ops.philox_bits(numel, 0, 0)


# ---- the oracle

@pytest.mark.parametrize("value", [math.inf, -math.inf])
def test_reference_edge_popup_takes_infinite_scores(value):
    s = S.clone().requires_grad_(True)
    with torch.no_grad():
        s[0, 0] = value
    out = reference.edge_popup_weight(W, s, density=0.5)
    assert torch.isfinite(out).all() and out[0, 0] == W[0, 0]
    out.sum().backward()
    torch.testing.assert_close(s.grad, torch.sign(s.detach()) * W)


def test_reference_one_element_scale_and_t_keep_the_shape():
    assert reference.aslp_weight(torch.randn(5), torch.randn(5), torch.ones(1, 1)).shape == (5,)
    assert reference.reparam_weight(torch.randn(5), torch.ones(1, 1)).shape == (5,)
    with pytest.raises(ValueError, match="scale must hold exactly one element"):
        reference.aslp_weight(torch.randn(5), torch.randn(5), torch.ones(2))
