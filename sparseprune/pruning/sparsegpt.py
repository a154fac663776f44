"""SparseGPT's reconstruction (Frantar & Alistarh, ICML 2023) on one weight matrix: the column
sweep with adaptive mask selection and optimal-brain-surgeon updates of the kept weights,
docs/METHODS.md section 15, written from the description there (not from the reference code).

``W`` is the layer's weight as an ``[out, in]`` matrix (:mod:`.matrices`), ``H`` the sum of
``x x^T`` over the calibration inputs (the scale does not matter: the dampening is relative).
Steps (15.2, 15.3):

1. dead inputs (``H_jj == 0``: never nonzero in the calibration data) get ``H_jj = 1`` and
   their weights 0, before the dampening, as the reference;
2. ``H += percdamp * mean(diag H) * I``; ``U`` = the upper Cholesky factor of ``H^-1``
   (``H^-1 = U^T U``). If a Cholesky factorisation fails, ``percdamp`` is multiplied by 10 and
   it is tried again, at most 3 more times, each retry logged (the reference raises);
3. columns in blocks of ``blocksize`` (128): unstructured, the block's ``[out, blocksize]``
   scores ``W^2 / U_jj^2`` (with the updates of earlier blocks) select the kept weights of the
   whole block at once; N:M, each group of M columns is selected when the sweep reaches its
   first column, from the scores at that point. Then column by column: pruned weights become
   exactly 0 and their error ``(w - q) / U_jj`` is spread over the later columns of the block
   (``W[:, j:] -= err U[j, j:]``), and after the block over the rest of the layer at once.

Counts are exact where the reference's are approximate: the reference prunes every score at or
below the block's ``int(numel * sparsity)``-th smallest (one more than its share, plus ties);
here block b keeps exactly ``round(d * out * end_b) - round(d * out * start_b)`` weights (d the
density), so the layer keeps exactly ``round(d * out * in)``; ties keep the lower index. N:M
keeps exactly N of every group, ties to the lower index.

Precision: float64 on CPU for ``in <= 4096`` (the Cholesky of a float32 Hessian is what fails
first), float32 otherwise; on CUDA float32 with TF32 off, as the reference.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator, Optional

import torch
from torch import Tensor

from ..select import top_k_masks, top_n_of_m

log = logging.getLogger("sparseprune.pruning")

CPU_FLOAT64_MAX_IN = 4096  # float64 on CPU up to this many inputs (docs/METHODS.md 15, note 1)
DAMP_RETRIES = 3           # extra Cholesky attempts, each with 10x the dampening


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    """CUDA float32 matrix products in full precision inside the block (as the reference)."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def compute_dtype(columns: int, device: torch.device) -> torch.dtype:
    """float64 on CPU for layers with up to 4096 inputs, else float32."""
    return torch.float64 if device.type == "cpu" and columns <= CPU_FLOAT64_MAX_IN \
        else torch.float32


def inverse_cholesky(H: Tensor, percdamp: float, *, layer: str = "layer") -> tuple[Tensor, float]:
    """``(U, damp)``: the upper Cholesky factor of ``(H + damp * mean(diag H) I)^-1`` and the
    dampening fraction used (``percdamp``, or 10x, 100x, 1000x it after failed attempts)."""
    mean = H.diagonal().mean()
    eye = torch.arange(H.shape[0], device=H.device)
    for attempt in range(DAMP_RETRIES + 1):
        damp = percdamp * 10 ** attempt
        damped = H.clone()
        damped[eye, eye] += damp * mean
        lower, info = torch.linalg.cholesky_ex(damped)
        if int(info) == 0:
            inverse = torch.cholesky_inverse(lower)
            upper, info = torch.linalg.cholesky_ex(inverse, upper=True)
            if int(info) == 0 and bool(torch.isfinite(upper).all()):
                return upper, damp
        if attempt < DAMP_RETRIES:
            log.warning("sparsegpt: %s: Cholesky failed with dampening %g x mean(diag H); "
                        "retrying with %g", layer, damp, damp * 10)
    raise ValueError(f"sparsegpt: {layer}: the Hessian is not positive definite even with "
                     f"dampening {damp:g} x mean(diag H) (percdamp={percdamp:g}, retried "
                     f"{DAMP_RETRIES} times); raise percdamp or calibrate on more data")


def _block_keep_counts(density: float, rows: int, columns: int, blocksize: int) -> list[int]:
    """Kept weights per column block, cumulatively rounded so that they sum to
    ``round(density * rows * columns)``."""
    ends = list(range(0, columns, blocksize))[1:] + [columns]
    counts, before = [], 0
    for end in ends:
        total = round(density * rows * end)
        counts.append(total - before)
        before = total
    return counts


@torch.no_grad()
def sparsegpt(W: Tensor, H: Tensor, *, density: Optional[float] = None,
              pattern: Optional[tuple[int, int]] = None, blocksize: int = 128,
              percdamp: float = 0.01, dtype: Optional[torch.dtype] = None,
              layer: str = "layer") -> tuple[Tensor, Tensor, float]:
    """Prune ``W`` ``[out, in]`` with SparseGPT given the input Gram matrix ``H`` ``[in, in]``.

    Exactly one of ``density`` (fraction kept) and ``pattern`` (``(n, m)``: n kept of every m
    consecutive inputs; ``blocksize`` must be a multiple of m). Returns ``(W_hat, keep,
    damp)``: the updated weights (``dtype``, default :func:`compute_dtype`; exact zeros where
    pruned), the boolean keep mask, and the dampening fraction the Cholesky needed. ``W`` and
    ``H`` are not modified.
    """
    rows, columns = W.shape
    dtype = dtype or compute_dtype(columns, W.device)
    W = W.detach().to(dtype=dtype, copy=True)
    H = H.detach().to(device=W.device, dtype=dtype, copy=True)
    dead = H.diagonal() == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    U, damp = inverse_cholesky(H, percdamp, layer=layer)
    del H
    keep = torch.ones(rows, columns, dtype=torch.bool, device=W.device)
    counts = None if density is None else _block_keep_counts(density, rows, columns, blocksize)
    for b, start in enumerate(range(0, columns, blocksize)):
        end = min(start + blocksize, columns)
        W1 = W[:, start:end].clone()              # contiguous: the column loop is faster
        U1 = U[start:end, start:end]
        d = U1.diagonal()
        if counts is not None:
            keep[:, start:end] = top_k_masks([W1.square() / d.square()], counts[b])[0]
        pruned = ~keep[:, start:end]
        err = torch.zeros_like(W1)
        for j in range(end - start):
            if pattern is not None and j % pattern[1] == 0:
                n, m = pattern
                scores = W1[:, j:j + m].square() / d[j:j + m].square()
                keep[:, start + j:start + j + m] = top_n_of_m(scores, n, m, layer=layer)
                pruned[:, j:j + m] = ~keep[:, start + j:start + j + m]
            # err_j = (w_j - q_j) / U_jj: the pruned weights' values; the kept ones' are 0
            torch.mul(W1[:, j], pruned[:, j], out=err[:, j]).div_(d[j])
            W1[:, j:].addr_(err[:, j], U1[j, j:], alpha=-1)
            W1[:, j].masked_fill_(pruned[:, j], 0)  # exactly 0 (the update leaves it ~0)
        W[:, start:end] = W1
        if end < columns:
            W[:, end:].sub_(err @ U[start:end, end:])
    return W, keep, damp
