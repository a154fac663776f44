"""The fused hard-concrete op: gates and pathwise gradient against autograd on the reference at the
same noise (every dtype, shapes with partial chunks, every ISA), gradcheck, bit-identity across
ISAs, nothing saved but log_alpha and rng, opcheck, torch.compile and bad input. The sample's
distribution is tested in test_hard_concrete.py."""

import copy

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck

import sparseprune as sp
from sparseprune import functional as F
from sparseprune import ops, reference
from sparseprune.ops.rng import rng_state, seed_offset

from conftest import run_on_each_isa
from helpers import assert_matches_truth, tols

BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
# Odd sizes (partial chunks and Philox blocks), several tiles, 4-D, empty.
SHAPES = [(1,), (7, 9), (37, 211), (3, 5, 4, 4), (4096 * 2 + 65,), (0,), (0, 3)]
RNG = rng_state(1234, 56)


def kernel_noise(log_alpha, rng):
    """The float32 logistic noise the op draws for log_alpha (its own log, the same bits on every
    ISA), so the reference can be evaluated at exactly the op's noise."""
    seed, offset = seed_offset(rng)
    return ops.logistic_noise(log_alpha.numel(), seed, offset).reshape(log_alpha.shape)


def random_log_alpha(shape, dtype):
    # Spread so that many gates clip at 0 and at 1 and many do not; never exact zeros.
    return (torch.randn(shape, dtype=torch.float64) * 3 + 0.1).to(dtype).requires_grad_()


