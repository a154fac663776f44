"""The fused N:M kernels (nm_gumbel, nm_topk, srste) against the pure-PyTorch oracle at the same
noise: forward masks and values, logit / score / weight / Smart Rescale gradients, every dtype and
CPU ISA, bit-identity across ISAs, Gumbel-max statistics, float64 gradcheck of the soft mode,
opcheck, and bad input."""

import math
import zlib

import pytest
import torch

import sparseprune as sp
from sparseprune import _validate
from sparseprune import functional as F
from sparseprune import ops
from sparseprune import reference as R
from sparseprune.ops.rng import next_rng, rng_state, seed_offset
from sparseprune.select import is_nm, nm_candidates, nm_groups

from conftest import run_on_each_isa
from helpers import tols

# (weight shape, pattern): odd group counts, conv weights (groups of input channels at each tap),
# sub-block and tile tails (64 and 256 groups).
CASES = [((8, 16), "2:4"), ((33, 64), "2:4"), ((5, 24), "4:8"), ((7, 6), "1:3"),
         ((3, 10), "3:5"), ((4, 8, 3, 3), "2:4"), ((301, 8), "2:4"), ((17, 16), "4:8"),
         ((2, 14), "6:7")]
FLOATS = [torch.float32, torch.bfloat16, torch.float16]


def case_seed(*key) -> int:
    return zlib.crc32(repr(key).encode()) % 1000


def logits_for(shape, pattern, dtype=torch.float32, scale=0.7):
    n, m = _validate.pattern(pattern)
    groups = math.prod(shape) // m
    return (torch.randn(groups, math.comb(m, n), dtype=torch.float64) * scale).to(dtype)


def near_ties(weight, logits, pattern, rng, kappa, eps=1e-4):
    """Groups whose two best perturbed logits are within eps (kernel and oracle may differ)."""
    n, m = (int(v) for v in pattern.split(":"))
    noise = R.nm_gumbel_noise(logits.shape[0], logits.shape[1], *seed_offset(rng))
    a = kappa * logits.double() + noise
    top2 = a.topk(min(2, a.shape[1]), dim=1).values
    return (top2[:, 0] - top2[:, -1]).abs() < eps if a.shape[1] > 1 else torch.zeros(
        a.shape[0], dtype=torch.bool)


def weight_rows_ok(weight, pattern, bad_groups):
    """A weight-shaped bool: False on the elements of the groups in bad_groups."""
    m = int(pattern.split(":")[1])
    ok = (~bad_groups).unsqueeze(1).expand(-1, m)
    return sp.select.nm_ungroup(ok, weight.shape)


# Tolerances: values and weight gradients round to the weight's dtype (the math runs in float32,
# float64 when either dtype is float64; the noise is float32 in every case, the oracle's float64);
# logit gradients to the logits' dtype.
VALUE_TOL = {torch.float64: dict(rtol=1e-6, atol=1e-6), torch.float32: dict(rtol=2e-5, atol=2e-5),
             torch.bfloat16: dict(rtol=1e-2, atol=1e-2), torch.float16: dict(rtol=2e-3, atol=2e-3)}
LOGIT_TOL = {torch.float64: dict(rtol=1e-5, atol=1e-5), torch.float32: dict(rtol=1e-4, atol=1e-4),
             torch.bfloat16: dict(rtol=2e-2, atol=2e-2), torch.float16: dict(rtol=3e-3, atol=3e-3)}


