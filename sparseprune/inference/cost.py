"""The latency model ``format="auto"`` decides with when it has no example input: per format, a
fixed cost per call plus the larger of its memory traffic over the bandwidth and its FLOPs over
the rate its kernels reach, for one linear layer (a convolution: its unfolded matrix) at a given
number of input rows (batch x tokens for a transformer).

The constants were measured on the project's benchmark machine (2 cores, AVX-512, 2 threads;
``benchmarks/sparse_bench.py`` prints the measured times beside them). They need not be exact: the
model only has to rank a format above dense where it wins clearly, so every sparse estimate must
beat dense by :data:`MARGIN`; timing on the real input (``example_input``) decides the close calls.
"""

from __future__ import annotations

from dataclasses import dataclass

# Bytes per second the kernels stream weights at (2 threads): from memory, and from the caches
# when the weight's bytes fit in CACHED_BYTES (a model run over and over keeps its small layers
# there).
BANDWIDTH = 20e9
CACHED_BANDWIDTH = 50e9
CACHED_BYTES = 4 << 20
# Per-call cost, seconds: the Python layer, the dispatcher, the op's checks and thread start-up.
# CSR's as measured inside a model (interleaved with other layers, median): 23 us on LeNet's
# 784 -> 300 layer at density 0.01 and batch 1, where 20 us had it chosen for a 1.05x layer gain
# that the whole model did not keep (0.96-0.98x dense).
CALL = {"dense": 7e-6, "csr": 23e-6, "bitmap": 20e-6, "nm": 18e-6}
# Multiply-adds per second at batch >= 2 (dense: oneDNN's GEMM; the sparse kernels count kept
# weights only). N:M's as measured at MiniLM's shapes (128 and 1024 rows) and 4096² at 32-128
# rows with the SIMD input transpose: 41-60e9, beside dense at 72-98e9 in the same runs.
MAC_RATE = {"dense": 70e9, "csr": 20e9, "bitmap": 20e9, "nm": 50e9}
# Weights per second the bitmap kernels scan (kept or not: one vector expand per 16) at batch 1;
# with it CSR wins below density ~0.2 and the bitmap up to ~0.45, as measured.
BITMAP_SCAN = 15e9
# A sparse format is chosen only when its estimate is below dense's times this.
MARGIN = 0.85


@dataclass(frozen=True)
class Layer:
    """What the model needs of a layer: its matrix shape, kept weights, value bytes, and the N:M
    slots per row if the weight is N:M (else 0) with their index bits."""
    rows: int
    cols: int
    kept: int
    value_bytes: int = 4
    nm_slots: int = 0
    nm_bits: int = 2


def weight_bytes(layer: Layer, format: str) -> float:
    """Bytes a call reads for the weight, including the per-call structure checks of the row
    formats (csrc/host/sparse_weight.cpp: CSR columns once more, one popcount per bitmap word)."""
    r, c, k = layer.rows, layer.cols, layer.kept
    if format == "dense":
        return layer.value_bytes * r * c
    if format == "csr":
        return 12 * k + 8 * r
    if format == "bitmap":
        return 4 * k + 2 * r * c / 8 + 8 * r
    slots = r * layer.nm_slots
    return slots * (layer.value_bytes + layer.nm_bits / 8)


def macs(layer: Layer, format: str) -> float:
    if format == "dense":
        return layer.rows * layer.cols
    return layer.rows * layer.nm_slots if format == "nm" else layer.kept


def seconds(layer: Layer, format: str, batch: int) -> float:
    """The estimated time of one call at ``batch`` input rows."""
    traffic = weight_bytes(layer, format)
    memory = traffic / (CACHED_BANDWIDTH if traffic <= CACHED_BYTES else BANDWIDTH)
    if format == "bitmap":
        memory += layer.rows * layer.cols / BITMAP_SCAN
    compute = batch * macs(layer, format) / MAC_RATE[format] if batch > 1 else 0.0
    return CALL[format] + max(memory, compute)


def choose(layer: Layer, candidates: tuple[str, ...], batches: tuple[int, ...]) -> tuple[str, str]:
    """``(format, reason)``: the candidate with the lowest total estimate over ``batches`` among
    those below MARGIN x dense at every one of them, else dense."""
    dense = [seconds(layer, "dense", b) for b in batches]
    best, best_total = "dense", sum(dense)
    for format in candidates:
        times = [seconds(layer, format, b) for b in batches]
        if all(t < MARGIN * d for t, d in zip(times, dense)) and sum(times) < best_total:
            best, best_total = format, sum(times)
    at = "batch " + "/".join(map(str, batches))
    if best == "dense":
        return "dense", f"dense: {sum(dense) / len(dense) * 1e3:.3f} ms layer at {at}, no sparse " \
            "format estimated faster"
    return best, f"{best}: est. {best_total / len(batches) * 1e3:.3f} ms vs dense " \
        f"{sum(dense) / len(dense) * 1e3:.3f} ms at {at}"
