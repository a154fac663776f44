"""CUDA: the registrations exist whenever the kernels were built (checked everywhere), and on a
GPU the device computes the same bits as the CPU (skipped without one)."""

import pytest
import torch

import sparseprune as sp
from sparseprune import ops
from sparseprune.ops.rng import rng_state

OPS = ["masked_weight", "masked_weight_backward", "masked_linear", "masked_linear_backward",
       "masked_conv2d", "masked_conv2d_backward", "reparam_weight", "reparam_weight_backward",
       "hard_concrete_sample", "hard_concrete_sample_backward"]

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


@pytest.mark.parametrize("op", OPS)
def test_cuda_kernels_registered_when_built(op):
    has = torch._C._dispatch_has_kernel_for_dispatch_key(f"sparseprune::{op}", "CUDA")
    assert has == sp.build_info()["cuda"]


@needs_gpu
@pytest.mark.parametrize("numel", [1, 7, 1031, 70001])
def test_noise_matches_cpu_bit_for_bit(numel):
    assert torch.equal(ops.philox_bits(numel, 5, 6, "cuda").cpu(), ops.philox_bits(numel, 5, 6))
    assert torch.equal(ops.logistic_noise(numel, 5, 6, "cuda").cpu(),
                       ops.logistic_noise(numel, 5, 6))


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_aslp_weight_matches_cpu(dtype):
    weight, scores = torch.randn(123, 77).to(dtype), torch.randn(123, 77)
    scale, grad, rng = torch.tensor([1.3]), torch.randn(123, 77).to(dtype), rng_state(9, 1)

    def run(device):
        w, s, c = (t.to(device).requires_grad_() for t in (weight, scores, scale))
        out = ops.aslp_weight(w, s, c, 0.7, rng)
        out.backward(grad.to(device))
        return [t.cpu() for t in (out, w.grad, s.grad)] + [c.grad.cpu()]

    cpu, gpu = run("cpu"), run("cuda")
    for a, b in zip(cpu[:3], gpu[:3]):
        assert torch.equal(a, b)
    torch.testing.assert_close(cpu[3], gpu[3], rtol=1e-6, atol=0)


@needs_gpu
def test_masked_layers_train_on_cuda():
    model = sp.convert(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(),
                                           torch.nn.Linear(8 * 6 * 6, 4)), "aslp",
                       rescale="smart").cuda()
    model(torch.randn(2, 3, 8, 8, device="cuda")).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_reparam_weight_matches_cpu(dtype):
    weight, grad = (torch.randn(37, 211) * 0.05).to(dtype), torch.randn(37, 211).to(dtype)

    def run(device):
        w = weight.to(device).requires_grad_()
        t = torch.tensor([30.0], device=device, requires_grad=True)
        w_hat, h_sum = sp.functional.reparam_weight(w, t, return_sum=True)
        ((w_hat * grad.to(device)).sum() + 0.5 * h_sum).backward()
        return [x.cpu() for x in (w_hat, h_sum, w.grad, t.grad)]

    for a, b in zip(run("cpu"), run("cuda")):
        assert torch.equal(a, b)


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_hard_concrete_sample_matches_cpu(dtype):
    log_alpha, grad = (torch.randn(37, 211) * 3).to(dtype), torch.randn(37, 211).to(dtype)

    def run(device):
        la = log_alpha.to(device).requires_grad_()
        z = ops.hard_concrete_sample(la, 2.0 / 3.0, -0.1, 1.1, rng_state(4, 8))
        z.backward(grad.to(device))
        return [x.cpu() for x in (z, la.grad)]

    for a, b in zip(run("cpu"), run("cuda")):
        assert torch.equal(a, b)