@pytest.mark.parametrize("shape,pattern", CASES, ids=str)
@pytest.mark.parametrize("hard", [True, False])
@pytest.mark.parametrize("score_dtype", FLOATS)
@pytest.mark.parametrize("weight_dtype", FLOATS + [torch.float64])
def test_nm_gumbel_matches_reference(isa, shape, pattern, hard, score_dtype, weight_dtype):
    seed = case_seed(shape, pattern, hard, score_dtype, weight_dtype)
    weight = torch.randn(shape, dtype=torch.float64).to(weight_dtype).requires_grad_()
    logits = logits_for(shape, pattern, score_dtype).requires_grad_()
    scale = torch.tensor([1.3]).requires_grad_()
    kappa, tau = 2.5, 0.8
    gens = [torch.Generator().manual_seed(seed) for _ in range(3)]
    out = F.nm_gumbel_weight(weight, logits, scale, pattern=pattern, temperature=tau,
                             logit_scale=kappa, hard=hard, generator=gens[0])
    # The oracle in float64 from the same inputs (float64 Philox noise of the same draw).
    w64, l64, s64 = (t.detach().double().requires_grad_() for t in (weight, logits, scale))
    ref = R.nm_gumbel_weight(w64, l64, s64, pattern=pattern, temperature=tau, logit_scale=kappa,
                             hard=hard, generator=gens[1])
    ties = near_ties(weight, logits, pattern, next_rng(gens[2]), kappa)
    ok = weight_rows_ok(weight, pattern, ties)
    assert out.dtype == weight_dtype and out.shape == weight.shape and out.is_contiguous()
    torch.testing.assert_close(out.double()[ok], ref.detach()[ok], **VALUE_TOL[weight_dtype])
    if hard:
        n, m = (int(v) for v in pattern.split(":"))
        assert torch.equal((out != 0)[ok], (ref != 0)[ok])
        assert is_nm(out.detach() != 0, n, m)
    grad = torch.randn(shape, dtype=torch.float64).to(weight_dtype)
    got = torch.autograd.grad(out, (weight, logits, scale), grad)
    want = torch.autograd.grad(ref, (w64, l64, s64), grad.double())
    torch.testing.assert_close(got[0].double()[ok], want[0][ok], **VALUE_TOL[weight_dtype])
    bad = ties.unsqueeze(1).expand_as(logits)
    math_dtype = torch.float64 if weight_dtype == torch.float64 else torch.float32
    low = max((score_dtype, math_dtype), key=lambda d: LOGIT_TOL[d]["rtol"])
    if weight_dtype in (torch.bfloat16, torch.float16):
        low = max((low, weight_dtype), key=lambda d: LOGIT_TOL[d]["rtol"])
    scale_of = float(want[1].abs().max()) + 1e-12
    tol = LOGIT_TOL[low]
    torch.testing.assert_close(got[1].double()[~bad], want[1][~bad], rtol=tol["rtol"],
                               atol=tol["atol"] * scale_of)
    skipped = (grad.double().abs() * weight.detach().double().abs())[~ok].sum()
    torch.testing.assert_close(got[2].double(), want[2], rtol=1e-5,
                               atol=1e-4 * float(want[2].abs()) + float(skipped))


@pytest.mark.parametrize("shape,pattern", CASES, ids=str)
def test_nm_gumbel_is_bit_identical_on_every_isa(shape, pattern):
    weight = torch.randn(shape)
    logits = logits_for(shape, pattern)
    scale = torch.tensor([0.9])
    grad = torch.randn(shape)
    rng = rng_state(123456789012345, 77)

    def run(hard):
        w, s, sc = (t.clone().requires_grad_() for t in (weight, logits, scale))
        out = F.nm_gumbel_weight(w, s, sc, pattern=pattern, temperature=0.6, logit_scale=3.0,
                                 hard=hard, rng=rng)
        out.backward(grad)
        return [out.detach(), w.grad, s.grad, sc.grad]

    for hard in (True, False):
        results = run_on_each_isa(lambda: run(hard))
        base = results["scalar"]
        for isa, got in results.items():
            for a, b in zip(base, got):
                assert torch.equal(a.view(torch.int32), b.view(torch.int32)), (isa, hard)


def test_hard_masks_keep_exactly_n_of_every_m():
    for shape, pattern in CASES:
        n, m = (int(v) for v in pattern.split(":"))
        weight = torch.randn(shape).abs() + 0.1  # no zero weights: nonzeros are the mask
        out = F.nm_gumbel_weight(weight, logits_for(shape, pattern), pattern=pattern,
                                 logit_scale=5.0)
        assert is_nm(out != 0, n, m), (shape, pattern)


