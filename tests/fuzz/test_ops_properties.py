"""Property-based tests (hypothesis) over the public ops: random shapes, strides, dtypes and values
(±inf and NaN included), malformed sparse structures and gradient shapes. Every case either
computes what the reference computes or raises a clear ValueError / TypeError naming the problem;
calls that could crash run in a crash-guarded worker (fuzz.guard), so a segfault fails the case.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from sparseprune.ops import formats
from sparseprune.ops.rng import rng_state

pytestmark = pytest.mark.fuzz

CLEAR = ("ValueError", "TypeError")
SPECIALS = (math.inf, -math.inf, math.nan)


def assert_clear(outcome, *words):
    """A crash or an exception other than a clear ValueError / TypeError fails."""
    assert outcome[0] != "crash", f"crashed (exit {outcome[1]}): {outcome[2]}"
    if outcome[0] == "raise":
        kind, message = outcome[1], outcome[2]
        assert kind in CLEAR, f"{kind}: {message}"
        assert message.startswith("sparseprune::") or any(w in message for w in words), message


@st.composite
def tensors(draw, shape, dtype=torch.float32, specials=True):
    n = math.prod(shape)
    values = draw(st.lists(st.floats(-4, 4, width=32), min_size=n, max_size=n))
    t = torch.tensor(values, dtype=torch.float64).reshape(shape)
    if specials and n and draw(st.booleans()):
        t.view(-1)[draw(st.integers(0, n - 1))] = draw(st.sampled_from(SPECIALS))
    return t.to(dtype)


def structurally_valid(values, row_ptr, indices, format, rows, cols):
    """The conditions the sparse ops check (csrc/host/sparse_weight.cpp), in Python."""
    rp = row_ptr.tolist()
    if rp[0] != 0 or rp[-1] != values.numel() or any(b < a for a, b in zip(rp, rp[1:])):
        return False
    if format == "csr":
        return values.numel() == 0 or (int(indices.min()) >= 0 and int(indices.max()) < cols)
    bits = formats.bitmap_mask(indices, indices.shape[1] * 32)
    return not bits[:, cols:].any() and bits.sum(1).tolist() == [b - a for a, b in zip(rp, rp[1:])]


@st.composite
def compressed(draw, rows, cols, format):
    weight = torch.randn(rows, cols, generator=torch.Generator().manual_seed(draw(st.integers(0, 99))))
    weight[torch.rand(rows, cols, generator=torch.Generator().manual_seed(1)) > draw(
        st.floats(0.0, 1.0))] = 0
    values, row_ptr, indices = (t.clone() for t in formats.compress(weight, format))
    corruption = draw(st.sampled_from(["none", "index", "row_ptr", "bits"]))
    if corruption == "index" and indices.numel():
        indices.view(-1)[draw(st.integers(0, indices.numel() - 1))] = draw(
            st.sampled_from([-1, cols, cols + 31, 2**30, -2**31]))
    elif corruption == "row_ptr":
        row_ptr[draw(st.integers(0, rows))] = draw(st.integers(-3, values.numel() + 3))
    elif corruption == "bits" and indices.numel() and format == "bitmap":
        indices.view(-1)[draw(st.integers(0, indices.numel() - 1))] ^= draw(
            st.sampled_from([1, 1 << 31 if False else -2**31, 1 << 7, 0x10000]))
    return weight, values, row_ptr, indices


@given(data=st.data(), rows=st.integers(0, 9), cols=st.integers(1, 70),
       batch=st.integers(0, 4), format=st.sampled_from(["csr", "bitmap"]),
       bias=st.booleans())
def test_sparse_linear_is_right_or_refuses(worker, data, rows, cols, batch, format, bias):
    weight, values, row_ptr, indices = data.draw(compressed(rows, cols, format))
    x = torch.randn(batch, cols)
    b = torch.randn(rows) if bias else None
    outcome = worker.call("fuzz.cases", "sparse_linear", x, values, row_ptr, indices, b, format,
                          (rows, cols))
    assert_clear(outcome)
    valid = structurally_valid(values, row_ptr, indices, format, rows, cols)
    assert (outcome[0] == "ok") == valid, outcome
    if valid:
        dense = formats.to_dense(values, row_ptr, indices, format, rows, cols)
        torch.testing.assert_close(outcome[1], torch.nn.functional.linear(x, dense, b),
                                   rtol=1e-4, atol=1e-4)


@given(data=st.data(), out_ch=st.integers(1, 6), in_ch=st.integers(1, 4),
       k=st.integers(1, 3), size=st.integers(1, 7), stride=st.integers(1, 3),
       padding=st.integers(0, 2), dilation=st.integers(1, 2),
       format=st.sampled_from(["csr", "bitmap"]))
def test_sparse_conv2d_is_right_or_refuses(worker, data, out_ch, in_ch, k, size, stride, padding,
                                           dilation, format):
    cols = in_ch * k * k
    weight, values, row_ptr, indices = data.draw(compressed(out_ch, cols, format))
    x = torch.randn(2, in_ch, size, size)
    outcome = worker.call("fuzz.cases", "sparse_conv2d", x, values, row_ptr, indices, format,
                          (out_ch, in_ch, k, k), (stride, stride), (padding, padding),
                          (dilation, dilation), 1)
    assert_clear(outcome, "padded input")
    valid = structurally_valid(values, row_ptr, indices, format, out_ch, cols)
    fits = size + 2 * padding >= dilation * (k - 1) + 1
    assert (outcome[0] == "ok") == (valid and fits), outcome
    if outcome[0] == "ok":
        dense = formats.to_dense(values, row_ptr, indices, format, out_ch, cols)
        ref = torch.nn.functional.conv2d(x, dense.view(out_ch, in_ch, k, k), None, stride,
                                         padding, dilation)
        torch.testing.assert_close(outcome[1], ref, rtol=1e-4, atol=1e-4)


@given(data=st.data(), batch=st.integers(0, 3), fin=st.integers(0, 9), fout=st.integers(0, 6),
       method=st.sampled_from(["aslp", "supermask", "edge_popup"]),
       dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]),
       temperature=st.one_of(st.floats(1e-3, 1e3), st.sampled_from([0.0, -1.0, 1e-6, math.inf])),
       density=st.floats(0.05, 1.0), grad_ok=st.booleans())
def test_masked_linear_forward_backward(worker, data, batch, fin, fout, method, dtype, temperature,
                                        density, grad_ok):
    x = data.draw(tensors((batch, fin), dtype))
    w = data.draw(tensors((fout, fin), dtype))
    s = data.draw(tensors((fout, fin), dtype))
    go = torch.randn((batch, fout) if grad_ok else (batch + 1, fout)).to(dtype)
    outcome = worker.call("fuzz.cases", "masked_linear_fwd_bwd", x, w, s, None, method,
                          temperature, density, rng_state(1, 2), go)
    assert_clear(outcome)
    nan_scores = bool(torch.isnan(s).any())
    bad_tau = not 1e-3 <= temperature <= 1e30
    if nan_scores or bad_tau or not grad_ok:
        assert outcome[0] == "raise", "bad input was accepted"
        return
    assert outcome[0] == "ok", outcome
    out, gx, gw, gs = outcome[1]
    assert out.shape == (batch, fout) and gx.shape == x.shape and gw.shape == w.shape
    assert gs.shape == s.shape


@given(data=st.data(), n=st.integers(1, 3), c=st.integers(1, 4), size=st.integers(1, 6),
       k=st.integers(1, 3), stride=st.integers(1, 2), padding=st.integers(0, 2),
       groups=st.sampled_from([1, 2]), method=st.sampled_from(["aslp", "edge_popup"]))
def test_masked_conv2d_forward(worker, data, n, c, size, k, stride, padding, groups, method):
    x = data.draw(tensors((n, c * groups, size, size), specials=False))
    w = data.draw(tensors((2 * groups, c, k, k), specials=False))
    s = data.draw(tensors((2 * groups, c, k, k)))
    outcome = worker.call("fuzz.cases", "masked_conv2d_fwd", x, w, s, [stride, stride],
                          [padding, padding], [1, 1], groups, method, 0.5, rng_state(3, 4))
    assert_clear(outcome, "Kernel size", "padded input")
    if outcome[0] == "ok":
        assert torch.isfinite(outcome[1]).all()


@given(data=st.data(), which=st.sampled_from(["masked_weight_backward", "masked_linear_backward",
                                              "reparam_weight_backward",
                                              "hard_concrete_sample_backward"]),
       shift=st.integers(-1, 1), meta=st.booleans())
def test_raw_backward_ops_check_their_gradient(worker, data, which, shift, meta):
    w, s = torch.randn(3, 4), torch.randn(3, 4)
    x = torch.randn(2, 4)
    shape = {"masked_linear_backward": (2, 3)}.get(which, (3, 4))
    grad = torch.randn(shape[0] + shift, shape[1])
    if meta:
        grad = grad.to("meta")
    rng = rng_state(5, 6)
    args = {
        "masked_weight_backward": (grad, w, s, None, "aslp", "none", 1.0, 1.0, rng,
                                   [True, True, False]),
        "masked_linear_backward": (grad, x, w, s, None, "aslp", "none", 1.0, 1.0, rng,
                                   [True, True, True, True, False]),
        "reparam_weight_backward": (grad, None, w, torch.ones(1), 4, [True, True]),
        "hard_concrete_sample_backward": (grad, w, 2 / 3, -0.1, 1.1, rng, [True]),
    }[which]
    outcome = worker.call("fuzz.cases", "raw_backward", which, args)
    assert_clear(outcome, "grad")
    assert (outcome[0] == "ok") == (shift == 0 and not meta), outcome


@given(data=st.data(), power=st.integers(-1, 70), t=st.sampled_from([0.0, 1.0, 100.0, math.nan,
                                                                     math.inf, -5.0]))
def test_reparam_weight(worker, data, power, t):
    w = data.draw(tensors((5, 3)))
    outcome = worker.call("fuzz.cases", "reparam", w, torch.tensor([t]), power)
    assert_clear(outcome)
    if math.isnan(t) or not 1 <= power <= 64:
        assert outcome[0] == "raise"
    elif outcome[0] == "ok" and torch.isfinite(w).all() and math.isfinite(t):
        assert torch.isfinite(outcome[1][0]).all()


@given(data=st.data())
def test_hard_concrete_sample(worker, data):
    la = data.draw(tensors((4, 5)))
    outcome = worker.call("fuzz.cases", "hard_concrete", la, rng_state(7, 8))
    assert_clear(outcome)
    if torch.isnan(la).any():
        assert outcome[0] == "raise"
    else:
        z = outcome[1][0]
        assert ((z >= 0) & (z <= 1)).all()
