"""``python -m sparseprune.info``: versions, compiled and active CPU ISA, CUDA kernels."""

from __future__ import annotations

import platform
import sys

import torch

from .. import __version__
from ..ops import _ext


def info() -> dict:
    """What this installation runs with, as a dict."""
    out = {
        "sparseprune": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
        "cuda_devices": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "extension": "loaded" if _ext.available() else "missing",
    }
    if _ext.available():
        build = _ext.build_info()
        out.update({
            "built_with_torch": build["torch_version"],
            "compiler": build["compiler"],
            "cpu_isas_compiled": ", ".join(build["compiled_cpu_isas"]),
            "cpu_isas_supported": ", ".join(_ext.supported_cpu_isas()),
            "cpu_isa_active": _ext.cpu_isa(),
            "cuda_kernels": (f"built (CUDA {build['cuda_version']}, archs {build['cuda_archs']})"
                             if build["cuda"] else "not built"),
        })
    else:
        try:
            _ext.require()
        except _ext.ExtensionError as exc:
            out["extension_error"] = str(exc)
    return out


def main() -> None:
    rows = info()
    width = max(map(len, rows))
    for key, value in rows.items():
        print(f"{key.ljust(width)}  {value}")


if __name__ == "__main__":
    main()
