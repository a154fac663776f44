"""Batched, seeded data augmentation on in-memory image tensors: random crop with zero padding and
random horizontal flip, the standard CIFAR recipe (METHODS.md 1.7), applied per batch."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ... import _validate as V


class Augment:
    """Random ``pad``-pixel translation (pad, then crop back to the input size) and, with ``flip``,
    a horizontal flip with probability 1/2, independently per sample.

    ``fill`` is the per-channel value of the padding in the tensors' (normalised) units, so that it
    matches a black border of the raw images. Deterministic given the generator passed to
    :meth:`__call__`.
    """

    def __init__(self, pad: int = 4, flip: bool = True, fill: Sequence[float] = (0.0,)):
        V.positive_int("pad", pad, minimum=0)
        self.pad, self.flip, self.fill = pad, bool(flip), tuple(float(f) for f in fill)

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Augmented copy of the (N, C, H, W) batch ``x``."""
        if x.dim() != 4:
            raise ValueError(f"augmentation needs (N, C, H, W) images, got shape {tuple(x.shape)}")
        n, c, h, w = x.shape
        if self.pad:
            p = self.pad
            fill = torch.tensor(self.fill if len(self.fill) == c else self.fill[:1] * c,
                                dtype=x.dtype, device=x.device).view(1, c, 1, 1)
            # Pad with 0 around (x - fill), crop, add fill back: a border of exactly `fill`.
            padded = F.pad(x - fill, (p, p, p, p)) + fill
            dy = torch.randint(0, 2 * p + 1, (n,), generator=generator)
            dx = torch.randint(0, 2 * p + 1, (n,), generator=generator)
            rows = (dy[:, None] + torch.arange(h))[:, None, :, None]   # (N, 1, H, 1)
            cols = (dx[:, None] + torch.arange(w))[:, None, None, :]   # (N, 1, 1, W)
            batch = torch.arange(n)[:, None, None, None]
            chans = torch.arange(c)[None, :, None, None]
            x = padded[batch, chans, rows, cols]
        if self.flip:
            flipped = torch.rand(n, generator=generator) < 0.5
            x = torch.where(flipped[:, None, None, None], x.flip(-1), x)
        return x

    def __repr__(self) -> str:
        return f"Augment(pad={self.pad}, flip={self.flip})"
