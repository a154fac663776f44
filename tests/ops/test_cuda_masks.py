"""CUDA against the CPU kernels, bit for bit: the fused mask passes (``masked_weight`` and its
backward) of every method and rescale (ASLP, Supermask, each plain, with Smart Rescale and with
DWR; Edge-Popup) for every score x weight dtype, odd sizes, sizes at and over one tile (4096
elements) and over 2^24 elements, misaligned (scalar path), transposed and strided inputs, extreme
seeds, and through autograd. The masked weight, the weight and score gradients and the Smart
Rescale scale gradient (per-tile partial sums, reduced in tile order) must all carry the same bits
(csrc/README.md, the numeric contract). Skipped without a GPU."""

import functools

import pytest
import torch

from sparseprune import functional as F
from sparseprune import ops
from sparseprune.ops.rng import rng_state

from cuda_helpers import (DEVICE, DTYPES, MASK_CONFIGS, OVER_2_24, TEMPERATURE, assert_same_bits,
                          needs_gpu, place, random_inputs)

pytestmark = needs_gpu

NAMES = ("masked weight", "grad weight", "grad scores", "grad scale")
RNG = rng_state(2024, 7)


def run_mask(device, config, weight, scores, grad, layouts=("contiguous",) * 3, rng=RNG,
             density=None):
    """Forward and backward of the raw ops on ``device``: (masked, grad w, grad s, grad scale)."""
    method, rescale, default_density = MASK_CONFIGS[config]
    density = default_density if density is None else density
    scale = torch.tensor([1.3], device=device) if rescale == "smart" else None
    w, s, g = (place(t, device, layout) for t, layout in zip((weight, scores, grad), layouts))
    out = ops.masked_weight(w, s, scale, method, rescale, TEMPERATURE, density, rng)
    grads = torch.ops.sparseprune.masked_weight_backward(
        g, w, s, scale, method, rescale, TEMPERATURE, density, rng, [True, True, scale is not None])
    return (out, *grads)


def check(config, weight, scores, grad, **kwargs):
    cpu = run_mask("cpu", config, weight, scores, grad, **kwargs)
    cuda = run_mask(DEVICE, config, weight, scores, grad, **kwargs)
    assert_same_bits(cpu, cuda, NAMES)


@pytest.mark.parametrize("config", list(MASK_CONFIGS))
@pytest.mark.parametrize("score_dtype", DTYPES)
@pytest.mark.parametrize("weight_dtype", DTYPES)
def test_every_dtype_pair(config, score_dtype, weight_dtype):
    # 7807 elements: one full tile, a partial tile, a partial Philox block at the end.
    weight, scores, grad = random_inputs((37, 211), (weight_dtype, score_dtype, weight_dtype), 1,
                                         scales=(1.0, 1.5, 1.0))
    check(config, weight, scores, grad)


SHAPES = [(1,), (7,), (4095,), (4096,), (4097,), (2, 4096), (3, 5, 7, 11), (129, 257)]


@pytest.mark.parametrize("config", list(MASK_CONFIGS))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtypes", [(torch.float32, torch.float32),
                                    (torch.bfloat16, torch.float16)], ids=str)
def test_sizes_around_a_tile(config, shape, dtypes):
    score_dtype, weight_dtype = dtypes
    weight, scores, grad = random_inputs(shape, (weight_dtype, score_dtype, weight_dtype), 2)
    check(config, weight, scores, grad)


LAYOUT_CASES = {
    "all misaligned": ("misaligned",) * 3,
    "scores misaligned": ("contiguous", "misaligned", "contiguous"),
    "grad misaligned": ("contiguous", "contiguous", "misaligned"),
    "transposed": ("transposed",) * 3,
    "strided": ("strided",) * 3,
    "mixed views": ("transposed", "strided", "misaligned"),
}


