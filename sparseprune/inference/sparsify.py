""":func:`to_sparse`: finalized (or masked, in eval mode) layers become sparse inference layers.

``format="auto"`` decides per layer among dense, CSR, bitmap and (linear layers whose weight is
N:M) ``"nm"``. Without an example input it applies the latency model of :mod:`.cost` (per-call
cost, memory traffic, FLOP rate; measured on the project's benchmark machine) at the
``batch_sizes`` the user names (input rows: batch x tokens for a transformer), and keeps a sparse
format only where it is estimated clearly faster than dense at every one of them. With
``example_input`` it runs the model once to capture each layer's real input and times the
candidates on it, keeping the fastest (dense on ties). The choice and its reason show in
:func:`sparseprune.sparsity_report` (column ``format``, e.g. ``"dense: 0.004 ms layer ..."``).
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn

from .. import _validate as V
from ..ops import formats, nm_format
from ..convert import Filter, replace_module, selected
from ..nn.masked import MaskedLayer
from ..nn import semi_structured
from ..nn.sparse import SparseConv2d, SparseLayer, SparseLinear, nm_pattern
from . import cost

FORMAT_CHOICES = ("auto",) + formats.LAYER_FORMATS
_SPARSE = {nn.Linear: SparseLinear, nn.Conv2d: SparseConv2d}
# Where a layer left dense by format="auto" keeps the reason (read by the sparsity report).
REASON_ATTR = "sparse_format_reason"

def auto_format(density: float, rows: int, cols: int) -> str:
    """The format the latency model picks at batch 1 for a ``rows x cols`` weight of ``density``
    that is not N:M: ``"csr"``, ``"bitmap"`` or ``"dense"``."""
    layer = cost.Layer(rows, cols, round(density * rows * cols))
    return cost.choose(layer, formats.FORMATS, (1,))[0]


def _cost_layer(matrix: Tensor, pattern: Optional[tuple[int, int]]) -> cost.Layer:
    rows, cols = matrix.shape
    value_bytes = 2 if matrix.dtype == torch.bfloat16 else 4
    if pattern is None:
        return cost.Layer(rows, cols, int(torch.count_nonzero(matrix)), value_bytes)
    return cost.Layer(rows, cols, int(torch.count_nonzero(matrix)), value_bytes,
                      nm_format.slots_per_row(cols, pattern), nm_format.index_bits(pattern[1]))


def _candidates(layer: nn.Module,
                matrix: Tensor) -> tuple[tuple[str, ...], Optional[tuple[int, int]], str]:
    """The sparse formats that can hold ``layer`` (its weight ``matrix``), its N:M pattern, and why
    the N:M formats cannot (empty if they can)."""
    pattern, why = None, ""
    if isinstance(layer, nn.Linear):
        pattern = nm_format.detect(matrix)
        why = "" if pattern else f"not N:M: {nm_format.why_not(matrix)}"
        density = float(torch.count_nonzero(matrix)) / max(1, matrix.numel())
        if pattern is not None and density < 0.5 * pattern[0] / pattern[1]:
            # An unstructured mask that happens to comply: the nm slots would be mostly zeros.
            why = f"{pattern[0]}:{pattern[1]}-compliant at density {density:.3f} only"
            pattern = None
    nm = "nm"
    if matrix.is_cuda:  # the nm kernels are CPU-only; 2:4 runs PyTorch's kernels there
        nm = "semi_structured" if pattern is not None and pattern[1] == 4 \
            and semi_structured.unavailable(matrix.device) is None else ""
        why = why or ("" if nm else "no semi-structured 2:4 kernels for it on this device")
    if matrix.dtype != torch.float32:
        rows = (nm,) if pattern is not None and nm else ()
        return rows, pattern, why or (f"{matrix.dtype} weights: the csr and bitmap kernels run "
                                      "in float32")
    return formats.FORMATS + ((nm,) if pattern is not None and nm else ()), pattern, why


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


def _sparse_twin(layer: nn.Module, format: str, name: str = "") -> SparseLayer:
    if format in formats.NM_FORMATS:
        if type(layer) is not nn.Linear:
            raise ValueError(f"to_sparse: format {format!r} is for linear layers; layer "
                             f"{name or '(model)'} is a {type(layer).__name__} (exclude it, or use "
                             "format='auto')")
        try:
            nm_pattern(_matrix(layer), format)
        except ValueError as exc:
            raise ValueError(f"to_sparse: layer {name or '(model)'}: {exc}") from None
    return _SPARSE[type(layer)].from_dense(layer, format)


def _median_seconds(fn: Callable[[], Any], device: torch.device, repeat: int = 5) -> float:
    """Median wall time of ``fn()``; on CUDA each call waits for its kernels."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    times = []
    for _ in range(repeat):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _timed_choice(layer: nn.Module, input: Tensor, formats_: tuple[str, ...]) -> tuple[str, str]:
    """``(format, reason)``: the fastest of dense and ``formats_`` on ``input``, timed in
    interleaved rounds (dense wins ties)."""
    candidates = {"dense": layer}
    candidates.update({f: _sparse_twin(layer, f) for f in formats_})
    times: dict[str, list[float]] = {name: [] for name in candidates}
    with torch.no_grad():
        for _ in range(3):
            for name, module in candidates.items():
                times[name].append(_median_seconds(lambda: module(input), input.device))
    median = {name: statistics.median(t) for name, t in times.items()}
    best = min(median, key=lambda name: (median[name], name != "dense"))
    rows = input.numel() // max(1, input.shape[-1]) if isinstance(layer, nn.Linear) \
        else input.shape[0]
    if best == "dense":
        return best, f"dense: {median['dense'] * 1e3:.3f} ms layer, measured fastest ({rows} rows)"
    return best, f"{best}: measured {median[best] * 1e3:.3f} ms vs dense " \
        f"{median['dense'] * 1e3:.3f} ms ({rows} rows)"


