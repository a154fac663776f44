"""The random stream in NumPy: Philox4x32-10, the open-interval uniforms and the logistic noise,
computed independently of the kernels (float64 ``log``)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_LOW32 = np.uint64(0xFFFFFFFF)


def philox4x32_10(counter: np.ndarray, key: tuple[int, int]) -> np.ndarray:
    """Philox4x32-10 of Salmon et al. (SC'11). ``counter``: uint32 array of shape (4, n);
    ``key``: two 32-bit ints. Returns the (4, n) uint32 output words."""
    c = [np.asarray(counter[i], dtype=np.uint64) for i in range(4)]
    k0, k1 = int(key[0]) & 0xFFFFFFFF, int(key[1]) & 0xFFFFFFFF
    for _ in range(10):
        p0, p1 = _M0 * c[0], _M1 * c[2]  # exact: both factors < 2^32
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ np.uint64(k0), p1 & _LOW32,
             (p0 >> np.uint64(32)) ^ c[3] ^ np.uint64(k1), p0 & _LOW32]
        k0, k1 = (k0 + _W0) & 0xFFFFFFFF, (k1 + _W1) & 0xFFFFFFFF
    return np.stack(c).astype(np.uint32)


def _words(numel: int, seed: int, offset: int) -> np.ndarray:
    # Element i takes word i % 4 of block i / 4; counter = (block low, block high, offset low, high).
    blocks = np.arange((numel + 3) // 4, dtype=np.uint64)
    seed, offset = seed & (2**64 - 1), offset & (2**64 - 1)
    counter = np.stack([blocks & _LOW32, blocks >> np.uint64(32),
                        np.full_like(blocks, offset & 0xFFFFFFFF), np.full_like(blocks, offset >> 32)])
    words = philox4x32_10(counter, (seed & 0xFFFFFFFF, seed >> 32))
    return words.T.reshape(-1)[:numel]


def philox_bits(numel: int, seed: int, offset: int) -> Tensor:
    """The raw stream as int32 bit patterns, like ``sparseprune.ops.philox_bits``."""
    return torch.from_numpy(_words(numel, seed, offset).view(np.int32).copy())


def uniform(numel: int, seed: int, offset: int) -> Tensor:
    """Uniforms in (0, 1): ``(k + 0.5) * 2^-23`` with k the top 23 bits of each word (float64)."""
    k = (_words(numel, seed, offset) >> np.uint32(9)).astype(np.float64)
    return torch.from_numpy((k + 0.5) * 2.0**-23)


def logistic_noise(numel: int, seed: int, offset: int) -> Tensor:
    """``L = log(u) - log1p(-u)`` in float64."""
    u = uniform(numel, seed, offset)
    return torch.log(u) - torch.log1p(-u)