def test_temperature_only_changes_the_gradient():
    weight, logits = torch.randn(64, 32), logits_for((64, 32), "2:4").requires_grad_()
    rng = rng_state(5, 9)
    a = F.nm_gumbel_weight(weight, logits, temperature=0.1, logit_scale=2.0, rng=rng)
    b = F.nm_gumbel_weight(weight, logits, temperature=3.0, logit_scale=2.0, rng=rng)
    assert torch.equal(a, b)
    ga = torch.autograd.grad(a.sum(), logits)[0]
    gb = torch.autograd.grad(b.sum(), logits)[0]
    assert not torch.equal(ga, gb)


@pytest.mark.parametrize("pattern", ["2:4", "1:4", "3:5"])
def test_gumbel_max_with_equal_logits_draws_every_candidate_uniformly(pattern):
    n, m = (int(v) for v in pattern.split(":"))
    c = math.comb(m, n)
    groups = 20_000
    weight = torch.ones(groups, m)
    logits = torch.zeros(groups, c)
    out = F.nm_gumbel_weight(weight, logits, pattern=pattern, rng=rng_state(11, 0))
    counts = _candidate_counts(out, n, m)
    _chi_square_ok(counts, torch.full((c,), 1.0 / c), groups)


def test_gumbel_max_frequencies_match_the_softmax():
    n, m, c = 2, 4, 6
    row = torch.tensor([0.3, -0.5, 1.1, 0.0, -1.2, 0.6])
    kappa, groups = 1.7, 30_000
    logits = row.repeat(groups, 1)
    out = F.nm_gumbel_weight(torch.ones(groups, m), logits, pattern="2:4", logit_scale=kappa,
                             rng=rng_state(2024, 3))
    counts = _candidate_counts(out, n, m)
    _chi_square_ok(counts, torch.softmax(kappa * row.double(), 0), groups)


def _candidate_counts(out, n, m):
    patterns = nm_candidates(n, m).bool()
    kept = out != 0
    index = (kept.unsqueeze(1) == patterns.unsqueeze(0)).all(-1).double().argmax(1)
    assert bool((kept.unsqueeze(1) == patterns.unsqueeze(0)).all(-1).any(1).all())
    return torch.bincount(index, minlength=patterns.shape[0]).double()


def _chi_square_ok(counts, probs, n):
    """Pearson's chi-square against `probs`; the bound is the mean plus 6 standard deviations of
    a chi-square with C - 1 degrees of freedom (a false failure well below 1e-6)."""
    expected = probs.double() * n
    stat = float(((counts - expected) ** 2 / expected).sum())
    dof = len(probs) - 1
    assert stat < dof + 6 * math.sqrt(2 * dof), (stat, counts, expected)


def test_soft_mode_gradcheck_in_float64():
    torch.manual_seed(3)
    for shape, pattern in [((3, 8), "2:4"), ((2, 6), "2:3"), ((2, 3, 1, 2), "1:3")]:
        weight = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        logits = logits_for(shape, pattern, torch.float64).requires_grad_()
        scale = torch.tensor([0.8], dtype=torch.float32, requires_grad=True)
        rng = rng_state(99, 1)

        def fn(w, s):
            return F.nm_gumbel_weight(w, s, pattern=pattern, temperature=0.7, logit_scale=1.5,
                                      hard=False, rng=rng)
        assert torch.autograd.gradcheck(fn, (weight, logits))
        # The scale's gradient (float32 scalar) against finite differences of the float64 path.
        out = F.nm_gumbel_weight(weight.detach(), logits.detach(), scale, pattern=pattern,
                                 temperature=0.7, logit_scale=1.5, hard=False, rng=rng)
        g = torch.randn(shape, dtype=torch.float64)
        got = torch.autograd.grad(out, scale, g)[0]
        base = F.nm_gumbel_weight(weight.detach(), logits.detach(), pattern=pattern,
                                  temperature=0.7, logit_scale=1.5, hard=False, rng=rng)
        torch.testing.assert_close(got.double(), (g * base).sum().reshape(1), rtol=1e-5,
                                   atol=1e-6)


