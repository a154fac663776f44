"""The calls the property tests make in the crash-guarded worker (fuzz.guard). Each returns what
the test checks, or raises what the op raised."""

from __future__ import annotations

import torch

import sparseprune as sp
from sparseprune import ops
from sparseprune.ops import formats


def sparse_linear(x, values, row_ptr, indices, bias, format, shape):
    return ops.sparse_linear(x, values, row_ptr, indices, bias, format, shape)


def sparse_conv2d(x, values, row_ptr, indices, format, shape, stride, padding, dilation, groups):
    return ops.sparse_conv2d(x, values, row_ptr, indices, None, format, shape, stride, padding,
                             dilation, groups)


def masked_linear_fwd_bwd(x, w, s, bias, method, temperature, density, rng, grad_output):
    x, w, s = (t.clone().requires_grad_(t.is_floating_point()) for t in (x, w, s))
    out = ops.masked_linear(x, w, s, bias, None, method, "none", temperature, density, rng)
    out.backward(grad_output)
    return out.detach(), x.grad, w.grad, s.grad


def masked_conv2d_fwd(x, w, s, stride, padding, dilation, groups, method, density, rng):
    return ops.masked_conv2d(x, w, s, None, None, stride, padding, dilation, groups, method,
                             "none", 1.0, density, rng)


def raw_backward(name, args):
    return getattr(torch.ops.sparseprune, name)(*args)


def load(path, with_model):
    if not with_model:
        return sorted(sp.load(path))
    model = sp.load(path, torch.nn.Sequential(torch.nn.Linear(12, 8), torch.nn.ReLU(),
                                              torch.nn.Linear(8, 4)))
    with torch.no_grad():
        return model(torch.ones(2, 12))


def reparam(w, t, power):
    w = w.clone().requires_grad_(True)
    out = ops.reparam_weight(w, t, power, True)
    (out[0].sum() + out[1]).backward()
    return out[0].detach(), w.grad


def hard_concrete(log_alpha, rng):
    la = log_alpha.clone().requires_grad_(True)
    z = ops.hard_concrete_sample(la, 2.0 / 3.0, -0.1, 1.1, rng)
    z.sum().backward()
    return z.detach(), la.grad


def dense_of(values, row_ptr, indices, format, rows, cols):
    return formats.to_dense(values, row_ptr, indices, format, rows, cols)
