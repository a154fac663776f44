"""Density schedules of the iterative pruning-at-initialisation methods (METHODS.md 9.3, 9.4)."""

from __future__ import annotations

from .. import _args

SCHEDULES = ("exponential", "linear")


def densities(density: float, iterations: int, schedule: str = "exponential") -> list[float]:
    """The fraction of weights kept after each of ``iterations`` pruning steps, ending at
    ``density``.

    ``"exponential"``: ``d_t = density ** (t / T)``; ``"linear"``:
    ``d_t = 1 - t (1 - density) / T``, for t = 1..T (SynFlow's ``(e + 1) / E`` for
    e = 0..E-1 and FORCE's ``t / T``: the same numbers). The last entry is ``density`` itself,
    exactly (``1 - (1 - d)`` may differ from ``d`` in the last bit, which could move
    ``round(d * N)``).
    """
    density = _args.density(density)
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be an int >= 1, got {iterations!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(map(repr, SCHEDULES))}, "
                         f"got {schedule!r}")
    steps = range(1, iterations + 1)
    if schedule == "exponential":
        out = [density ** (t / iterations) for t in steps]
    else:
        out = [1.0 - t * (1.0 - density) / iterations for t in steps]
    out[-1] = float(density)
    return out
