"""CUDA against the CPU kernels for the N:M pattern masks (nm_gumbel hard and soft, nm_topk,
srste): the masked weight and every gradient bit for bit, including the Smart Rescale gradient
reduced in tile order, for every dtype, patterns from 1:3 to 6:7, convolution weights, sizes over
one tile (256 groups) and misaligned or non-contiguous inputs; nm_masked_linear within rounding
(cuBLAS sums in its own order). Skipped without a GPU."""

import math

import pytest
import torch
import torch.nn.functional as TF

from sparseprune import functional as F
from sparseprune import ops
from sparseprune.ops.rng import rng_state

from cuda_helpers import (DEVICE, DTYPES, LAYOUTS, assert_close_rel, assert_same_bits,
                          exact_fp32, full_or_dry, needs_gpu, place, random_inputs)

pytestmark = needs_gpu

NAMES = ("masked weight", "grad weight", "grad scores", "grad scale")
# (weight shape, pattern)
SHAPES = [((8, 16), "2:4"), ((3, 10), "3:5"), ((7, 6), "1:3"), ((2, 14), "6:7"), ((5, 24), "4:8"),
          ((4, 8, 3, 3), "2:4"), ((257, 12), "2:4")]
BIG = ((1031, 1024), "2:4")  # 257 774 groups: over a thousand tiles


def _scores(method, shape, pattern, dtype, seed):
    n, m = (int(v) for v in pattern.split(":"))
    if method == "nm_gumbel":
        return random_inputs((math.prod(shape) // m, math.comb(m, n)), (dtype,), seed, [0.8])[0]
    if method == "nm_topk":
        return random_inputs(shape, (dtype,), seed)[0]
    return torch.empty(0, dtype=dtype)


def run_nm(device, method, weight, scores, grad, scale, pattern, hard=True, layout="contiguous"):
    n, m = (int(v) for v in pattern.split(":"))
    w, s, g = (place(t, device, layout) if t.numel() else t.to(device)
               for t in (weight, scores, grad))
    sc = None if scale is None else scale.to(device)
    rng = rng_state(1234567, 89)
    decay = 0.3 if method == "srste" else 0.0
    args = (method, n, m, torch.tensor([0.7, 2.5], dtype=torch.float64), hard, decay, rng)
    out = ops.nm_masked_weight(w, s, sc, *args)
    grads = torch.ops.sparseprune.nm_masked_weight_backward(
        g, w, s, sc, *args, [True, method != "srste", sc is not None])
    return [out, *grads]


def check(method, shape, pattern, dtype, score_dtype=torch.float32, hard=True, layout="contiguous",
          with_scale=True):
    weight, grad = random_inputs(shape, (dtype, dtype), 3)
    scores = _scores(method, shape, pattern, score_dtype, 4)
    scale = torch.tensor([1.3]) if with_scale and method == "nm_gumbel" else None
    assert_same_bits(run_nm("cpu", method, weight, scores, grad, scale, pattern, hard),
                     run_nm(DEVICE, method, weight, scores, grad, scale, pattern, hard, layout),
                     NAMES)


@pytest.mark.parametrize("shape,pattern", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hard", [True, False])
def test_nm_gumbel(shape, pattern, dtype, hard):
    check("nm_gumbel", shape, pattern, dtype, torch.float32, hard)


@pytest.mark.parametrize("score_dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_nm_gumbel_score_dtypes(score_dtype):
    check("nm_gumbel", (33, 64), "2:4", torch.float32, score_dtype)


@pytest.mark.parametrize("method", ["nm_topk", "srste"])
@pytest.mark.parametrize("shape,pattern", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_top_n(method, shape, pattern, dtype):
    check(method, shape, pattern, dtype, dtype)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("method", ["nm_gumbel", "nm_topk", "srste"])
def test_layouts(layout, method):
    check(method, (64, 48), "2:4", torch.float32, torch.float32, layout=layout)


@pytest.mark.parametrize("method", ["nm_gumbel", "nm_topk", "srste"])
def test_over_many_tiles(method):
    shape, pattern = full_or_dry(BIG, ((130, 64), "2:4"))
    check(method, shape, pattern, torch.float32)


@pytest.mark.parametrize("method", ["nm_gumbel", "nm_topk", "srste"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_nm_masked_linear(method, dtype):
    x = random_inputs((2, 5, 64), (dtype,), 5)[0]
    w, b = random_inputs((40, 64), (dtype,), 6)[0], random_inputs((40,), (dtype,), 7)[0]
    s = _scores(method, (40, 64), "2:4", torch.float32, 8)

    def run(device):
        xs, ws, bs = (t.detach().to(device).requires_grad_() for t in (x, w, b))
        ss = s.detach().to(device).requires_grad_(method != "srste")
        with exact_fp32():
            out = F.masked_linear(xs, ws, ss if method != "srste" else None, bs, method=method,
                                  pattern="2:4", generator=torch.Generator().manual_seed(9))
            out.backward(torch.ones_like(out))
        return [out, xs.grad, ws.grad, ss.grad, bs.grad]

    assert_close_rel(run("cpu"), run(DEVICE), ("output", "grad input", "grad weight",
                                               "grad scores", "grad bias"), dtype, factor=4)
    with exact_fp32():
        rng = rng_state(3, 4)
        n_args = (method, 2, 4, torch.tensor([1.0, 1.0], dtype=torch.float64), True,
                  2e-4 if method == "srste" else 0.0, rng)
        xs, ws, ss = x.to(DEVICE), w.to(DEVICE), s.to(DEVICE)
        fused = ops.nm_masked_linear(xs, ws, ss, None, None, *n_args)
        masked = ops.nm_masked_weight(ws, ss, None, *n_args)
        assert_close_rel([TF.linear(xs, masked)], [fused], ["output"], dtype)
