"""CUDA against the CPU kernels for the other fused ops. Bit for bit (the numeric contract): the
weight reparametrisation (w_hat, the per-tile sums of h reduced in tile order, both gradients) and
the hard-concrete gates (sample and gradient), for every dtype, odd sizes, sizes over one tile and
over 2^24 elements, misaligned and non-contiguous inputs. Within rounding (ATen's GEMM and
convolution sum in their own order on each device; the masks themselves are the same bits):
``masked_linear`` and ``masked_conv2d`` for every mask method, outputs and every gradient.
Skipped without a GPU."""

import functools

import pytest
import torch
import torch.nn.functional as TF

from sparseprune import functional as F
from sparseprune import ops
from sparseprune.ops.rng import rng_state

from cuda_helpers import (DEVICE, DTYPES, LAYOUTS, MASK_CONFIGS, OVER_2_24, assert_close_rel,
                          assert_same_bits, exact_fp32, functional_options, needs_gpu, place,
                          random_inputs)

pytestmark = needs_gpu


# ---- masked_linear / masked_conv2d ---------------------------------------------------------------

LINEAR_CASES = [((5, 41), 30, True), ((2, 3, 17), 9, False), ((41,), 7, True), ((0, 8), 4, True),
                ((64, 1000), 300, True)]
LAYER_NAMES = ("output", "grad input", "grad weight", "grad scores", "grad bias", "grad scale")


def _layer_run(device, config, call, tensors, grad_out_shape, seed):
    """call(x, w, s, b, scale, generator) on ``device`` with every input a leaf that wants a
    gradient; returns the output and the gradients."""
    x, w, s, b = (None if t is None else t.detach().to(device).requires_grad_() for t in tensors)
    scale = (torch.tensor([0.8], device=device, requires_grad=True)
             if MASK_CONFIGS[config][1] == "smart" else None)
    with exact_fp32():
        out = call(x, w, s, b, scale, torch.Generator().manual_seed(seed))
        grad = torch.randn(grad_out_shape, generator=torch.Generator().manual_seed(seed + 1),
                           dtype=torch.float64).to(out.dtype)
        out.backward(grad.to(device))
    return out, x.grad, w.grad, s.grad, None if b is None else b.grad, \
        None if scale is None else scale.grad


