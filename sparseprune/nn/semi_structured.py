"""The CUDA path of format ``"semi_structured"``: a 2:4 :class:`~sparseprune.nn.SparseLinear`'s
weight as PyTorch's semi-structured sparse tensor (``torch.sparse.to_sparse_semi_structured``:
cuSPARSELt or CUTLASS 2:4 kernels), built on first use for the input's device and dtype, then
``F.linear``. The layer stores the weight in the ``"nm"`` layout (so it saves, loads and runs the
nm CPU kernel on CPU inputs); this module is only its CUDA kernel choice.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def unavailable(device: Any = None) -> Optional[str]:
    """Why semi-structured sparse kernels cannot run (on ``device``), or None if they can."""
    if not torch.cuda.is_available():
        return "no CUDA device (torch.sparse.to_sparse_semi_structured runs on CUDA only)"
    if not hasattr(torch.sparse, "to_sparse_semi_structured"):
        return f"torch {torch.__version__} has no torch.sparse.to_sparse_semi_structured"
    major, _ = torch.cuda.get_device_capability(device)
    if major < 8:
        return f"semi-structured sparsity needs a GPU of compute capability >= 8.0, got {major}.x"
    return None


def weight(layer: Any, device: torch.device, dtype: torch.dtype) -> Tensor:
    """The layer's semi-structured weight on ``device`` in ``dtype``, built once and cached."""
    key = (device, dtype)
    cached = getattr(layer, "_semi_structured", None)
    if cached is None or cached[0] != key:
        reason = unavailable(device)
        if reason is not None:
            raise RuntimeError(f"SparseLinear(format='semi_structured'): {reason}")
        dense = layer.dense_weight().to(device=device, dtype=dtype)
        try:
            sparse = torch.sparse.to_sparse_semi_structured(dense)
        except (RuntimeError, ValueError) as exc:
            raise ValueError(f"SparseLinear(format='semi_structured'): PyTorch refuses the "
                             f"{tuple(dense.shape)} {dtype} weight ({exc}); use format='nm' or "
                             "'auto'") from None
        layer._semi_structured = cached = (key, sparse)
    return cached[1]


def linear(layer: Any, input: Tensor) -> Tensor:
    """``F.linear(input, weight, bias)`` with the layer's semi-structured weight; any leading
    shape (flattened to one batch dimension, which PyTorch pads as its kernels need)."""
    w = weight(layer, input.device, input.dtype)
    bias = None if layer.bias is None else layer.bias.to(input.dtype)
    flat = input.reshape(-1, input.shape[-1])
    return F.linear(flat, w, bias).view(*input.shape[:-1], w.shape[0])
