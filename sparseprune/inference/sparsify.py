""":func:`to_sparse`: finalized (or masked, in eval mode) layers become sparse inference layers.

``format="auto"`` decides per layer. Without an example input it applies a rule measured on the
project's benchmark machine (see :func:`auto_format`): CSR at low density, the bitmap format at
moderate density, and dense where the sparse kernels would not win. With ``example_input`` it runs
the model once to capture each layer's real input and times dense, CSR and bitmap on it, keeping
the fastest. The choice shows in :func:`sparseprune.sparsity_report` (column ``format``).
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

from .. import _validate as V
from ..ops import formats
from ..convert import Filter, replace_module, selected
from ..nn.masked import MaskedLayer
from ..nn.sparse import SparseConv2d, SparseLayer, SparseLinear

FORMAT_CHOICES = ("auto",) + formats.FORMATS
_SPARSE = {nn.Linear: SparseLinear, nn.Conv2d: SparseConv2d}

# The auto rule's thresholds (density = kept / total), from benchmarks/sparse_bench.py on a 2-core
# AVX-512 machine: below CSR_BELOW CSR wins at every batch size; up to DENSE_ABOVE the bitmap
# format (1 bit per pruned weight) still beats dense; above it the dense kernels win.
CSR_BELOW = 0.2
DENSE_ABOVE = 0.45
# Layers this small run in microseconds either way; the call overheads decide, and dense has the
# lower one.
MIN_WEIGHTS = 4096


def auto_format(density: float, rows: int, cols: int) -> str:
    """The format the rule picks for a ``rows x cols`` weight: ``"csr"``, ``"bitmap"`` or
    ``"dense"``."""
    if rows * cols < MIN_WEIGHTS or density > DENSE_ABOVE:
        return "dense"
    return "csr" if density <= CSR_BELOW else "bitmap"


def _dense_layer(module: nn.Module) -> Optional[nn.Module]:
    """The plain nn.Linear / nn.Conv2d a candidate layer computes (None if it is not one)."""
    if isinstance(module, MaskedLayer):
        if module.training:
            raise ValueError("to_sparse: masked layers must be in eval mode (call model.eval(); "
                             "a masked layer in training mode samples a new mask on every call)")
        return module.to_dense(module.method.final_weight(module))
    return module if type(module) in _SPARSE else None


def _matrix(layer: nn.Module) -> Tensor:
    return layer.weight.detach().reshape(layer.weight.shape[0], -1)


def _sparse_twin(layer: nn.Module, format: str) -> SparseLayer:
    return _SPARSE[type(layer)].from_dense(layer, format)


def _median_seconds(fn: Callable[[], Any], repeat: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _timed_choice(layer: nn.Module, input: Tensor) -> str:
    """The fastest of dense, CSR and bitmap on ``input``, timed in interleaved rounds."""
    candidates = {"dense": layer}
    candidates.update({f: _sparse_twin(layer, f) for f in formats.FORMATS})
    times: dict[str, list[float]] = {name: [] for name in candidates}
    with torch.no_grad():
        for _ in range(3):
            for name, module in candidates.items():
                times[name].append(_median_seconds(lambda: module(input)))
    return min(times, key=lambda name: (statistics.median(times[name]), name != "dense"))


def layer_inputs(model: nn.Module, names: list[str], example_input: Any) -> dict[str, Tensor]:
    """Each named layer's input during one forward pass of ``example_input``."""
    captured: dict[str, Tensor] = {}
    hooks = [model.get_submodule(name).register_forward_pre_hook(
        lambda module, args, name=name: captured.setdefault(name, args[0].detach()))
        for name in names]
    try:
        with torch.no_grad():
            model(*example_input) if isinstance(example_input, tuple) else model(example_input)
    finally:
        for hook in hooks:
            hook.remove()
    return captured


@torch.no_grad()
def to_sparse(model: nn.Module, *, format: str = "auto", include: Filter = None,
              exclude: Filter = None, example_input: Any = None) -> nn.Module:
    """Swap the finalized ``nn.Linear`` / ``nn.Conv2d`` layers of ``model`` (zeros = pruned), and
    its masked layers in eval mode, for :class:`~sparseprune.nn.SparseLinear` /
    :class:`~sparseprune.nn.SparseConv2d`, in place.

    ``format``: ``"csr"``, ``"bitmap"`` or ``"auto"`` (per layer, see the module docstring;
    ``example_input``, a tensor or a tuple of positional inputs, makes it time the candidates on
    the layers' real inputs). Layers left dense by ``"auto"`` stay plain (masked ones become their
    finalized dense twin). ``include`` / ``exclude`` select layers as in
    :func:`sparseprune.convert`. The result is an inference model: its remaining parameters
    (dense layers, norms) are frozen. Returns the model (a new module if ``model`` is itself a
    layer).
    """
    V.choice("format", format, FORMAT_CHOICES)
    names = [name for name, module in model.named_modules()
             if (isinstance(module, MaskedLayer) or type(module) in _SPARSE)
             and selected(name, module, include, exclude)]
    inputs = {}
    if format == "auto" and example_input is not None:
        inputs = layer_inputs(model, names, example_input)
    for name in names:
        layer = _dense_layer(model.get_submodule(name))
        chosen = format
        if layer.weight.dtype != torch.float32:
            if format != "auto":
                raise TypeError(f"to_sparse: layer {name or '(model)'} has {layer.weight.dtype} "
                                "weights; the sparse kernels run in float32 (call model.float())")
            chosen = "dense"
        elif format == "auto":
            matrix = _matrix(layer)
            density = float(torch.count_nonzero(matrix)) / max(1, matrix.numel())
            chosen = _timed_choice(layer, inputs[name]) if name in inputs \
                else auto_format(density, *matrix.shape)
        new = layer if chosen == "dense" else _sparse_twin(layer, chosen)
        model = replace_module(model, name, new)
    # An inference model: a dense layer left trainable would make every later sparse layer's
    # input require a gradient the sparse kernels cannot give.
    return model.requires_grad_(False)
