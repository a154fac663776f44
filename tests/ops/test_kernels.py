"""Fused kernels against the pure-PyTorch reference: forward values and every gradient, on random
inputs, odd sizes, every dtype combination, non-contiguous inputs and every CPU ISA."""

import zlib

import pytest
import torch

from sparseprune import functional as F
from sparseprune import reference as R
from sparseprune.ops.rng import next_rng

from helpers import check_against_reference, near_boundary, tols

SHAPES = [(1,), (7,), (1031,), (33, 65), (4, 3, 5, 5), (64, 48)]
FLOATS = [torch.float32, torch.bfloat16, torch.float16]


def same_draw(seed: int):
    """Two generators in the same state: functional and reference draw the same rng."""
    return torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)


def boundary_for(seed: int, scores: torch.Tensor) -> torch.Tensor:
    return near_boundary(scores, next_rng(torch.Generator().manual_seed(seed)))


def aslp_case(shape, score_dtype, weight_dtype, with_scale, temperature, seed):
    weight = torch.randn(shape, dtype=torch.float64).to(weight_dtype).requires_grad_()
    scores = (torch.randn(shape) * 1.5).to(score_dtype).requires_grad_()
    scale = torch.tensor([1.7]).requires_grad_() if with_scale else None
    g_fused, g_ref = same_draw(seed)
    out = F.aslp_weight(weight, scores, scale, temperature=temperature, generator=g_fused)
    # The reference computes in float64: the oracle, not a copy of the kernel's rounding.
    ref = R.aslp_weight(weight.double(), scores.double(), scale, temperature=temperature,
                        generator=g_ref)
    return weight, scores, scale, out, ref


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("score_dtype", FLOATS)
@pytest.mark.parametrize("weight_dtype", FLOATS + [torch.float64])
def test_aslp_weight_matches_reference(isa, shape, score_dtype, weight_dtype):
    seed = zlib.crc32(repr((shape, score_dtype, weight_dtype)).encode()) % 1000
    weight, scores, scale, out, ref = aslp_case(shape, score_dtype, weight_dtype, True, 0.7, seed)
    ok = ~boundary_for(seed, scores)
    assert out.dtype == weight_dtype and out.shape == weight.shape and out.is_contiguous()
    torch.testing.assert_close(out.double()[ok], ref[ok], **tols(weight_dtype))
    assert torch.equal((out != 0)[ok], (ref != 0)[ok])

    grad = torch.randn(shape, dtype=torch.float64).to(weight_dtype)
    got = torch.autograd.grad(out, (weight, scores, scale), grad)
    want = torch.autograd.grad(ref, (weight, scores, scale), grad.double())
    torch.testing.assert_close(got[0].double()[ok], want[0].double()[ok], **tols(weight_dtype))
    # Score gradients are accumulated in float32 (scores' own dtype on output).
    low = weight_dtype if weight_dtype in (torch.bfloat16, torch.float16) else score_dtype
    torch.testing.assert_close(got[1].double(), want[1].double(),
                               **tols(low if low != torch.float64 else torch.float32))
    skipped = (grad.double().abs() * weight.detach().double().abs())[~ok].sum()
    torch.testing.assert_close(got[2].double(), want[2].double(),
                               rtol=1e-5 if low in (torch.float32, torch.float64) else 2e-2,
                               atol=1e-5 + float(skipped))


@pytest.mark.parametrize("temperature", [0.05, 0.5, 1.0, 3.0])
def test_aslp_temperature_only_changes_the_gradient(temperature):
    torch.manual_seed(1)
    weight, scores, scale, out, ref = aslp_case((200, 30), torch.float32, torch.float32, False,
                                                temperature, 11)
    torch.manual_seed(1)
    _, _, _, out1, _ = aslp_case((200, 30), torch.float32, torch.float32, False, 1.0, 11)
    assert torch.equal(out, out1)  # the hard mask ignores the temperature
    grad = torch.randn(200, 30)
    got = torch.autograd.grad(out, scores, grad)[0]
    want = torch.autograd.grad(ref, scores, grad.double())[0]
    torch.testing.assert_close(got.double(), want.double(), rtol=1e-5, atol=1e-6)


def test_aslp_non_contiguous_inputs(isa):
    base_w, base_s = torch.randn(65, 33), torch.randn(65, 33)
    weight, scores = base_w.t(), base_s.t()  # logical (33, 65), transposed storage
    assert not weight.is_contiguous()
    g1, g2 = same_draw(4)
    out = F.aslp_weight(weight, scores, generator=g1)
    expect = F.aslp_weight(weight.contiguous(), scores.contiguous(), generator=g2)
    # Noise is indexed by the logical row-major position, whatever the memory layout.
    assert torch.equal(out, expect)
    sliced_w, sliced_s = torch.randn(40, 80)[:, ::2], torch.randn(40, 80)[:, ::2]
    g1, g2 = same_draw(5)
    assert torch.equal(F.aslp_weight(sliced_w, sliced_s, generator=g1),
                       F.aslp_weight(sliced_w.contiguous(), sliced_s.contiguous(), generator=g2))


