"""Loading of the compiled extension ``sparseprune._C``.

``import sparseprune`` works even when the extension is missing or broken; the first call that needs
a kernel then raises :class:`ExtensionError` saying why and how to rebuild.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import torch

_REBUILD_HINT = (
    "Rebuild it from the repository root with `make build` (or "
    "`pip install --no-build-isolation -e .`); see README.md, section Install."
)


class ExtensionError(RuntimeError):
    """The compiled kernels are unavailable (not built, or built against another torch)."""


def _load() -> tuple[Optional[Any], Optional[str]]:
    try:
        import sparseprune._C as _C  # registers the torch.ops.sparseprune.* operators
    except ImportError as exc:
        return None, f"sparseprune._C could not be imported ({exc})."
    built = _C.build_info()["torch_version"]
    if built != torch.__version__:
        return None, (f"sparseprune._C was built against torch {built} but torch {torch.__version__} "
                      "is running.")
    return _C, None


_C, _LOAD_ERROR = _load()


def available() -> bool:
    """Whether the compiled kernels loaded."""
    return _C is not None


def require() -> Any:
    """The compiled module, or an :class:`ExtensionError` explaining why it is missing."""
    if _C is None:
        raise ExtensionError(f"{_LOAD_ERROR} {_REBUILD_HINT}")
    return _C


def cpu_isa() -> str:
    """The CPU instruction set the kernels run with now: ``"scalar"``, ``"avx2"`` or ``"avx512"``.

    The best one this CPU supports is chosen at import; the environment variable
    ``SPARSEPRUNE_CPU_ISA`` or :func:`set_cpu_isa` forces another.
    """
    return require().active_cpu_isa()


def set_cpu_isa(name: str) -> None:
    """Force the CPU kernels of one instruction set for this process (for tests and benchmarks).

    Raises ValueError naming the accepted values if ``name`` is unknown or unsupported here.
    """
    require().set_cpu_isa(name)


def compiled_cpu_isas() -> list[str]:
    """The CPU instruction sets built into the extension."""
    return list(require().compiled_cpu_isas())


def supported_cpu_isas() -> list[str]:
    """The built CPU instruction sets this CPU can run."""
    return list(require().supported_cpu_isas())


def build_info() -> dict:
    """How the extension was built: torch and CUDA versions, CUDA targets, compiler, CPU ISAs."""
    return dict(require().build_info())


def cuda_built() -> bool:
    """Whether CUDA kernels were compiled in (independent of whether a GPU is visible)."""
    return available() and bool(build_info()["cuda"])


if _C is not None and os.environ.get("SPARSEPRUNE_CPU_ISA"):
    # Fail at import, with the accepted values, rather than at the first kernel call.
    try:
        _C.active_cpu_isa()
    except ValueError as exc:
        raise ValueError(f"SPARSEPRUNE_CPU_ISA: {exc}") from None