def test_hard_gradient_is_the_straight_through_formula():
    """dLoss/dpi_k = (kappa / tau) y_k (s_k - sum_l y_l s_l), s_k = sum of w g over P_k."""
    weight = torch.randn(6, 8, dtype=torch.float64)
    logits = logits_for((6, 8), "2:4", torch.float64).requires_grad_()
    rng = rng_state(7, 7)
    kappa, tau = 3.0, 0.5
    out = F.nm_gumbel_weight(weight, logits, pattern="2:4", temperature=tau, logit_scale=kappa,
                             rng=rng)
    g = torch.randn(6, 8, dtype=torch.float64)
    got = torch.autograd.grad(out, logits, g)[0]
    noise = R.nm_gumbel_noise(12, 6, *seed_offset(rng))
    y = torch.softmax((kappa * logits.detach() + noise) / tau, 1)
    h = nm_groups(weight * g, 4)
    s = h @ nm_candidates(2, 4).double().t()
    want = kappa / tau * y * (s - (y * s).sum(1, keepdim=True))
    # Within the float32 noise's rounding (the oracle's noise is float64).
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape,pattern", CASES, ids=str)
@pytest.mark.parametrize("dtype", FLOATS + [torch.float64])
def test_nm_topk_matches_reference(isa, shape, pattern, dtype):
    weight = torch.randn(shape, dtype=torch.float64).to(dtype).requires_grad_()
    scores = torch.randn(shape, dtype=torch.float64).to(dtype).requires_grad_()
    out = F.nm_topk_weight(weight, scores, pattern=pattern)
    ref = R.nm_topk_weight(weight.double(), scores.double(), pattern=pattern)
    assert torch.equal(out.double(), ref.detach().to(dtype).double())
    grad = torch.randn(shape, dtype=torch.float64).to(dtype)
    got = torch.autograd.grad(out, (weight, scores), grad)
    want = torch.autograd.grad(ref, (weight, scores), grad.double())
    assert torch.equal(got[0].double(), want[0].to(dtype).double())
    torch.testing.assert_close(got[1].double(), want[1].double(), **tols(dtype))


def test_top_n_of_m_ties_go_to_the_lower_index(isa):
    scores = torch.tensor([[1.0, 1.0, 1.0, 1.0, 2.0, -2.0, 2.0, 0.0, 0.0, -0.0, 0.0, 0.0]])
    weight = torch.arange(1.0, 13.0).reshape(1, 12)
    out = F.nm_topk_weight(weight, scores, pattern="2:4")
    assert out.tolist() == [[1.0, 2.0, 0, 0, 5.0, 6.0, 0, 0, 9.0, 10.0, 0, 0]]
    srste = F.srste_weight(torch.tensor([[3.0, -3.0, 3.0, 1.0]]), pattern="2:4")
    assert srste.tolist() == [[3.0, -3.0, 0.0, 0.0]]


@pytest.mark.parametrize("shape,pattern", CASES, ids=str)
@pytest.mark.parametrize("dtype", FLOATS + [torch.float64])
def test_srste_forward_and_gradient_formula(isa, shape, pattern, dtype):
    n, m = (int(v) for v in pattern.split(":"))
    weight = torch.randn(shape, dtype=torch.float64).to(dtype).requires_grad_()
    decay = 0.3
    out = F.srste_weight(weight, pattern=pattern, decay=decay)
    keep = sp.select.top_n_of_m(weight.detach().abs(), n, m)
    assert torch.equal(out, torch.where(keep, weight.detach(), torch.zeros((), dtype=dtype)))
    g = torch.randn(shape, dtype=torch.float64).to(dtype)
    got = torch.autograd.grad(out, weight, g)[0]
    w = weight.detach()
    math_dtype = torch.float64 if dtype == torch.float64 else torch.float32  # one rounding
    decayed = (g.to(math_dtype) + torch.tensor(decay, dtype=math_dtype) * w.to(math_dtype))
    want = torch.where(keep, g, decayed.to(dtype))
    torch.testing.assert_close(got.double(), want.double(), **tols(dtype))
    ref = R.srste_weight(weight.double(), pattern=pattern, decay=decay)
    want_ref = torch.autograd.grad(ref, weight, g.double())[0]
    torch.testing.assert_close(got.double(), want_ref.double(), **tols(dtype))


