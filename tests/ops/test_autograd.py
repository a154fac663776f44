"""Gradients: gradcheck where backward is the true derivative (input, weight, scale for a mask
fixed by the rng), the straight-through formulas for the scores, and torch.library.opcheck."""

import pytest
import torch
from torch.autograd import gradcheck

from sparseprune import ops
from sparseprune.ops.rng import rng_state

from helpers import noise_like

RNG = rng_state(2024, 11)
# (method, rescale, density): every fused mask configuration.
CONFIGS = [("aslp", "none", 1.0), ("aslp", "dwr", 1.0), ("supermask", "none", 1.0),
           ("supermask", "dwr", 1.0), ("edge_popup", "none", 0.4)]


@pytest.mark.parametrize("method,rescale,density", CONFIGS)
def test_gradcheck_masked_linear(method, rescale, density):
    x = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 9, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(5, dtype=torch.float64, requires_grad=True)
    scores = torch.randn(5, 9)

    def f(x, weight, bias):
        return ops.masked_linear(x, weight, scores, bias, None, method, rescale, 1.0, density, RNG)

    assert gradcheck(f, (x, weight, bias))


@pytest.mark.parametrize("stride,padding,dilation,groups", [(1, 1, 1, 1), (2, 0, 1, 2),
                                                            (1, 2, 2, 1)])
@pytest.mark.parametrize("method,rescale,density", [CONFIGS[0], CONFIGS[3], CONFIGS[4]])
def test_gradcheck_masked_conv2d(stride, padding, dilation, groups, method, rescale, density):
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 4 // groups, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)
    scores = torch.randn(weight.shape)

    def f(x, weight, bias):
        return ops.masked_conv2d(x, weight, scores, bias, None, [stride] * 2, [padding] * 2,
                                 [dilation] * 2, groups, method, rescale, 1.0, density, RNG)

    assert gradcheck(f, (x, weight, bias))


@pytest.mark.filterwarnings("ignore:Input #0 requires gradient and is not a double")
@pytest.mark.parametrize("method", ["aslp", "supermask"])
def test_gradcheck_smart_rescale_scalar(method):
    weight = torch.randn(6, 5)
    scores = torch.randn(6, 5)
    scale = torch.tensor([0.7], requires_grad=True)  # float32 by contract: compare in float32

    def f(scale):
        return ops.masked_weight(weight, scores, scale, method, "smart", 1.0, 1.0, RNG)

    assert gradcheck(f, (scale,), eps=1e-3, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("temperature", [0.3, 1.0, 2.5])
def test_aslp_scores_gradient_is_the_straight_through_formula(temperature):
    weight = torch.randn(40, 30)
    scores = torch.randn(40, 30, requires_grad=True)
    scale = torch.tensor([1.4])
    grad = torch.randn(40, 30)
    ops.aslp_weight(weight, scores, scale, temperature, RNG).backward(grad)
    y = torch.sigmoid((scores.detach().double() + noise_like(scores, RNG)) / temperature)
    expected = grad.double() * 1.4 * weight.double() * y * (1 - y) / temperature
    torch.testing.assert_close(scores.grad.double(), expected, rtol=1e-5, atol=1e-7)


def test_supermask_dwr_gradient_is_the_closed_form():
    # METHODS 2.3: dL/ds_j = sigma'(s_j) [r w_j g_j - (r / M) sum_i w_i b_i g_i], r = N / M.
    weight, grad = torch.randn(30, 20).double(), torch.randn(30, 20).double()
    scores = torch.randn(30, 20, dtype=torch.float64, requires_grad=True)
    out = ops.masked_weight(weight, scores, None, "supermask", "dwr", 1.0, 1.0, RNG)
    out.backward(grad)
    b = (scores.detach() - noise_like(scores, RNG) > 0).double()
    M, N = b.sum(), b.numel()
    r = N / M
    sig = torch.sigmoid(scores.detach())
    expected = sig * (1 - sig) * (r * weight * grad - (r / M) * (weight * b * grad).sum())
    torch.testing.assert_close(scores.grad, expected, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(out, r * weight * b, rtol=1e-12, atol=0)


def test_edge_popup_gradient_is_straight_through():
    weight, grad = torch.randn(12, 10), torch.randn(12, 10)
    scores = torch.randn(12, 10, requires_grad=True)
    with torch.no_grad():
        scores[0, :3] = 0.0  # sign(0) = 0
    out = ops.masked_weight(weight, scores, None, "edge_popup", "none", 1.0, 0.25, RNG)
    out.backward(grad)
    torch.testing.assert_close(scores.grad, torch.sign(scores.detach()) * weight * grad)
    assert int((out != 0).sum()) == 30


def opcheck_samples():
    w = torch.randn(6, 5, requires_grad=True)
    s = torch.randn(6, 5, requires_grad=True)
    c = torch.tensor([1.1], requires_grad=True)
    x = torch.randn(3, 5, requires_grad=True)
    b = torch.randn(6, requires_grad=True)
    cw = torch.randn(4, 2, 3, 3, requires_grad=True)
    cs = torch.randn(4, 2, 3, 3, requires_grad=True)
    cx = torch.randn(2, 2, 6, 6, requires_grad=True)
    cb = torch.randn(4, requires_grad=True)
    g = torch.randn(6, 5)
    op = torch.ops.sparseprune
    conv = ([1, 1], [1, 1], [1, 1], 1)
    samples = [
        (op.masked_weight.default, (w, s, c, "aslp", "smart", 0.8, 1.0, RNG)),
        (op.masked_weight.default, (w, s, None, "supermask", "dwr", 1.0, 1.0, RNG)),
        (op.masked_weight.default, (w, s, None, "edge_popup", "none", 1.0, 0.5, RNG)),
        (op.masked_weight_backward.default, (g, w.detach(), s.detach(), c.detach(), "aslp", "smart",
                                             0.8, 1.0, RNG, [True, True, True])),
        (op.masked_weight_backward.default, (g, w.detach(), s.detach(), None, "supermask", "dwr",
                                             1.0, 1.0, RNG, [True, True, False])),
        (op.masked_linear.default, (x, w, s, b, c, "aslp", "smart", 0.7, 1.0, RNG)),
        (op.masked_linear.default, (x, w, s, b, None, "edge_popup", "none", 1.0, 0.3, RNG)),
        (op.masked_linear_backward.default, (torch.randn(3, 6), x.detach(), w.detach(),
                                             s.detach(), None, "supermask", "dwr", 1.0, 1.0, RNG,
                                             [True, False, True, True, False])),
        (op.masked_conv2d.default, (cx, cw, cs, cb, c, *conv, "aslp", "smart", 1.0, 1.0, RNG)),
        (op.masked_conv2d.default, (cx, cw, cs, cb, None, *conv, "supermask", "dwr", 1.0, 1.0,
                                    RNG)),
        (op.masked_conv2d_backward.default, (torch.randn(2, 4, 6, 6), cx.detach(), cw.detach(),
                                             cs.detach(), None, *conv, "edge_popup", "none", 1.0,
                                             0.5, RNG, [True, True, True, True, False])),
        (op.philox_bits.default, (10, 1, 2, torch.device("cpu"))),
        (op.logistic_noise.default, (10, 1, 2, torch.device("cpu"))),
    ]
    return samples


@pytest.mark.parametrize("op,args", opcheck_samples(), ids=lambda v: getattr(v, "__name__", ""))
def test_opcheck(op, args):
    torch.library.opcheck(op, args)
