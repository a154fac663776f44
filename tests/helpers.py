"""Small helpers shared by the tests."""

import torch

from sparseprune import reference
from sparseprune.rng import rng_state, seed_offset


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