@pytest.mark.parametrize("method", ["nm_gumbel", "nm_topk", "srste"])
@pytest.mark.parametrize("input_shape", [(5, 16), (2, 3, 16), (16,)])
def test_nm_masked_linear_matches_reference(isa, method, input_shape):
    torch.manual_seed(case_seed(method, input_shape))
    x = torch.randn(input_shape, requires_grad=True)
    w = torch.randn(12, 16, requires_grad=True)
    b = torch.randn(12, requires_grad=True)
    scores = {"nm_gumbel": logits_for((12, 16), "2:4") * 3, "nm_topk": torch.randn(12, 16),
              "srste": None}[method]
    if scores is not None:
        scores.requires_grad_()
    opts = dict(method=method, pattern="2:4")
    if method == "nm_gumbel":
        opts.update(temperature=0.9, logit_scale=1.3)
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    out = F.masked_linear(x, w, scores, b, generator=g1, **opts)
    ref = R.masked_linear(x, w, scores, b, generator=g2, **opts)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn(out.shape)
    inputs = [t for t in (x, w, scores, b) if t is not None]
    got = torch.autograd.grad(out, inputs, grad)
    want = torch.autograd.grad(ref, inputs, grad)
    for a, c in zip(got, want):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["aslp", "edge_popup", "srste"])
def test_nm_masked_conv2d_groups_input_channels_at_each_tap(method):
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    w = torch.randn(5, 8, 3, 3, requires_grad=True)
    scores = {"aslp": logits_for((5, 8, 3, 3), "2:4") * 3, "edge_popup": torch.randn(5, 8, 3, 3),
              "srste": None}[method]
    g1, g2 = torch.Generator().manual_seed(8), torch.Generator().manual_seed(8)
    out = F.masked_conv2d(x, w, scores, None, 1, 1, method=method, pattern="2:4", generator=g1)
    ref = R.masked_conv2d(x, w, scores, None, 1, 1, method=method, pattern="2:4", generator=g2)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    masked = F.masked_weight(w, scores, method=method, pattern="2:4",
                             generator=torch.Generator().manual_seed(8))
    assert is_nm(masked != 0, 2, 4)
    per_tap = (masked != 0).permute(0, 2, 3, 1).reshape(-1, 4).sum(1)
    assert bool((per_tap == 2).all())


