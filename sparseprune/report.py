"""Per-layer sparsity, counted one way in one place.

A masked layer counts the weights its method's deterministic final mask keeps (what
:func:`sparseprune.finalize` would keep); a plain ``nn.Linear`` / ``nn.Conv2d`` counts its nonzero
weights; a sparse inference layer its stored weights (``format`` says how it stores them).
Biases are not counted. density = kept / total, sparsity = 1 - density.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch
from torch import nn

from .nn.masked import MaskedLayer
from .nn.sparse import SparseLayer


@dataclass
class LayerSparsity:
    name: str
    kind: str
    shape: tuple[int, ...]
    kept: int
    total: int
    format: str = "dense"  # how inference stores the weight: dense, masked, csr or bitmap

    @property
    def density(self) -> float:
        return self.kept / self.total if self.total else 1.0


@dataclass
class Report:
    """Per-layer and global sparsity. ``str(report)`` is a table; :meth:`to_dict` is JSON-able."""

    layers: list[LayerSparsity] = field(default_factory=list)

    @property
    def kept(self) -> int:
        return sum(layer.kept for layer in self.layers)

    @property
    def total(self) -> int:
        return sum(layer.total for layer in self.layers)

    @property
    def density(self) -> float:
        return self.kept / self.total if self.total else 1.0

    @property
    def sparsity(self) -> float:
        return 1.0 - self.density

    def to_dict(self) -> dict:
        return {
            "layers": [dict(asdict(layer), shape=list(layer.shape), density=layer.density)
                       for layer in self.layers],
            "kept": self.kept, "total": self.total, "density": self.density,
        }

    def __str__(self) -> str:
        rows = [(layer.name or "(model)", layer.kind, "x".join(map(str, layer.shape)),
                 f"{layer.kept:,}", f"{layer.total:,}", f"{layer.density:.4f}", layer.format)
                for layer in self.layers]
        rows.append(("total", "", "", f"{self.kept:,}", f"{self.total:,}", f"{self.density:.4f}",
                     ""))
        header = ("layer", "type", "shape", "kept", "total", "density", "format")
        widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
        right = {3, 4, 5}

        def line(cells):
            return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                             for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

        rule = "  ".join("-" * w for w in widths)
        return "\n".join([line(header), rule] + [line(r) for r in rows[:-1]] + [rule, line(rows[-1])])


@torch.no_grad()
def sparsity_report(model: nn.Module, masks: Optional[dict[str, torch.Tensor]] = None) -> Report:
    """Sparsity of every prunable layer of ``model`` (masked, ``nn.Linear`` or ``nn.Conv2d``).

    ``masks`` (name -> boolean mask, e.g. from :func:`sparseprune.convert.final_masks` with a
    density) overrides the masked layers' own final masks.
    """
    report = Report()
    for name, module in model.named_modules():
        if isinstance(module, MaskedLayer):
            mask = masks[name] if masks is not None and name in masks \
                else module.method.final_mask(module)
            kind = f"{type(module).__name__}({module.method.name})"
            kept, format = int(mask.sum()), "masked"
        elif type(module) in (nn.Linear, nn.Conv2d):
            kind = type(module).__name__
            kept, format = int(torch.count_nonzero(module.weight)), "dense"
        elif isinstance(module, SparseLayer):  # its stored weights: the zeros were dropped
            kind, kept, format = type(module).__name__, module.nnz, module.format
        else:
            continue
        shape = tuple(module.weight_shape if isinstance(module, SparseLayer)
                      else module.weight.shape)
        report.layers.append(LayerSparsity(name, kind, shape, kept, math.prod(shape), format))
    return report
