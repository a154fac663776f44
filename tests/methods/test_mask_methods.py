"""Supermask (with DWR or Smart Rescale), ASLP with DWR, and Edge-Popup: kernels against the
pure-PyTorch reference, exact top-k counts and tie order, keep-rate statistics."""

import math
import zlib

import pytest
import torch

from sparseprune import functional as F
from sparseprune import ops
from sparseprune import reference as R
from sparseprune.ops.rng import next_rng, rng_state

from helpers import check_against_reference, noise_like, tols

SHAPES = [(1,), (7,), (1031,), (33, 65), (4, 3, 5, 5)]
DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


def seed_for(*key) -> int:
    return zlib.crc32(repr(key).encode()) % 1000


def near_supermask_boundary(scores: torch.Tensor, seed: int) -> torch.Tensor:
    rng = next_rng(torch.Generator().manual_seed(seed))
    return (scores.double() - noise_like(scores, rng)).abs() < 1e-5


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rescale", [None, "smart", "dwr"])
def test_supermask_matches_reference(isa, shape, dtype, rescale):
    seed = seed_for(shape, dtype, rescale)
    weight = torch.randn(shape, dtype=torch.float64).to(dtype).requires_grad_()
    scores = (torch.randn(shape) * 1.5).requires_grad_()
    scale = torch.tensor([1.3], requires_grad=True) if rescale == "smart" else None
    g1, g2 = (torch.Generator().manual_seed(seed) for _ in range(2))
    out = F.supermask_weight(weight, scores, scale, rescale=rescale, generator=g1)
    ref = R.supermask_weight(weight.double(), scores.double(), scale, rescale=rescale, generator=g2)
    if near_supermask_boundary(scores, seed).any():
        pytest.skip("a score sits on the decision boundary for this draw")
    low = dtype if dtype != torch.float64 else torch.float32
    torch.testing.assert_close(out.double(), ref.double(), **tols(low))
    grad = torch.randn(shape, dtype=torch.float64).to(dtype)
    inputs = [t for t in (weight, scores, scale) if t is not None]
    for got, want in zip(torch.autograd.grad(out, inputs, grad),
                         torch.autograd.grad(ref, inputs, grad.double())):
        torch.testing.assert_close(got.double(), want.double(), **tols(low))


@pytest.mark.parametrize("shape", [(7,), (33, 65)])
def test_aslp_dwr_matches_reference(isa, shape):
    weight = torch.randn(shape, requires_grad=True)
    scores = torch.randn(shape, requires_grad=True)
    g1, g2 = (torch.Generator().manual_seed(3) for _ in range(2))
    out = F.aslp_weight(weight, scores, rescale="dwr", temperature=0.6, generator=g1)
    ref = R.aslp_weight(weight.double(), scores.double(), rescale="dwr", temperature=0.6,
                        generator=g2)
    torch.testing.assert_close(out.double(), ref, **tols(torch.float32))
    grad = torch.randn(shape)
    for got, want in zip(torch.autograd.grad(out, (weight, scores), grad),
                         torch.autograd.grad(ref, (weight, scores), grad.double())):
        torch.testing.assert_close(got.double(), want.double(), **tols(torch.float32))


def test_dwr_with_an_empty_sample_gives_zeros_not_nan():
    weight, scores = torch.randn(10, 10), torch.full((10, 10), -60.0, requires_grad=True)
    out = F.supermask_weight(weight, scores, rescale="dwr")
    assert torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    assert torch.isfinite(scores.grad).all()


@pytest.mark.parametrize("shape", SHAPES + [(128, 130)])
@pytest.mark.parametrize("density", [1.0, 0.5, 0.1, 0.013, 1e-9])
@pytest.mark.parametrize("dtype", DTYPES)
def test_edge_popup_matches_reference(isa, shape, density, dtype):
    weight = torch.randn(shape).to(dtype).requires_grad_()
    scores = torch.randn(shape).to(dtype).requires_grad_()
    out = F.edge_popup_weight(weight, scores, density=density)
    ref = R.edge_popup_weight(weight, scores, density=density)
    assert torch.equal(out, ref)  # exact: the same weights, kept or zeroed
    assert int((out != 0).sum()) == round(density * weight.numel())
    grad = torch.randn(shape).to(dtype)
    for got, want in zip(torch.autograd.grad(out, (weight, scores), grad),
                         torch.autograd.grad(ref, (weight, scores), grad)):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("numel", [50, 4096 * 3 + 5])
