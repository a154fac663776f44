"""Helpers of the CUDA tests (tests/ops/test_cuda*.py): the same computation on CPU and on CUDA,
compared bit for bit where the numeric contract promises it (csrc/README.md) and by relative error
where ATen's GEMM or convolution sums in another order; inputs laid out to reach both the vector
and the scalar paths of the kernels. Without a GPU every test that uses them skips."""

from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

import pytest
import torch

# SPARSEPRUNE_CUDA_TESTS_ON_CPU=1: a dry run without a GPU, the "device" side on the CPU too, so
# every comparison is CPU against CPU. It checks the tests' own code (benchmarks/gpu_check.py runs
# it in CPU mode, so CI keeps them from rotting), never the CUDA kernels.
ON_CPU = os.environ.get("SPARSEPRUNE_CUDA_TESTS_ON_CPU") == "1"
DEVICE = "cpu" if ON_CPU else "cuda"
needs_gpu = pytest.mark.skipif(not (torch.cuda.is_available() or ON_CPU),
                               reason="no CUDA device here")
needs_real_gpu = pytest.mark.skipif(not torch.cuda.is_available() or ON_CPU,
                                    reason="needs a CUDA device (not the CPU dry run)")


def full_or_dry(full, dry):
    """``full`` on a GPU; ``dry``, a smaller case of the same code, in the CPU dry run."""
    return dry if ON_CPU else full

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
TILE = 4096           # elements per reduction tile (csrc/include/sparseprune/params.h)
OVER_2_24 = (4097, 4097)  # 16 785 409 elements: past float32's exact integers and 4097 tiles

_BITS = {torch.float64: torch.int64, torch.float32: torch.int32, torch.bfloat16: torch.int16,
         torch.float16: torch.int16}


# ---- layouts: where the data sits in memory, the logical values unchanged ----------------------

def _contiguous(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous()


def _misaligned(t: torch.Tensor) -> torch.Tensor:
    """Contiguous, but starting one element past an allocation boundary: no 8/16-byte vector
    access is legal, so the kernels take their scalar path."""
    buf = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    out = buf[1:].view(t.shape)
    out.copy_(t)
    return out


def _transposed(t: torch.Tensor) -> torch.Tensor:
    """The same logical tensor stored with its first and last dimensions swapped."""
    if t.dim() < 2:
        return _strided(t)
    return t.transpose(0, -1).contiguous().transpose(0, -1)


def _strided(t: torch.Tensor) -> torch.Tensor:
    """Every other element of a buffer twice as wide (last-dimension stride 2)."""
    buf = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
    buf[..., ::2] = t
    return buf[..., ::2]


LAYOUTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "contiguous": _contiguous, "misaligned": _misaligned, "transposed": _transposed,
    "strided": _strided}


def place(t: Optional[torch.Tensor], device: str, layout: str = "contiguous"):
    """``t`` on ``device`` in ``layout`` (None stays None)."""
    if t is None:
        return None
    out = LAYOUTS[layout](t.to(device))
    assert torch.equal(out.cpu(), t.cpu())
    return out


# ---- comparisons ---------------------------------------------------------------------------------

def bits(t: torch.Tensor) -> torch.Tensor:
    """The bit pattern of a floating tensor (integers and bools as they are), on the CPU."""
    t = t.detach().cpu().contiguous()
    return t.view(_BITS[t.dtype]) if t.dtype in _BITS else t


def _describe(a: torch.Tensor, b: torch.Tensor) -> str:
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"shape/dtype {tuple(a.shape)} {a.dtype} vs {tuple(b.shape)} {b.dtype}"
    differ = (bits(a) != bits(b)).reshape(-1)
    n = int(differ.sum())
    first = int(differ.nonzero()[0]) if n else -1
    fa, fb = a.detach().cpu().reshape(-1), b.detach().cpu().reshape(-1)
    same_values = bool((fa.double() == fb.double()).all()) if a.is_floating_point() else False
    note = " (values equal: signed zeros or NaN payloads differ)" if same_values else ""
    diff = (fa.double() - fb.double()).abs()
    diff = diff[~diff.isnan()]
    worst = float(diff.max()) if diff.numel() else float("nan")
    return (f"{n} of {a.numel()} elements differ{note}; first at flat index {first}: "
            f"{fa[first].item()} (cpu) vs {fb[first].item()} (cuda); max |diff| {worst:.3g}")


# float64 is the one exception to bit-identity (csrc/README.md, the numeric contract): its path
# calls the C library's exp / log on the CPU and libdevice's on CUDA, each within an ulp or two of
# the true value, so results agree to within a few hundred ulp of the tensor's largest magnitude
# (gradients through a softmax sum such differences); any real bug differs by far more.
FLOAT64_ULPS = 256