def _batch_sizes(batch_sizes: Optional[Sequence[int]]) -> tuple[int, ...]:
    if batch_sizes is None:
        return (1,)
    if isinstance(batch_sizes, int) or not all(
            isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in batch_sizes) \
            or len(batch_sizes) == 0:
        raise ValueError(f"to_sparse: batch_sizes must be a non-empty sequence of ints >= 1 (input "
                         f"rows per layer call), got {batch_sizes!r}")
    return tuple(batch_sizes)


def _auto(layer: nn.Module, input: Optional[Tensor], batches: tuple[int, ...]) -> tuple[str, str]:
    """``(format, reason)`` for one layer under format="auto"."""
    matrix = _matrix(layer)
    candidates, pattern, why = _candidates(layer, matrix)
    if not candidates:
        return "dense", f"dense: {why}"
    if input is not None:
        return _timed_choice(layer, input, candidates)
    if matrix.is_cuda:
        # The latency model is the CPU kernels' (and on an H200 PyTorch's 2:4 kernels ran at
        # 0.04-0.08x dense): on a GPU only a timing on the real input may pick a sparse format.
        return "dense", ("dense: CUDA layer, no latency model for the GPU (pass example_input to "
                         "time the formats on it)")
    chosen, reason = cost.choose(_cost_layer(matrix, pattern), candidates, batches)
    return chosen, reason + (f" ({why})" if why and chosen == "dense" else "")


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
              exclude: Filter = None, example_input: Any = None,
              batch_sizes: Optional[Sequence[int]] = None) -> nn.Module:
    """Swap the finalized ``nn.Linear`` / ``nn.Conv2d`` layers of ``model`` (zeros = pruned), and
    its masked layers in eval mode, for :class:`~sparseprune.nn.SparseLinear` /
    :class:`~sparseprune.nn.SparseConv2d`, in place.

    ``format``: ``"csr"``, ``"bitmap"``, ``"nm"`` (linear layers whose weight keeps at most N of
    every M consecutive inputs, M = 4 or 8, N <= M / 2; float32 or bfloat16; ValueError naming the
    layer otherwise), ``"semi_structured"`` (2:4 linear layers; PyTorch's 2:4 kernels on CUDA,
    the nm kernel on CPU) or ``"auto"`` (per layer, see the module docstring; ``example_input``, a
    tensor or a tuple of positional inputs, makes it time the candidates on the layers' real
    inputs; else ``batch_sizes``, the input rows per layer call to be fast at, default ``(1,)``).
    Layers left dense by ``"auto"`` stay plain (masked ones become their finalized dense twin).
    ``include`` / ``exclude`` select layers as in :func:`sparseprune.convert`. The result is an
    inference model: its remaining parameters (dense layers, norms) are frozen. Returns the model
    (a new module if ``model`` is itself a layer).
    """
    V.choice("format", format, FORMAT_CHOICES)
    batches = _batch_sizes(batch_sizes)
    names = [name for name, module in model.named_modules()
             if (isinstance(module, MaskedLayer) or type(module) in _SPARSE)
             and selected(name, module, include, exclude)]
    inputs = {}
    if format == "auto" and example_input is not None:
        inputs = layer_inputs(model, names, example_input)
    for name in names:
        layer = _dense_layer(model.get_submodule(name))
        if format == "auto":
            chosen, reason = _auto(layer, inputs.get(name), batches)
        else:
            if layer.weight.dtype != torch.float32 and format not in formats.NM_FORMATS:
                raise TypeError(f"to_sparse: layer {name or '(model)'} has {layer.weight.dtype} "
                                "weights; the sparse kernels run in float32 (call model.float(); "
                                "format='nm' also takes N:M bfloat16 layers)")
            chosen, reason = format, ""
        if chosen == "dense":
            new = layer
            setattr(new, REASON_ATTR, reason)
        else:
            new = _sparse_twin(layer, chosen, name)
            new.format_reason = reason
        model = replace_module(model, name, new)
    # An inference model: a dense layer left trainable would make every later sparse layer's
    # input require a gradient the sparse kernels cannot give.
    return model.requires_grad_(False)
