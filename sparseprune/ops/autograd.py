"""Gradients of the fused forward ops.

Each forward op has one backward op (``*_backward`` in csrc/ops.cpp). The masking ops and
hard_concrete_sample get their autograd node in C++ (csrc/host/autograd.cpp: a Python autograd
Function cost about as much as a small layer's forward); reparam_weight, with its two outputs,
gets it here through ``torch.library.register_autograd``. Either way forward saves only its inputs
and the ``rng`` pair ``[seed, offset]``, never the noise, the mask or the masked weight; backward
regenerates them inside the fused passes that compute the gradients.

The backward ops have no derivatives of their own: differentiating a gradient (``create_graph=True``
then a second backward, e.g. a gradient-norm penalty) raises "sparseprune::<op> does not support
double backward" at that second backward, instead of the silently wrong values an unregistered
op would give (see :func:`_refuse_double_backward`).
"""

from __future__ import annotations

import torch

from . import _ext


def _register_reparam() -> None:
    """reparam_weight(weight, t, power, compute_sum) -> (w_hat, sum of h): forward saves weight
    and t only; backward recomputes h in the pass that computes both gradients."""
    backward_op = torch.ops.sparseprune.reparam_weight_backward

    def setup_context(ctx, inputs, output):
        weight, t, power, compute_sum = inputs
        ctx.save_for_backward(weight, t)
        ctx.power, ctx.compute_sum = power, compute_sum

    def backward(ctx, grad, grad_sum):
        weight, t = ctx.saved_tensors
        if grad is None:
            grad = torch.zeros_like(weight)
        if not ctx.compute_sum:
            grad_sum = None
        grad_weight, grad_t = backward_op(grad, grad_sum, weight, t, ctx.power,
                                          list(ctx.needs_input_grad[:2]))
        return grad_weight, grad_t, None, None

    torch.library.register_autograd("sparseprune::reparam_weight", backward,
                                    setup_context=setup_context)


def _refuse_double_backward(name: str) -> None:
    """Gives ``<name>_backward`` an autograd formula that raises: its outputs then carry a node
    that fails loudly if a second backward reaches it (once_differentiable, per op), and nothing
    changes for the usual single backward, which runs with grad mode off."""

    def backward(ctx, *grads):
        raise RuntimeError(
            f"sparseprune::{name} does not support double backward (differentiating its gradient, "
            "e.g. backward(create_graph=True) then a penalty on the gradient): its backward is a "
            "fused straight-through / custom pass without derivatives of its own. Compute such a "
            "penalty with sparseprune.reference (pure PyTorch) instead")

    torch.library.register_autograd(f"sparseprune::{name}_backward", backward)


if _ext.available():
    for _name in ("masked_weight", "masked_linear", "masked_conv2d", "reparam_weight",
                  "hard_concrete_sample", "nm_masked_weight", "nm_masked_linear"):
        _refuse_double_backward(_name)
    _register_reparam()
