"""Small helpers shared by the tests."""

import torch

from sparseprune import reference
from sparseprune.ops.rng import rng_state, seed_offset


def noise_like(t: torch.Tensor, rng: torch.Tensor) -> torch.Tensor:
    """The float64 reference noise the kernels use for a weight-shaped tensor ``t``."""
    return reference.logistic_noise(t.numel(), *seed_offset(rng)).reshape(t.shape)


def near_boundary(scores: torch.Tensor, rng: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Where ``scores + L`` is so close to 0 that kernel and reference may round differently."""
    return (scores.double() + noise_like(scores, rng)).abs() < eps


def random_rng(gen: torch.Generator) -> torch.Tensor:
    seed, offset = torch.randint(0, 2**62, (2,), generator=gen).tolist()
    return rng_state(seed, offset)


def tols(dtype: torch.dtype) -> dict:
    """assert_close tolerances for values computed in `dtype`."""
    return {torch.float64: dict(rtol=1e-9, atol=1e-12), torch.float32: dict(rtol=2e-5, atol=2e-5),
            torch.bfloat16: dict(rtol=2e-2, atol=2e-3),
            torch.float16: dict(rtol=2e-3, atol=2e-4)}[dtype]


def assert_matches_truth(got, low_precision_ref, truth, dtype):
    """float32/64: close to the float64 truth. bf16/fp16: no worse than twice the error of the
    plain low-precision reference path (plus a small floor), the rule flash-attention uses."""
    if dtype in (torch.float32, torch.float64):
        torch.testing.assert_close(got.double(), truth.double(), **tols(got.dtype if
                                   got.dtype in (torch.float32, torch.float64) else dtype))
        return
    if got.numel() == 0:
        assert got.shape == truth.shape
        return
    ours = (got.double() - truth.double()).abs().max()
    plain = (low_precision_ref.double() - truth.double()).abs().max()
    assert ours <= 2 * plain + 1e-2 * truth.double().abs().max() + 1e-6


def check_against_reference(fused, ref_fn, inputs, seed):
    """Runs fused and reference with the same draw; compares outputs and all input gradients
    with the reference evaluated in float64 as the truth."""
    g1, g2, g3 = (torch.Generator().manual_seed(seed) for _ in range(3))
    out = fused(*inputs, generator=g1)
    ref = ref_fn(*inputs, generator=g2)
    wide = [None if t is None else t.detach().double().requires_grad_(t.requires_grad)
            for t in inputs]
    truth = ref_fn(*wide, generator=g3)
    dtype = inputs[0].dtype
    assert_matches_truth(out, ref, truth, dtype)
    grad = torch.randn(out.shape, dtype=torch.float64).to(out.dtype)
    tracked = [i for i, t in enumerate(inputs) if t is not None and t.requires_grad]
    got = torch.autograd.grad(out, [inputs[i] for i in tracked], grad)
    low = torch.autograd.grad(ref, [inputs[i] for i in tracked], grad)
    true = torch.autograd.grad(truth, [wide[i] for i in tracked], grad.double())
    for g, lo, tr in zip(got, low, true):
        assert_matches_truth(g, lo, tr, dtype)


def small_sensitivity_base():
    """conv -> tanh -> linear on 1x4x4 inputs, 3 classes (plain layers)."""
    return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.Tanh(),
                               torch.nn.Flatten(), torch.nn.Linear(2 * 4 * 4, 3))


def sensitivity_net(variant="unspecific", output="softmax", strength=1e-2, density=0.7, seed=0):
    """:func:`small_sensitivity_base` converted to "sensitivity", with some weights pruned."""
    import sparseprune as sp

    model = sp.convert(small_sensitivity_base(), "sensitivity", strength=strength,
                       variant=variant, output=output)
    g = torch.Generator().manual_seed(seed)
    sp.set_masks(model, {n: torch.rand(layer.weight.shape, generator=g) < density
                         for n, layer in sp.masked_layers(model)})
    return model


def sensitivity_batch(n=5, classes=3):
    """Random non-zero inputs for :func:`sensitivity_net` and labels."""
    return torch.randn(n, 1, 4, 4), torch.randint(classes, (n,))
