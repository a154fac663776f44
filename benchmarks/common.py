"""Timing, the memory-bandwidth floor and machine facts, shared by the suites and the runner.

Every figure is a ratio measured in one process run (docs/PERFORMANCE.md): absolute times drift
between runs and machines, ratios against the reference path and the floor measured alongside
are what carry over.
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import statistics
import time
from typing import Callable

import torch

import sparseprune as sp


def median_time(fn: Callable[[], object], *, repeat: int = 7, warmup: int = 2,
                min_seconds: float = 0.0) -> float:
    """Median wall time of ``fn()`` in seconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < repeat or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_medians(fns: dict[str, Callable[[], object]], *, rounds: int = 5) -> dict:
    """Median wall time of each ``fns[k]()``, timed in alternating order round after round so
    that drift of the machine hits every candidate alike; ``k + "_spread"`` is max - min."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            times[k].append(_timed(fn))
    out: dict[str, float] = {}
    for k, ts in times.items():
        out[k] = statistics.median(ts)
        out[k + "_spread"] = max(ts) - min(ts)
    return out


def bandwidth(numel: int = 1 << 26) -> float:
    """Bytes read + written per second by ``torch.add(a, b, out=c)`` on float32, best of 5."""
    a, b, c = torch.rand(numel), torch.rand(numel), torch.empty(numel)
    torch.add(a, b, out=c)
    best = min(_timed(lambda: torch.add(a, b, out=c)) for _ in range(5))
    return 3 * 4 * numel / best


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def mask_floor_seconds(numel: int, bytes_per_second: float) -> float:
    """The floor of a mask forward + backward over float32 scores and frozen float32 weights:
    forward reads scores and weight and writes the masked weight (12 B per weight), backward reads
    its gradient, scores and weight and writes the score gradient (16 B)."""
    return (12 + 16) * numel / bytes_per_second


def write_between_markers(path, markers: tuple[str, str], text: str) -> None:
    """Replace what stands between the two marker lines of ``path`` (a README table) with
    ``text``; a file without both markers is left alone."""
    path = pathlib.Path(path)
    if not path.exists():
        return
    content = path.read_text()
    start, end = markers
    if start in content and end in content:
        head, rest = content.split(start, 1)
        _, tail = rest.split(end, 1)
        path.write_text(f"{head}{start}\n{text}\n{end}{tail}")


def save_results(results_dir, stem: str, results: dict, table: str, readme=None,
                 markers: tuple[str, str] = ("", "")) -> None:
    """Write ``<stem>.json`` and ``<stem>.md`` into ``results_dir`` and, when ``readme`` is
    given, the table between its markers; then print the table."""
    results_dir = pathlib.Path(results_dir)
    results_dir.mkdir(exist_ok=True)
    (results_dir / f"{stem}.json").write_text(json.dumps(results, indent=2))
    (results_dir / f"{stem}.md").write_text(table + "\n")
    if readme is not None:
        write_between_markers(readme, markers, table)
    print(table)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    return {
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "sparseprune": sp.__version__,
        "isas": sp.supported_cpu_isas(),
        "allocator": os.environ.get("GLIBC_TUNABLES", "glibc default"),
    }
