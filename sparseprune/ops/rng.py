"""Seeds for the counter-based RNG of the fused ops.

Every masking op takes ``rng``, a CPU int64 tensor ``[seed, offset]``, and is a pure function of its
inputs: the same pair gives the same noise on every CPU ISA and on CUDA, and backward regenerates
the forward's noise from the saved pair instead of storing it. Each call draws a fresh pair from a
``torch.Generator`` (torch's default CPU generator unless one is passed), so ``torch.manual_seed``
makes whole runs reproducible and a user-supplied generator isolates a layer's randomness.

The pair travels as a tensor, not as two Python ints, so that ``torch.compile`` can trace the draw
into the graph instead of breaking the graph to read it and recompiling for every new value.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def next_rng(generator: Optional[torch.Generator] = None) -> Tensor:
    """Draw a fresh ``[seed, offset]`` (63-bit each) from ``generator``, advancing it."""
    device = generator.device if generator is not None else torch.device("cpu")
    pair = torch.randint(0, 2**63 - 1, (2,), dtype=torch.int64, generator=generator, device=device)
    return pair if device.type == "cpu" else pair.cpu()


def new_stream(generator: Optional[torch.Generator] = None,
               device: torch.device | str = "cpu") -> Tensor:
    """A fresh stream ``[seed, 0]`` (int64, on ``device``): the seed drawn from ``generator``
    (torch's default one unless given), the step counter at 0. The masked layers keep one each."""
    seed = next_rng(generator)[0]
    return torch.stack((seed, torch.zeros((), dtype=torch.int64))).to(device)


def stream_key(index: int) -> int:
    """A 64-bit value to XOR into a stream's seed so that process ``index`` (a rank) draws noise of
    its own from a stream every process shares (splitmix64 of ``index + 1``; 0 never comes out for
    small indices, so no key leaves the stream unchanged)."""
    z = (int(index) + 1) * 0x9E3779B97F4A7C15 & (2**64 - 1)
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & (2**64 - 1)
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB & (2**64 - 1)
    z ^= z >> 31
    return z - 2**64 if z >= 2**63 else z


def rng_state(seed: int, offset: int = 0) -> Tensor:
    """The ``rng`` argument for a given seed and offset (each a 64-bit integer)."""
    def signed(v: int) -> int:
        v &= 2**64 - 1
        return v - 2**64 if v >= 2**63 else v
    return torch.tensor([signed(seed), signed(offset)], dtype=torch.int64)


def seed_offset(rng: Tensor) -> tuple[int, int]:
    """The ``(seed, offset)`` of an ``rng`` tensor, as unsigned 64-bit integers."""
    seed, offset = rng.tolist()
    return seed & (2**64 - 1), offset & (2**64 - 1)
