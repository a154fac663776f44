"""Every native kernel on every CPU ISA, with odd sizes (vector tails, partial tiles), every score
and weight dtype and the sparse formats: short enough to run under AddressSanitizer and UBSan
(`make sanitize`, issue 20), where any out-of-bounds read or undefined behaviour fails it. Here
it also checks the results against the pure-PyTorch reference."""

from __future__ import annotations

import pytest
import torch

import sparseprune as sp
import sparseprune.functional as SF
from sparseprune import ops, reference
from sparseprune.ops import formats
from sparseprune.ops.rng import rng_state

SIZES = [(1, 1), (3, 7), (17, 65), (64, 70)]  # 4160 elements: one tile and a partial one
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


@pytest.mark.parametrize("shape", SIZES)
def test_mask_kernels(isa, shape):
    torch.manual_seed(0)
    rng = rng_state(11, 3)
    for dtype in DTYPES:
        w = torch.randn(shape).to(dtype)
        s = torch.randn(shape).to(dtype).requires_grad_(True)
        x = torch.randn(2, shape[1]).to(dtype)
        for method, rescale, scale in (("aslp", None, None), ("aslp", "smart", torch.ones(1)),
                                       ("supermask", "dwr", None),
                                       ("edge_popup", None, None)):
            density = 0.5 if method == "edge_popup" else None
            sc = None if scale is None else scale.clone().requires_grad_(True)
            out = SF.masked_linear(x, w, s, method=method, scale=sc, rescale=rescale,
                                   density=density, rng=None if method == "edge_popup" else rng)
            out.float().sum().backward()
            assert torch.isfinite(s.grad.float()).all()
            s.grad = None


@pytest.mark.parametrize("shape", SIZES)
def test_reparam_hard_concrete_and_noise(isa, shape):
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        w = torch.randn(shape).to(dtype).requires_grad_(True)
        t = torch.tensor([5.0], requires_grad=True)
        w_hat, total = SF.reparam_weight(w, t, return_sum=True)
        (w_hat.float().sum() + total).backward()
        assert torch.isfinite(w.grad.float()).all() and torch.isfinite(t.grad).all()
        la = torch.randn(shape).to(dtype).requires_grad_(True)
        SF.hard_concrete_sample(la, rng=rng_state(2, 9)).float().sum().backward()
        assert torch.isfinite(la.grad.float()).all()
    numel = shape[0] * shape[1]
    assert torch.equal(ops.philox_bits(numel, 7, 1), reference.philox_bits(numel, 7, 1))
    assert torch.isfinite(ops.logistic_noise(numel, 7, 1)).all()


@pytest.mark.parametrize("format", ["csr", "bitmap"])
@pytest.mark.parametrize("rows,cols", [(1, 1), (5, 31), (9, 33), (17, 100)])
def test_sparse_kernels(isa, format, rows, cols):
    torch.manual_seed(0)
    for density in (0.0, 0.3, 1.0):
        w = torch.randn(rows, cols)
        w[torch.rand(rows, cols) >= density] = 0
        parts = formats.compress(w, format)
        bias = torch.randn(rows)
        for batch in (1, 3, 20):
            x = torch.randn(batch, cols)
            torch.testing.assert_close(ops.sparse_linear(x, *parts, bias, format, (rows, cols)),
                                       torch.nn.functional.linear(x, w, bias), rtol=1e-4, atol=1e-4)
    # convolutions: direct (stride 1) and unfolded (stride 2), with padding and dilation
    wc = torch.randn(rows, 3, 3, 3)
    wc[torch.rand_like(wc) > 0.4] = 0
    parts = formats.compress(wc.reshape(rows, -1), format)
    x = torch.randn(2, 3, 7, 6)
    for stride, padding, dilation in ((1, 1, 1), (2, 0, 1), (1, 2, 2), (3, 1, 2)):
        got = ops.sparse_conv2d(x, *parts, None, format, tuple(wc.shape), (stride, stride),
                                (padding, padding), (dilation, dilation), 1)
        ref = torch.nn.functional.conv2d(x, wc, None, stride, padding, dilation)
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("format", ["csr", "bitmap"])
def test_malformed_structures_are_refused_before_any_read(isa, format):
    w = torch.randn(9, 70)
    w[w.abs() < 0.7] = 0
    for poke in range(4):
        values, row_ptr, indices = (t.clone() for t in formats.compress(w, format))
        if poke == 0:
            indices.view(-1)[-1] = 2**30
        elif poke == 1:
            row_ptr[4] = row_ptr[-1] + 100
        elif poke == 2:
            row_ptr[5], row_ptr[6] = row_ptr[6], row_ptr[5] - 1
        else:
            indices.view(-1)[0] = -1
        for batch in (1, 4):
            with pytest.raises(ValueError, match="sparseprune::sparse_linear"):
                ops.sparse_linear(torch.randn(batch, 70), values, row_ptr, indices, None, format,
                                  (9, 70))