def clip_margin(log_alpha, noise, eps):
    """Where the stretched value is within eps of 0 or 1 (in float64): a last-bit difference may
    clip a gate on one side and not on the other, which flips its gradient to 0."""
    s = torch.sigmoid((noise.double() + log_alpha.detach().double()) / BETA)
    a = s * (ZETA - GAMMA) + GAMMA
    return (a.abs() < eps) | ((a - 1).abs() < eps)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_reference_at_the_same_noise(isa, shape, dtype):
    log_alpha = random_log_alpha(shape, dtype)
    noise = kernel_noise(log_alpha, RNG)
    z = ops.hard_concrete_sample(log_alpha, BETA, GAMMA, ZETA, RNG)
    low = reference.hard_concrete_from_noise(log_alpha, noise)
    wide = log_alpha.detach().double().requires_grad_()
    truth = reference.hard_concrete_from_noise(wide, noise)
    assert z.dtype == dtype and z.shape == log_alpha.shape and z.is_contiguous()
    assert_matches_truth(z, low, truth, dtype)
    if z.numel() > 1000:  # every regime is exercised
        assert (z == 0).any() and (z == 1).any() and ((z > 0) & (z < 1)).any()
    g = torch.randn(shape, dtype=torch.float64).to(dtype)
    (got,) = torch.autograd.grad(z, log_alpha, g)
    (low_grad,) = torch.autograd.grad(low, log_alpha, g)
    (true_grad,) = torch.autograd.grad(truth, wide, g.double())
    assert got.dtype == dtype and got.shape == log_alpha.shape
    keep = ~clip_margin(log_alpha, noise, 1e-9 if dtype == torch.float64 else 1e-5)
    assert_matches_truth(got[keep], low_grad[keep], true_grad[keep], dtype)
    if dtype in (torch.float32, torch.float64):  # 16-bit z may round to 0 or 1 unclipped
        assert (got[z.detach() == 0] == 0).all() and (got[z.detach() == 1] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_functional_matches_reference_stream(dtype):
    # The float64 NumPy noise of the reference differs from the op's float32 noise in the last
    # bits only; the same generator draw gives the same gates.
    log_alpha = random_log_alpha((37, 211), dtype)
    z = F.hard_concrete_sample(log_alpha, generator=torch.Generator().manual_seed(3))
    ref = reference.hard_concrete_sample(log_alpha, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(z, ref, rtol=0, atol=1e-5)
    # And the PyTorch computation the functional form used before the fused op: within rounding.
    rng = sp.rng.next_rng(torch.Generator().manual_seed(3))
    noise = kernel_noise(log_alpha, rng).to(dtype)
    before = torch.clamp(torch.sigmoid((noise + log_alpha) / BETA) * (ZETA - GAMMA) + GAMMA, 0, 1)
    torch.testing.assert_close(z, before, **tols(dtype))


def test_gradcheck():
    log_alpha = random_log_alpha((6, 7), torch.float64)

    def f(la):
        return ops.hard_concrete_sample(la, BETA, GAMMA, ZETA, RNG)

    z = f(log_alpha)
    assert (z == 0).any() and (z == 1).any() and ((z > 0) & (z < 1)).any()
    assert not clip_margin(log_alpha, kernel_noise(log_alpha, RNG), 1e-4).any()
    assert gradcheck(f, (log_alpha,))


@pytest.mark.parametrize("dtype", DTYPES)
def test_identical_across_isas(dtype):
    log_alpha = random_log_alpha((37, 211), dtype)  # 7807 elements: two tiles, a partial chunk
    g = torch.randn(log_alpha.shape).to(dtype)

    def run():
        la = log_alpha.detach().clone().requires_grad_()
        z = ops.hard_concrete_sample(la, BETA, GAMMA, ZETA, RNG)
        z.backward(g)
        return z, la.grad

    results = run_on_each_isa(run)
    first = next(iter(results.values()))
    for name, res in results.items():
        for a, b in zip(first, res):
            assert torch.equal(a, b), name


def test_non_contiguous_takes_logical_order():
    log_alpha = random_log_alpha((9, 13), torch.float32).detach()
    strided = log_alpha.t()
    z = ops.hard_concrete_sample(strided, BETA, GAMMA, ZETA, RNG)
    assert torch.equal(z, ops.hard_concrete_sample(strided.contiguous(), BETA, GAMMA, ZETA, RNG))
    la = strided.clone().requires_grad_()
    g = torch.randn(9, 13).t()  # a non-contiguous gradient too
    (grad,) = torch.autograd.grad(ops.hard_concrete_sample(la, BETA, GAMMA, ZETA, RNG), la, g)
    (want,) = torch.autograd.grad(reference.hard_concrete_from_noise(la, kernel_noise(la, RNG)),
                                  la, g)
    keep = ~clip_margin(la, kernel_noise(la, RNG), 1e-5)
    torch.testing.assert_close(grad[keep], want[keep], **tols(torch.float32))


def test_saves_only_log_alpha_and_rng():
    log_alpha = random_log_alpha((64, 33), torch.float32)
    rng = rng_state(5, 6)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        z = ops.hard_concrete_sample(log_alpha, BETA, GAMMA, ZETA, rng)
    assert len(saved) == 2
    assert saved[0].data_ptr() == log_alpha.data_ptr() and torch.equal(saved[1], rng)
    z.sum().backward()
    assert log_alpha.grad is not None


def test_opcheck():
    op = torch.ops.sparseprune
    for dtype in (torch.float32, torch.float64):
        la = random_log_alpha((6, 5), dtype)
        torch.library.opcheck(op.hard_concrete_sample.default, (la, BETA, GAMMA, ZETA, RNG))
        torch.library.opcheck(op.hard_concrete_sample_backward.default,
                              (torch.randn(6, 5, dtype=dtype), la.detach(), 0.5, -0.2, 1.3, RNG,
                               [True]))


def test_layer_under_torch_compile():
    torch.manual_seed(0)
    model = sp.convert(nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3)),
                       "hard_concrete")
    for _, layer in sp.masked_layers(model):
        with torch.no_grad():
            layer.log_alpha.normal_(0.0, 2.0)
    x = torch.randn(5, 12)

    def step(wrap):
        twin = copy.deepcopy(model)  # both start at the same point of the layers' noise streams
        out = wrap(twin)(x)
        out.square().sum().backward()
        return out, [p.grad.clone() for p in twin.parameters()]

    eager_out, eager_grads = step(lambda m: m)
    compiled_out, compiled_grads = step(torch.compile)
    torch.testing.assert_close(compiled_out, eager_out)
    for a, b in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("call,error,pattern", [
    (lambda: F.hard_concrete_sample(torch.ones(3, dtype=torch.int64)), TypeError,
     "log_alpha must be float32, float64, bfloat16 or float16, got Long"),
    (lambda: F.hard_concrete_sample(torch.ones(3), beta=0.0), ValueError,
     "beta must be a finite number > 0, got 0.0"),
    (lambda: F.hard_concrete_sample(torch.ones(3), gamma=0.0), ValueError,
     "gamma must be < 0 .* got 0.0"),
    (lambda: F.hard_concrete_sample(torch.ones(3), zeta=1.0), ValueError,
     "zeta must be > 1 .* got 1.0"),
    (lambda: F.hard_concrete_sample(torch.ones(3), beta=float("nan")), ValueError,
     "beta must be a finite number > 0, got nan"),
    (lambda: ops.hard_concrete_sample(torch.ones(3), -1.0, GAMMA, ZETA, RNG), ValueError,
     "sparseprune::hard_concrete_sample: beta must be a finite number > 0, got -1"),
    (lambda: ops.hard_concrete_sample(torch.ones(3), BETA, 0.5, ZETA, RNG), ValueError,
     "gamma must be a finite number < 0 .*got 0.5"),
    (lambda: ops.hard_concrete_sample(torch.ones(3), BETA, GAMMA, 0.9, RNG), ValueError,
     "zeta must be a finite number > 1 .*got 0.9"),
    (lambda: ops.hard_concrete_sample(torch.ones(3), BETA, GAMMA, ZETA, torch.ones(2)), ValueError,
     r"rng must be a contiguous CPU int64 tensor \[seed, offset\], got Float"),
    (lambda: ops.hard_concrete_sample(torch.ones(3, dtype=torch.int32), BETA, GAMMA, ZETA, RNG),
     TypeError, "log_alpha must be float32, float64, bfloat16 or float16, got Int"),
    (lambda: torch.ops.sparseprune.hard_concrete_sample_backward(
        torch.ones(4), torch.ones(3), BETA, GAMMA, ZETA, RNG, [True]), ValueError,
     r"grad must have log_alpha's shape \[3\], got \[4\]"),
    (lambda: torch.ops.sparseprune.hard_concrete_sample_backward(
        torch.ones(3, dtype=torch.float64), torch.ones(3), BETA, GAMMA, ZETA, RNG, [True]),
     TypeError, "grad must have log_alpha's dtype Float, got Double"),
])
def test_bad_input(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()