def test_edge_popup_ties_keep_the_first_in_index_order(isa, numel):
    # Only three magnitudes, so the threshold falls inside a run of ties spread over tiles.
    g = torch.Generator().manual_seed(1)
    scores = torch.tensor([-2.0, 1.0, 3.0])[torch.randint(0, 3, (numel,), generator=g)]
    weight = torch.arange(1, numel + 1, dtype=torch.float32)
    for density in (0.1, 0.37, 0.5, 0.9):
        k = round(density * numel)
        kept = F.edge_popup_weight(weight, scores, density=density) != 0
        assert int(kept.sum()) == k
        order = sorted(range(numel), key=lambda i: (-abs(float(scores[i])), i))
        expected = torch.zeros(numel, dtype=torch.bool)
        expected[order[:k]] = True
        assert torch.equal(kept, expected)


@pytest.mark.parametrize("logit", [-2.0, 0.0, 1.0, 3.0])
def test_supermask_keep_rate_is_sigmoid_of_scores(isa, logit):
    n = 400_000
    kept = F.supermask_weight(torch.ones(n), torch.full((n,), logit)) != 0
    p = 1 / (1 + math.exp(-logit))
    assert abs(kept.double().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / n)


def test_supermask_and_aslp_share_the_noise_with_opposite_signs():
    # u < sigmoid(s) and s + L > 0 are the same event for the mirrored noise: with scores 0 the
    # two methods keep complementary halves of one draw.
    rng = rng_state(8, 1)
    weight, scores = torch.ones(10_000), torch.zeros(10_000)
    aslp = ops.masked_weight(weight, scores, None, "aslp", "none", 1.0, 1.0, rng) != 0
    supermask = ops.masked_weight(weight, scores, None, "supermask", "none", 1.0, 1.0, rng) != 0
    assert torch.equal(aslp, ~supermask)


CONFIGS = [("supermask", "dwr", None), ("supermask", None, None), ("aslp", "dwr", None),
           ("edge_popup", None, 0.3)]


@pytest.mark.parametrize("method,rescale,density", CONFIGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_masked_linear_each_method_matches_reference(isa, method, rescale, density, dtype):
    x = torch.randn(5, 41, dtype=dtype, requires_grad=True)
    weight = torch.randn(30, 41, dtype=dtype, requires_grad=True)
    scores = torch.randn(30, 41, requires_grad=True)
    bias = torch.randn(30, dtype=dtype, requires_grad=True)
    kw = dict(method=method, rescale=rescale, density=density)

    def fused(x, weight, scores, bias, generator):
        return F.masked_linear(x, weight, scores, bias, generator=generator, **kw)

    def ref(x, weight, scores, bias, generator):
        return R.masked_linear(x, weight, scores, bias, generator=generator, **kw)

    check_against_reference(fused, ref, (x, weight, scores, bias), 17)


@pytest.mark.parametrize("method,rescale,density", CONFIGS)
def test_masked_conv2d_each_method_matches_reference(isa, method, rescale, density):
    x = torch.randn(2, 4, 9, 9, requires_grad=True)
    weight = torch.randn(6, 2, 3, 3, requires_grad=True)
    scores = torch.randn(6, 2, 3, 3, requires_grad=True)
    bias = torch.randn(6, requires_grad=True)
    kw = dict(method=method, rescale=rescale, density=density)

    def fused(x, weight, scores, bias, generator):
        return F.masked_conv2d(x, weight, scores, bias, 1, 1, 1, 2, generator=generator, **kw)

    def ref(x, weight, scores, bias, generator):
        return R.masked_conv2d(x, weight, scores, bias, 1, 1, 1, 2, generator=generator, **kw)

    check_against_reference(fused, ref, (x, weight, scores, bias), 5)


def test_seed_paper_code_paths_agree_in_distribution():
    n = 200_000
    weight, scores = torch.ones(n), torch.full((n,), 0.8)
    p = 1 / (1 + math.exp(-0.8))
    kept = (R.bernoulli_dwr_weight(weight, scores, dwr=False) != 0).double().mean().item()
    assert abs(kept - p) < 5 * math.sqrt(p * (1 - p) / n)
    top = R.kthvalue_weight(torch.ones(1000), torch.randn(1000), density=0.25)
    assert int((top != 0).sum()) == 250