@pytest.mark.parametrize("config", list(MASK_CONFIGS))
@pytest.mark.parametrize("case", LINEAR_CASES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_masked_linear(config, case, dtype):
    input_shape, out_features, bias = case
    in_features = input_shape[-1]
    x, w = random_inputs(input_shape, (dtype,), 11)[0], \
        random_inputs((out_features, in_features), (dtype,), 12)[0]
    s = random_inputs((out_features, in_features), (torch.float32,), 13)[0]
    b = random_inputs((out_features,), (dtype,), 14)[0] if bias else None
    options = functional_options(config)

    def call(x, w, s, b, scale, gen):
        return F.masked_linear(x, w, s, b, scale=scale, generator=gen, **options)

    out_shape = (*input_shape[:-1], out_features)
    cpu = _layer_run("cpu", config, call, (x, w, s, b), out_shape, 15)
    cuda = _layer_run(DEVICE, config, call, (x, w, s, b), out_shape, 15)
    assert_close_rel(cpu, cuda, LAYER_NAMES, dtype, factor=4)


@pytest.mark.parametrize("config", list(MASK_CONFIGS))
def test_masked_linear_equals_linear_of_the_masked_weight_on_cuda(config):
    """One op each way on the device gives what F.linear of the fused masked weight gives."""
    x, w, s = random_inputs((33, 250), (torch.float32,) * 1, 16)[0], \
        *random_inputs((70, 250), (torch.float32, torch.float32), 17)
    method, rescale, density = MASK_CONFIGS[config]
    x, w, s = (t.to(DEVICE) for t in (x, w, s))
    scale = torch.tensor([0.8], device=DEVICE) if rescale == "smart" else None
    rng = rng_state(3, 4)
    with exact_fp32():
        fused = ops.masked_linear(x, w, s, None, scale, method, rescale, 0.7, density, rng)
        masked = ops.masked_weight(w, s, scale, method, rescale, 0.7, density, rng)
        assert_close_rel([TF.linear(x, masked)], [fused], ["output"], torch.float32)


CONV_CASES = [
    # input shape, out channels, kernel, stride, padding, dilation, groups
    ((2, 3, 9, 9), 4, (3, 3), 1, 1, 1, 1),
    ((1, 4, 11, 7), 6, (3, 2), (2, 1), (0, 1), 1, 2),
    ((2, 2, 10, 10), 2, (3, 3), 1, 2, 2, 1),
    ((3, 8, 8), 5, (1, 1), 1, 0, 1, 1),           # unbatched input
    ((1, 3, 8, 8), 4, (4, 4), 1, "same", 1, 1),   # even kernel: asymmetric "same" padding
    ((4, 16, 20, 20), 32, (3, 3), 1, 1, 1, 1),    # 4608 weights: over one tile
]


@pytest.mark.parametrize("config", list(MASK_CONFIGS))
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_masked_conv2d(config, case, dtype):
    input_shape, out_ch, kernel, stride, padding, dilation, groups = case
    in_ch = input_shape[-3]
    x = random_inputs(input_shape, (dtype,), 21)[0]
    w, b = random_inputs((out_ch, in_ch // groups, *kernel), (dtype,), 22)[0], \
        random_inputs((out_ch,), (dtype,), 23)[0]
    s = random_inputs(w.shape, (torch.float32,), 24)[0]
    options = functional_options(config)

    def call(x, w, s, b, scale, gen):
        return F.masked_conv2d(x, w, s, b, stride, padding, dilation, groups, scale=scale,
                               generator=gen, **options)

    with torch.no_grad():
        out_shape = TF.conv2d(x, w, b, stride, padding, dilation, groups).shape
    cpu = _layer_run("cpu", config, call, (x, w, s, b), out_shape, 25)
    cuda = _layer_run(DEVICE, config, call, (x, w, s, b), out_shape, 25)
    assert_close_rel(cpu, cuda, LAYER_NAMES, dtype, factor=4)


# ---- reparam_weight -----------------------------------------------------------------------------

REPARAM_NAMES = ("w_hat", "sum of h", "grad weight", "grad t")


def run_reparam(device, weight, grad, t, power, with_sum, layouts=("contiguous",) * 2):
    w, g = (place(x, device, layout) for x, layout in zip((weight, grad), layouts))
    t = t.to(device)
    w_hat, h_sum = ops.reparam_weight(w, t, power, with_sum)
    grad_sum = torch.tensor(0.37, dtype=h_sum.dtype, device=device) if with_sum else None
    grad_w, grad_t = torch.ops.sparseprune.reparam_weight_backward(g, grad_sum, w, t, power,
                                                                   [True, True])
    return w_hat, h_sum, grad_w, grad_t


def check_reparam(weight, grad, t, power=4, with_sum=True, layouts=("contiguous",) * 2):
    assert_same_bits(run_reparam("cpu", weight, grad, t, power, with_sum, layouts),
                     run_reparam(DEVICE, weight, grad, t, power, with_sum, layouts),
                     REPARAM_NAMES)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("t_dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("power", [1, 2, 4, 7])
@pytest.mark.parametrize("with_sum", [True, False])
def test_reparam_every_dtype_and_power(dtype, t_dtype, power, with_sum):
    weight, grad = random_inputs((37, 211), (dtype, dtype), 31, scales=(0.05, 1.0))
    check_reparam(weight, grad, torch.tensor([30.0], dtype=t_dtype), power, with_sum)


@pytest.mark.parametrize("shape", [(1,), (7,), (4095,), (4096,), (4097,), (2, 4096),
                                   (3, 5, 7, 11)], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_reparam_sizes_around_a_tile(shape, dtype):
    weight, grad = random_inputs(shape, (dtype, dtype), 32, scales=(0.05, 1.0))
    check_reparam(weight, grad, torch.tensor([30.0]))


@pytest.mark.parametrize("layout", [x for x in LAYOUTS if x != "contiguous"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_reparam_unaligned_and_non_contiguous(layout, dtype):
    weight, grad = random_inputs((65, 127), (dtype, dtype), 33, scales=(0.05, 1.0))
    check_reparam(weight, grad, torch.tensor([30.0]), layouts=(layout, layout))
    check_reparam(weight, grad, torch.tensor([30.0]), layouts=("contiguous", layout))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_reparam_over_2_24_elements(dtype):
    weight, grad = random_inputs(OVER_2_24, (dtype, dtype), 34, scales=(0.05, 1.0))
    check_reparam(weight, grad, torch.tensor([30.0]))


def test_reparam_functional_autograd_path():
    weight, grad = random_inputs((45, 91), (torch.float32, torch.float32), 35, scales=(0.05, 1))

    def run(device):
        w = weight.detach().to(device).requires_grad_()
        t = torch.tensor([30.0], device=device, requires_grad=True)
        w_hat, h_sum = F.reparam_weight(w, t, return_sum=True)
        ((w_hat * grad.to(device)).sum() + 0.5 * h_sum).backward()
        return w_hat, h_sum, w.grad, t.grad

    with exact_fp32():  # the (w_hat * grad).sum() above is an ATen reduction on each device
        cpu, cuda = run("cpu"), run(DEVICE)
    assert_same_bits(cpu[:2], cuda[:2], REPARAM_NAMES[:2])
    # The incoming gradient of w_hat comes from ATen's sum backward: the same bits (a broadcast),
    # so the fused backward must give the same bits too.
    assert_same_bits(cpu[2:], cuda[2:], REPARAM_NAMES[2:])


# ---- hard_concrete_sample -----------------------------------------------------------------------

HC_NAMES = ("gates", "grad log_alpha")
HC_DEFAULT = (2.0 / 3.0, -0.1, 1.1)


def run_hard_concrete(device, log_alpha, grad, params=HC_DEFAULT, rng=rng_state(4, 8),
                      layouts=("contiguous",) * 2):
    la, g = (place(x, device, layout) for x, layout in zip((log_alpha, grad), layouts))
    z = ops.hard_concrete_sample(la, *params, rng)
    grad_la = torch.ops.sparseprune.hard_concrete_sample_backward(g, la, *params, rng, [True])
    return z, grad_la


def check_hard_concrete(log_alpha, grad, **kwargs):
    assert_same_bits(run_hard_concrete("cpu", log_alpha, grad, **kwargs),
                     run_hard_concrete(DEVICE, log_alpha, grad, **kwargs), HC_NAMES)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("params", [HC_DEFAULT, (0.5, -0.2, 1.2), (1.0, -0.05, 1.05)], ids=str)
def test_hard_concrete_every_dtype(dtype, params):
    log_alpha, grad = random_inputs((37, 211), (dtype, dtype), 41, scales=(3.0, 1.0))
    check_hard_concrete(log_alpha, grad, params=params)


@pytest.mark.parametrize("shape", [(1,), (7,), (4096,), (4097,), (2, 4096), (3, 5, 7, 11)],
                         ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_hard_concrete_sizes(shape, dtype):
    log_alpha, grad = random_inputs(shape, (dtype, dtype), 42, scales=(3.0, 1.0))
    check_hard_concrete(log_alpha, grad)


@pytest.mark.parametrize("layout", [x for x in LAYOUTS if x != "contiguous"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_hard_concrete_unaligned_and_non_contiguous(layout, dtype):
    log_alpha, grad = random_inputs((65, 127), (dtype, dtype), 43, scales=(3.0, 1.0))
    check_hard_concrete(log_alpha, grad, layouts=(layout, layout))
    check_hard_concrete(log_alpha, grad, layouts=("contiguous", layout))


@pytest.mark.parametrize("seed,offset", [(0, 0), (2**64 - 1, 2**64 - 1), (2**63, 2**32 - 1)])
def test_hard_concrete_extreme_seeds(seed, offset):
    log_alpha, grad = random_inputs((33, 129), (torch.float32,) * 2, 44, scales=(3.0, 1.0))
    check_hard_concrete(log_alpha, grad, rng=rng_state(seed, offset))


@functools.lru_cache(maxsize=1)
def _large_hc():
    return random_inputs(OVER_2_24, (torch.float32, torch.float32), 45, scales=(3.0, 1.0))


def test_hard_concrete_over_2_24_elements():
    check_hard_concrete(*_large_hc())


def test_hard_concrete_functional_autograd_path():
    log_alpha, grad = random_inputs((45, 91), (torch.float32,) * 2, 46, scales=(3.0, 1.0))

    def run(device):
        la = log_alpha.detach().to(device).requires_grad_()
        z = F.hard_concrete_sample(la, generator=torch.Generator().manual_seed(47))
        z.backward(grad.to(device))
        return z, la.grad

    assert_same_bits(run("cpu"), run(DEVICE), HC_NAMES)
