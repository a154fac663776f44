"""Gradients of the fused forward ops.

Each forward op gets one backward op (``*_backward`` in csrc/ops.cpp) registered with
``torch.library.register_autograd``, which wraps them in an autograd Function: forward saves only
its inputs and the ``rng`` pair ``[seed, offset]``, never the noise, the mask or the masked weight;
backward regenerates them inside the fused passes that compute the gradients.
"""

from __future__ import annotations

import torch

from . import _ext


def _register() -> None:
    ops = torch.ops.sparseprune

    # masked_weight(weight, scores, scale, method, rescale, temperature, density, rng)
    def weight_setup(ctx, inputs, output):
        weight, scores, scale, *options, rng = inputs
        ctx.save_for_backward(weight, scores, scale, rng)
        ctx.options = options

    def weight_backward(ctx, grad):
        weight, scores, scale, rng = ctx.saved_tensors
        need = list(ctx.needs_input_grad[:3])
        grads = ops.masked_weight_backward(grad, weight, scores, scale, *ctx.options, rng, need)
        return (*grads, None, None, None, None, None)

    torch.library.register_autograd("sparseprune::masked_weight", weight_backward,
                                    setup_context=weight_setup)

    # masked_linear(input, weight, scores, bias, scale, method, rescale, temperature, density, rng)
    def linear_setup(ctx, inputs, output):
        input, weight, scores, bias, scale, *options, rng = inputs
        ctx.save_for_backward(input, weight, scores, scale, rng)
        ctx.options = options

    def linear_backward(ctx, grad_output):
        input, weight, scores, scale, rng = ctx.saved_tensors
        need = list(ctx.needs_input_grad[:5])
        grads = ops.masked_linear_backward(grad_output, input, weight, scores, scale,
                                           *ctx.options, rng, need)
        return (*grads, None, None, None, None, None)

    torch.library.register_autograd("sparseprune::masked_linear", linear_backward,
                                    setup_context=linear_setup)

    # masked_conv2d(input, weight, scores, bias, scale, stride, padding, dilation, groups,
    #               method, rescale, temperature, density, rng)
    def conv_setup(ctx, inputs, output):
        input, weight, scores, bias, scale, *options, rng = inputs
        ctx.save_for_backward(input, weight, scores, scale, rng)
        ctx.options = options

    def conv_backward(ctx, grad_output):
        input, weight, scores, scale, rng = ctx.saved_tensors
        need = list(ctx.needs_input_grad[:5])
        grads = ops.masked_conv2d_backward(grad_output, input, weight, scores, scale,
                                           *ctx.options, rng, need)
        return (*grads, *([None] * 9))

    torch.library.register_autograd("sparseprune::masked_conv2d", conv_backward,
                                    setup_context=conv_setup)


if _ext.available():
    _register()
