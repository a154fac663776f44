"""Every CPU ISA computes the same bits: masks, masked weights, every gradient, the noise."""

import copy
import pytest
import torch

import sparseprune as sp
from sparseprune import functional as F
from sparseprune import ops
from sparseprune.ops.rng import rng_state

from conftest import run_on_each_isa

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


def assert_all_identical(results: dict):
    names = list(results)
    first = results[names[0]]
    for name in names[1:]:
        for a, b in zip(first, results[name]):
            assert (a is None and b is None) or torch.equal(a, b), f"{names[0]} != {name}"


@pytest.mark.parametrize("numel", [1, 7, 63, 1031, 4096 * 3 + 17])
def test_noise_identical_across_isas(numel):
    assert_all_identical(run_on_each_isa(lambda: (ops.philox_bits(numel, 77, 3),
                                                  ops.logistic_noise(numel, 77, 3))))


@pytest.mark.parametrize("score_dtype", DTYPES)
@pytest.mark.parametrize("weight_dtype", DTYPES)
def test_aslp_weight_identical_across_isas(score_dtype, weight_dtype):
    shape = (37, 211)  # 7807 elements: two tiles and a partial chunk
    weight = torch.randn(shape).to(weight_dtype)
    scores = torch.randn(shape).to(score_dtype)
    scale = torch.tensor([1.3])
    grad = torch.randn(shape).to(weight_dtype)
    rng = rng_state(123, 9)

    def run():
        w, s, c = (t.clone().requires_grad_() for t in (weight, scores, scale))
        out = ops.aslp_weight(w, s, c, 0.6, rng)
        out.backward(grad)
        return out, w.grad, s.grad, c.grad

    assert_all_identical(run_on_each_isa(run))


def test_masked_layers_identical_across_isas():
    x = torch.randn(8, 3, 12, 12)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(16 * 10 * 10, 10))
    sp.convert(model, "aslp", rescale="smart", temperature=0.8)

    def run():
        twin = copy.deepcopy(model)  # the same point of the layers' noise streams every time
        out = twin(x)
        out.square().sum().backward()
        return (out,) + tuple(p.grad for p in twin.parameters() if p.requires_grad)

    assert_all_identical(run_on_each_isa(run))


def test_different_seeds_give_different_masks(isa):
    weight, scores = torch.randn(100, 100), torch.zeros(100, 100)
    a = F.aslp_weight(weight, scores, generator=torch.Generator().manual_seed(1))
    b = F.aslp_weight(weight, scores, generator=torch.Generator().manual_seed(2))
    c = F.aslp_weight(weight, scores, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, c)
    assert (a != b).float().mean() > 0.4  # independent p = 1/2 masks differ in half the places


@pytest.mark.parametrize("method,rescale,density", [("supermask", "none", 1.0),
                                                    ("supermask", "dwr", 1.0),
                                                    ("aslp", "dwr", 1.0),
                                                    ("edge_popup", "none", 0.3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_every_method_identical_across_isas(method, rescale, density, dtype):
    shape = (37, 211)
    weight, scores = torch.randn(shape).to(dtype), torch.randn(shape).to(dtype)
    grad = torch.randn(shape).to(dtype)
    rng = rng_state(5, 6)

    def run():
        w, s = (t.clone().requires_grad_() for t in (weight, scores))
        out = ops.masked_weight(w, s, None, method, rescale, 0.8, density, rng)
        out.backward(grad)
        return out, w.grad, s.grad

    assert_all_identical(run_on_each_isa(run))


@pytest.mark.parametrize("shape,dtype", [((37, 211), torch.float32), ((37, 211), torch.bfloat16),
                                         ((37, 211), torch.float64),
                                         ((2048, 4100), torch.float32)])  # streamed (vec.h)
def test_supermask_score_gradient_alone(shape, dtype):
    # A frozen weight and no rescale: Supermask's backward then draws no noise (its slope is
    # noise-free, and nothing else it writes needs z). Its score gradient must be the one the full
    # backward (which draws z for the weight gradient) writes, on every ISA.
    gen = torch.Generator().manual_seed(3)
    weight, scores, grad = (torch.randn(shape, generator=gen).to(dtype) for _ in range(3))
    rng = rng_state(4, 9)

    def run(weight_grad: bool):
        w = weight.clone().requires_grad_(weight_grad)
        s = scores.clone().requires_grad_()
        ops.masked_weight(w, s, None, "supermask", "none", 1.0, 1.0, rng).backward(grad)
        return (s.grad,)

    alone = run_on_each_isa(lambda: run(False))
    assert_all_identical(alone)
    assert torch.equal(alone[next(iter(alone))][0], run(True)[0])


@pytest.mark.parametrize("method,rescale", [("supermask", "dwr"), ("aslp", "dwr"),
                                            ("aslp", "smart")])
def test_streamed_outputs_identical_across_isas(method, rescale):
    # 2048 x 4100 float32 = 33.6 MB, above kStreamMinBytes (vec.h): the vector ISAs write every
    # weight-sized output (masked weight, DWR slopes, score and weight gradients, and the masked
    # weight masked_linear's backward rebuilds in its gradient buffer) with non-temporal stores;
    # the scalar path stores normally. The bits must not change.
    gen = torch.Generator().manual_seed(0)
    shape = (2048, 4100)
    weight, scores = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
    x = torch.randn(3, shape[1], generator=gen)
    scale = torch.tensor([1.1]) if rescale == "smart" else None
    rng = rng_state(8, 1)

    def run():
        w, s, inp = (t.clone().requires_grad_() for t in (weight, scores, x))
        out = ops.masked_linear(inp, w, s, None, scale, method, rescale, 1.0, 1.0, rng)
        out.square().sum().backward()
        return out, inp.grad, w.grad, s.grad

    assert_all_identical(run_on_each_isa(run))