def test_aslp_weight_leaves_inputs_unchanged():
    weight, scores, scale = torch.randn(50, 20), torch.randn(50, 20), torch.tensor([2.0])
    copies = [t.clone() for t in (weight, scores, scale)]
    grad = torch.randn(50, 20)
    grad_copy = grad.clone()
    w, s, sc = (t.clone().requires_grad_() for t in (weight, scores, scale))
    F.aslp_weight(w, s, sc).backward(grad)
    for before, after in zip(copies, (w, s, sc)):
        assert torch.equal(before, after.detach())
    assert torch.equal(grad, grad_copy)


def test_aslp_empty_tensors():
    weight = torch.randn(0, 5, requires_grad=True)
    scores = torch.randn(0, 5, requires_grad=True)
    scale = torch.ones(1, requires_grad=True)
    out = F.aslp_weight(weight, scores, scale)
    assert out.shape == (0, 5)
    out.sum().backward()
    assert scores.grad.shape == (0, 5) and scale.grad.item() == 0.0


LINEAR_CASES = [((5, 41), 30, True), ((2, 3, 17), 9, False), ((41,), 7, True), ((0, 8), 4, True)]


@pytest.mark.parametrize("input_shape,out_features,bias", LINEAR_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_masked_linear_matches_reference(isa, input_shape, out_features, bias, dtype):
    in_features = input_shape[-1]
    x = torch.randn(input_shape, dtype=dtype, requires_grad=True)
    weight = torch.randn(out_features, in_features, dtype=dtype, requires_grad=True)
    scores = torch.randn(out_features, in_features, requires_grad=True)
    b = torch.randn(out_features, dtype=dtype, requires_grad=True) if bias else None
    scale = torch.tensor([0.8], requires_grad=True)
    if boundary_for(21, scores).any():
        pytest.skip("a score sits on the decision boundary for this draw")

    def fused(x, weight, scores, b, scale, generator):
        return F.masked_linear(x, weight, scores, b, scale=scale, temperature=0.9,
                               generator=generator)

    def ref(x, weight, scores, b, scale, generator):
        return R.masked_linear(x, weight, scores, b, scale=scale, temperature=0.9,
                               generator=generator)

    check_against_reference(fused, ref, (x, weight, scores, b, scale), 21)


CONV_CASES = [
    # input shape, out channels, kernel, stride, padding, dilation, groups
    ((2, 3, 9, 9), 4, (3, 3), 1, 1, 1, 1),
    ((1, 4, 11, 7), 6, (3, 2), (2, 1), (0, 1), 1, 2),
    ((2, 2, 10, 10), 2, (3, 3), 1, 2, 2, 1),
    ((3, 8, 8), 5, (1, 1), 1, 0, 1, 1),           # unbatched input
    ((1, 3, 8, 8), 4, (4, 4), 1, "same", 1, 1),   # even kernel: asymmetric "same" padding
    ((1, 3, 8, 8), 4, (3, 3), 1, "valid", 1, 1),
]


@pytest.mark.parametrize("input_shape,out_ch,kernel,stride,padding,dilation,groups", CONV_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_masked_conv2d_matches_reference(isa, input_shape, out_ch, kernel, stride, padding,
                                         dilation, groups, dtype):
    in_ch = input_shape[-3]
    x = torch.randn(input_shape, dtype=dtype, requires_grad=True)
    weight = torch.randn(out_ch, in_ch // groups, *kernel, dtype=dtype, requires_grad=True)
    scores = torch.randn(weight.shape, requires_grad=True)
    bias = torch.randn(out_ch, dtype=dtype, requires_grad=True)
    scale = torch.tensor([1.2], requires_grad=True)
    if boundary_for(8, scores).any():
        pytest.skip("a score sits on the decision boundary for this draw")
    args = (stride, padding, dilation, groups)

    def fused(x, weight, scores, bias, scale, generator):
        return F.masked_conv2d(x, weight, scores, bias, *args, scale=scale, generator=generator)

    def ref(x, weight, scores, bias, scale, generator):
        return R.masked_conv2d(x, weight, scores, bias, *args, scale=scale, generator=generator)

    check_against_reference(fused, ref, (x, weight, scores, bias, scale), 8)


def test_masked_linear_needs_no_grad_for_frozen_parts():
    x = torch.randn(4, 10)
    weight, scores = torch.randn(3, 10), torch.randn(3, 10, requires_grad=True)
    out = F.masked_linear(x, weight, scores)
    out.sum().backward()
    assert scores.grad is not None and weight.grad is None