def test_opcheck():
    w = torch.randn(6, 8, requires_grad=True)
    logits = logits_for((6, 8), "2:4").requires_grad_()
    scale = torch.tensor([1.1], requires_grad=True)
    x = torch.randn(3, 8, requires_grad=True)
    b = torch.randn(6, requires_grad=True)
    rng = rng_state(3, 4)
    sched = torch.tensor([0.7, 2.0], dtype=torch.float64)
    one = torch.tensor([1.0, 1.0], dtype=torch.float64)
    cases = [
        (torch.ops.sparseprune.nm_masked_weight,
         (w, logits, scale, "nm_gumbel", 2, 4, sched, True, 0.0, rng)),
        (torch.ops.sparseprune.nm_masked_weight,
         (w, logits, None, "nm_gumbel", 2, 4, sched, False, 0.0, rng)),
        (torch.ops.sparseprune.nm_masked_weight,
         (w, torch.randn(6, 8, requires_grad=True), None, "nm_topk", 2, 4, one, True, 0.0, rng)),
        (torch.ops.sparseprune.nm_masked_weight,
         (w, w.new_empty(0), None, "srste", 2, 4, one, True, 2e-4, rng)),
        (torch.ops.sparseprune.nm_masked_linear,
         (x, w, logits, b, scale, "nm_gumbel", 2, 4, sched, True, 0.0, rng)),
        (torch.ops.sparseprune.nm_masked_linear,
         (x, w, w.new_empty(0), None, None, "srste", 2, 4, one, True, 2e-4, rng)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


def test_bad_input():
    w = torch.randn(4, 8)
    logits = torch.zeros(8, 6)
    with pytest.raises(ValueError, match=r"pattern must be 'N:M' with 1 <= N < M <= 8.*'4:4'"):
        F.nm_gumbel_weight(w, logits, pattern="4:4")
    with pytest.raises(ValueError, match=r"1 <= N < M <= 8.*'2:9'"):
        F.nm_gumbel_weight(w, logits, pattern="2:9")
    with pytest.raises(ValueError, match=r"'2:3:1'"):
        F.nm_topk_weight(w, w, pattern="2:3:1")
    with pytest.raises(ValueError, match=r"multiple of 3.*\[4, 8\]"):
        F.nm_topk_weight(w, w, pattern="1:3")
    with pytest.raises(ValueError, match=r"density is fixed by the pattern '2:4'"):
        F.masked_weight(w, w, method="edge_popup", pattern="2:4", density=0.5)
    with pytest.raises(ValueError, match=r"\(groups, C\(M, N\)\) = \(8, 6\).*\[8, 4\]"):
        F.nm_gumbel_weight(w, torch.zeros(8, 4))
    with pytest.raises(ValueError, match=r"pattern applies to aslp, edge_popup and .*supermask"):
        F.masked_weight(w, w, method="supermask", pattern="2:4")
    with pytest.raises(ValueError, match="rescale applies to nm_gumbel"):
        F.masked_weight(w, w, torch.ones(1), method="nm_topk", pattern="2:4")
    with pytest.raises(ValueError, match="decay applies to srste"):
        F.masked_weight(w, w, method="nm_topk", pattern="2:4", decay=0.1)
    with pytest.raises(ValueError, match="logit_scale must be a finite number > 0"):
        F.nm_gumbel_weight(w, logits, logit_scale=0.0)
    with pytest.raises(ValueError, match="scores contain NaN"):
        F.nm_gumbel_weight(w, torch.full((8, 6), float("nan")))
    with pytest.raises(ValueError, match="scores contain NaN"):
        F.nm_topk_weight(w, torch.full((4, 8), float("nan")))
    with pytest.raises(ValueError, match="weight contains NaN"):
        F.srste_weight(torch.full((4, 8), float("nan")))
    # The raw op says the same about M > 8 and N >= M.
    with pytest.raises(ValueError, match=r"1 <= N < M <= 8.*got 2:9"):
        ops.nm_masked_weight(w, logits, None, "nm_gumbel", 2, 9,
                             torch.tensor([1.0, 1.0], dtype=torch.float64), True, 0.0,
                             rng_state(0, 0))
    with pytest.raises(ValueError, match="schedule must be a contiguous CPU float64 tensor"):
        ops.nm_masked_weight(w, logits, None, "nm_gumbel", 2, 4, torch.ones(2), True, 0.0,
                             rng_state(0, 0))


def test_empty_and_non_contiguous_inputs(isa):
    empty = F.nm_gumbel_weight(torch.zeros(0, 8), torch.zeros(0, 6), pattern="2:4")
    assert empty.shape == (0, 8)
    base = torch.randn(16, 12)
    w = base.t()  # (12, 16), not contiguous
    logits = logits_for((12, 16), "2:4")
    rng = rng_state(1, 2)
    a = F.nm_gumbel_weight(w, logits, rng=rng)
    b = F.nm_gumbel_weight(w.contiguous(), logits, rng=rng)
    assert torch.equal(a, b)


@pytest.mark.parametrize("op,method", [("nm_masked_weight", "nm_gumbel"),
                                       ("nm_masked_linear", "srste")])
def test_double_backward_raises_clearly(op, method):
    """The fused backward has no derivatives of its own: a second backward is an error naming the
    op, never a silently wrong value (as the other fused ops, tests/ops/test_hardening.py)."""
    w = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    x = torch.randn(3, 8, dtype=torch.float64)
    if op == "nm_masked_weight":
        out = F.nm_gumbel_weight(w, logits_for((6, 8), "2:4"), rng=rng_state(1, 2))
    else:
        out = F.masked_linear(x, w, None, method=method, pattern="2:4")
    g, = torch.autograd.grad(out.square().sum(), w, create_graph=True)
    with pytest.raises(RuntimeError, match=f"sparseprune::{op} does not support double backward"):
        torch.autograd.grad(g.square().sum(), w)
