"""Gradients of the fused forward ops.

Each forward op gets one backward op (``*_backward`` in csrc/ops.cpp) registered with
``torch.library.register_autograd``, which wraps them in an autograd Function: forward saves only
its inputs and the ``rng`` pair ``[seed, offset]``, never the noise, the mask or the masked weight; backward
regenerates them inside the one fused pass that computes the gradients.
"""

from __future__ import annotations

import torch

from . import _ext


def _save_mask_args(ctx, weight, scores, scale, temperature, rng, *extra_tensors):
    ctx.save_for_backward(weight, scores, scale, rng, *extra_tensors)
    ctx.temperature = temperature


def _register() -> None:
    ops = torch.ops.sparseprune

    # aslp_weight(weight, scores, scale, temperature, rng)
    def aslp_setup(ctx, inputs, output):
        weight, scores, scale, temperature, rng = inputs
        _save_mask_args(ctx, weight, scores, scale, temperature, rng)

    def aslp_backward(ctx, grad):
        weight, scores, scale, rng = ctx.saved_tensors
        need = list(ctx.needs_input_grad[:3])
        g_weight, g_scores, g_scale = ops.aslp_weight_backward(
            grad, weight, scores, scale, ctx.temperature, rng, need)
        return g_weight, g_scores, g_scale, None, None

    torch.library.register_autograd("sparseprune::aslp_weight", aslp_backward,
                                    setup_context=aslp_setup)

    # masked_linear(input, weight, scores, bias, scale, method, temperature, rng)
    def linear_setup(ctx, inputs, output):
        input, weight, scores, bias, scale, method, temperature, rng = inputs
        _save_mask_args(ctx, weight, scores, scale, temperature, rng, input)
        ctx.method = method

    def linear_backward(ctx, grad_output):
        weight, scores, scale, rng, input = ctx.saved_tensors
        need = list(ctx.needs_input_grad[:5])
        grads = ops.masked_linear_backward(grad_output, input, weight, scores, scale, ctx.method,
                                           ctx.temperature, rng, need)
        return (*grads, None, None, None)

    torch.library.register_autograd("sparseprune::masked_linear", linear_backward,
                                    setup_context=linear_setup)

    # masked_conv2d(input, weight, scores, bias, scale, stride, padding, dilation, groups,
    #               method, temperature, rng)
    def conv_setup(ctx, inputs, output):
        (input, weight, scores, bias, scale, stride, padding, dilation, groups, method,
         temperature, rng) = inputs
        _save_mask_args(ctx, weight, scores, scale, temperature, rng, input)
        ctx.conv = (stride, padding, dilation, groups, method)

    def conv_backward(ctx, grad_output):
        weight, scores, scale, rng, input = ctx.saved_tensors
        stride, padding, dilation, groups, method = ctx.conv
        need = list(ctx.needs_input_grad[:5])
        grads = ops.masked_conv2d_backward(grad_output, input, weight, scores, scale, stride,
                                           padding, dilation, groups, method, ctx.temperature,
                                           rng, need)
        return (*grads, None, None, None, None, None, None, None)

    torch.library.register_autograd("sparseprune::masked_conv2d", conv_backward,
                                    setup_context=conv_setup)


if _ext.available():
    _register()
