"""CUDA: the registrations exist whenever the kernels were built (checked everywhere), and on a
GPU the device draws the same random stream as the CPU and honours the current stream (skipped
without one). The per-op CPU-vs-CUDA checks: test_cuda_masks.py (the mask passes, bit for bit),
test_cuda_ops.py (reparam and hard-concrete bit for bit; masked linear / conv2d),
test_cuda_sparse.py (sparse inference), test_cuda_nm.py (the N:M masks, bit for bit),
test_cuda_models.py (whole training steps). `make
gpu-check` runs them all on a GPU machine (benchmarks/gpu_check.py)."""

import pytest
import torch

import sparseprune as sp
from sparseprune import ops
from sparseprune.ops.rng import rng_state

from cuda_helpers import (DEVICE, MASK_CONFIGS, assert_same_bits, needs_gpu, needs_real_gpu,
                          random_inputs)

OPS = ["masked_weight", "masked_weight_backward", "masked_linear", "masked_linear_backward",
       "masked_conv2d", "masked_conv2d_backward", "reparam_weight", "reparam_weight_backward",
       "hard_concrete_sample", "hard_concrete_sample_backward", "sparse_linear", "sparse_conv2d",
       "nm_linear",
       "nm_masked_weight", "nm_masked_weight_backward", "nm_masked_linear",
       "nm_masked_linear_backward"]


@pytest.mark.parametrize("op", OPS)
def test_cuda_kernels_registered_when_built(op):
    has = torch._C._dispatch_has_kernel_for_dispatch_key(f"sparseprune::{op}", "CUDA")
    assert has == sp.build_info()["cuda"]


@needs_gpu
@pytest.mark.parametrize("numel", [1, 7, 1031, 4096, 70001, 2**24 + 5])
@pytest.mark.parametrize("seed,offset", [(5, 6), (2**64 - 1, 2**64 - 1), (2**63, 2**32 - 1)])
def test_noise_matches_cpu_bit_for_bit(numel, seed, offset):
    s, o = rng_state(seed, offset).tolist()
    assert_same_bits([ops.philox_bits(numel, s, o), ops.logistic_noise(numel, s, o)],
                     [ops.philox_bits(numel, s, o, DEVICE), ops.logistic_noise(numel, s, o, DEVICE)],
                     ["philox bits", "logistic noise"])


@needs_real_gpu
@pytest.mark.parametrize("config", list(MASK_CONFIGS))
def test_kernels_run_on_the_current_stream(config):
    """On a side stream (the host's reductions and Edge-Popup's histogram copies included) the
    results are those of the default stream."""
    method, rescale, density = MASK_CONFIGS[config]
    weight, scores, grad = (t.to(DEVICE) for t in random_inputs((129, 257), (torch.float32,) * 3, 1))
    scale = torch.tensor([1.3], device=DEVICE) if rescale == "smart" else None
    rng = rng_state(8, 9)

    def run():
        out = ops.masked_weight(weight, scores, scale, method, rescale, 0.7, density, rng)
        grads = torch.ops.sparseprune.masked_weight_backward(
            grad, weight, scores, scale, method, rescale, 0.7, density, rng,
            [True, True, scale is not None])
        return [out, *grads]

    expect = run()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        got = run()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    assert_same_bits(expect, got, ["masked weight", "grad weight", "grad scores", "grad scale"])


@needs_real_gpu
def test_ops_refuse_mixed_devices():
    with pytest.raises(ValueError, match="same device"):
        ops.masked_weight(torch.randn(3, 4, device=DEVICE), torch.randn(3, 4), None, "aslp",
                          "none", 1.0, 1.0, rng_state(1, 2))