@pytest.mark.parametrize("config", list(MASK_CONFIGS))
@pytest.mark.parametrize("layout", list(LAYOUT_CASES))
@pytest.mark.parametrize("dtypes", [(torch.float32, torch.float32), (torch.float16, torch.bfloat16),
                                    (torch.float64, torch.float64)], ids=str)
def test_unaligned_and_non_contiguous(config, layout, dtypes):
    score_dtype, weight_dtype = dtypes
    weight, scores, grad = random_inputs((65, 127), (weight_dtype, score_dtype, weight_dtype), 3)
    check(config, weight, scores, grad, layouts=LAYOUT_CASES[layout])


@functools.lru_cache(maxsize=2)
def large_inputs(score_dtype, weight_dtype):
    return random_inputs(OVER_2_24, (weight_dtype, score_dtype, weight_dtype), 4)


@pytest.mark.parametrize("config", list(MASK_CONFIGS))
@pytest.mark.parametrize("dtypes", [(torch.float32, torch.float32),
                                    (torch.bfloat16, torch.bfloat16)], ids=str)
def test_over_2_24_elements(config, dtypes):
    weight, scores, grad = large_inputs(*dtypes)
    check(config, weight, scores, grad, density=0.5 if config == "edge_popup" else None)


@pytest.mark.parametrize("density", [1e-4, 0.01, 0.5, 0.999, 1.0])
@pytest.mark.parametrize("score_dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_edge_popup_densities_and_ties(density, score_dtype):
    weight, grad = random_inputs((129, 257), (torch.float32, torch.float32), 5)
    g = torch.Generator().manual_seed(6)
    # Few distinct values: most of the selection is decided by the ties' index order.
    scores = (torch.randint(-6, 7, (129, 257), generator=g) / 4).to(score_dtype)
    check("edge_popup", weight, scores, grad, density=density)


@pytest.mark.parametrize("config", ["aslp+dwr", "supermask+dwr", "aslp+smart"])
def test_empty_sample_gives_a_zero_layer(config):
    weight, grad = random_inputs((37, 211), (torch.float32, torch.float32), 7)
    scores = torch.full((37, 211), -100.0)  # below any logistic noise: nothing is kept
    cpu = run_mask("cpu", config, weight, scores, grad)
    assert not cpu[0].any()
    assert_same_bits(cpu, run_mask(DEVICE, config, weight, scores, grad), NAMES)


@pytest.mark.parametrize("seed,offset", [(0, 0), (2**64 - 1, 2**64 - 1), (2**63, 1),
                                         (12345, 2**32 - 1), (1, 2**63 - 1)])
@pytest.mark.parametrize("config", ["aslp+smart", "supermask+dwr"])
def test_extreme_seeds_and_offsets(seed, offset, config):
    weight, scores, grad = random_inputs((33, 129), (torch.float32,) * 3, 8)
    check(config, weight, scores, grad, rng=rng_state(seed, offset))


@pytest.mark.parametrize("config", list(MASK_CONFIGS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_functional_autograd_path(config, dtype):
    """The public functions, gradients through autograd, scores of the weight's dtype."""
    method, rescale, density = MASK_CONFIGS[config]
    weight, scores, grad = random_inputs((45, 91), (dtype,) * 3, 9)

    def run(device):
        w, s = (t.detach().to(device).requires_grad_() for t in (weight, scores))
        scale = (torch.tensor([0.9], device=device, requires_grad=True)
                 if rescale == "smart" else None)
        gen = torch.Generator().manual_seed(10)
        if method == "aslp":
            out = F.aslp_weight(w, s, scale, temperature=TEMPERATURE,
                                rescale="dwr" if rescale == "dwr" else None, generator=gen)
        elif method == "supermask":
            out = F.supermask_weight(w, s, scale, rescale="dwr" if rescale == "dwr" else None,
                                     generator=gen)
        else:
            out = F.edge_popup_weight(w, s, density=density)
        out.backward(grad.to(device))
        return out, w.grad, s.grad, None if scale is None else scale.grad

    assert_same_bits(run("cpu"), run(DEVICE), NAMES)