def _float64_close(a: torch.Tensor, b: torch.Tensor) -> bool:
    a64, b64 = a.detach().cpu(), b.detach().cpu()
    if not torch.equal(a64.isnan(), b64.isnan()):
        return False
    finite = a64.isfinite()
    if not torch.equal(a64[~finite & ~a64.isnan()], b64[~finite & ~a64.isnan()]):
        return False
    scale = float(a64[finite].abs().max()) if bool(finite.any()) else 0.0
    tol = FLOAT64_ULPS * torch.finfo(torch.float64).eps * max(scale, 1e-300)
    return bool(((a64[finite] - b64[finite]).abs() <= tol).all())


def assert_same_bits(cpu: Sequence, cuda: Sequence, names: Sequence[str]) -> None:
    """Every pair bit-identical (None matches None), float64 within ``FLOAT64_ULPS``; the message
    names the first that is not."""
    assert len(cpu) == len(cuda) == len(names)
    for name, a, b in zip(names, cpu, cuda):
        if a is None or b is None:
            assert a is None and b is None, f"{name}: {a is None=} but {b is None=}"
            continue
        if not (a.shape == b.shape and a.dtype == b.dtype):
            pytest.fail(f"{name}: CPU and CUDA differ: {_describe(a, b)}")
        same = (_float64_close(a, b) if a.dtype == torch.float64
                else torch.equal(bits(a), bits(b)))
        if not same:
            pytest.fail(f"{name}: CPU and CUDA differ: {_describe(a, b)}")


# Relative error (Frobenius) allowed between CPU and CUDA where GEMM / convolution sum in another
# order: a few units in the last place of the dtype, times a margin for long sums.
REL = {torch.float64: 1e-12, torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 3e-3}


def assert_close_rel(cpu: Sequence, cuda: Sequence, names: Sequence[str],
                     dtype: torch.dtype, factor: float = 1.0) -> None:
    """``|a - b| / max(|a|, tiny) <= REL[dtype] * factor`` in the Frobenius norm, pair by pair."""
    for name, a, b in zip(names, cpu, cuda):
        if a is None or b is None:
            assert a is None and b is None, f"{name}: {a is None=} but {b is None=}"
            continue
        assert a.shape == b.shape and a.dtype == b.dtype, \
            f"{name}: {tuple(a.shape)} {a.dtype} vs {tuple(b.shape)} {b.dtype}"
        a64, b64 = a.detach().cpu().double(), b.detach().cpu().double()
        assert bool(torch.isfinite(a64).all()) == bool(torch.isfinite(b64).all()), \
            f"{name}: non-finite values on one device only"
        num = float(torch.linalg.vector_norm(a64 - b64))
        den = max(float(torch.linalg.vector_norm(a64)), 1e-30)
        assert num / den <= REL[dtype] * factor, \
            f"{name}: relative error {num / den:.3g} > {REL[dtype] * factor:.3g}"


class exact_fp32:
    """Context: no TF32 in cuBLAS / cuDNN (both default to it for convolutions), so float32 CUDA
    results differ from the CPU's only by summation order."""

    def __enter__(self):
        self._saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        return self

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self._saved
        return False


# ---- the fused mask configurations ---------------------------------------------------------------

# name: (method, rescale, density) as the raw ops take them.
MASK_CONFIGS = {
    "aslp": ("aslp", "none", 1.0),
    "aslp+smart": ("aslp", "smart", 1.0),
    "aslp+dwr": ("aslp", "dwr", 1.0),
    "supermask": ("supermask", "none", 1.0),
    "supermask+smart": ("supermask", "smart", 1.0),
    "supermask+dwr": ("supermask", "dwr", 1.0),
    "edge_popup": ("edge_popup", "none", 0.3),
}
TEMPERATURE = 0.7


def functional_options(config: str) -> dict:
    """The keyword arguments of ``sp.functional.masked_linear`` / ``masked_conv2d`` (less the
    scale) for a :data:`MASK_CONFIGS` entry."""
    method, rescale, density = MASK_CONFIGS[config]
    return {"method": method, "rescale": None if rescale in ("none", "smart") else rescale,
            "density": density if method == "edge_popup" else None,
            "temperature": TEMPERATURE if method == "aslp" else 1.0}


def random_inputs(shape, dtypes: Sequence[torch.dtype], seed: int, scales=None) -> list:
    """One tensor of ``shape`` per dtype, N(0, scale^2) drawn in float64 then rounded."""
    g = torch.Generator().manual_seed(seed)
    scales = scales or [1.0] * len(dtypes)
    return [(torch.randn(shape, generator=g, dtype=torch.float64) * s).to(d)
            for d, s in zip(dtypes, scales)]
