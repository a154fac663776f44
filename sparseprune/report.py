"""Per-layer sparsity, counted one way in one place.

A masked layer counts the weights its method's deterministic final mask keeps (what
:func:`sparseprune.finalize` would keep); a plain layer of a covered kind counts its nonzero
weights; a sparse inference layer its stored weights (``format`` says how it stores them).
Biases are not counted. density = kept / total, sparsity = 1 - density.

FLOPs (with ``input_shape``) are per sample and count the weights only: a layer costs
``2 * weights * output_positions`` (one multiply and one add per weight per output position; a
``Linear`` has one position per sample, a ``Conv2d`` one per output pixel), kept FLOPs the same with
the kept weights. A layer's FLOP density therefore equals its parameter density; the global FLOP
density weights each layer by its output positions, so convolutions count for more than in the
parameter density.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

import torch
from torch import nn

from . import _validate as V
from .nn.coverage import kind_of
from .nn.masked import MaskedLayer
from .nn.sharded import gathered
from .nn.sparse import SparseLayer
from .select import is_nm


@dataclass
class LayerSparsity:
    """One prunable layer: weights kept of total and, when counted, FLOPs kept of total."""

    name: str
    kind: str
    shape: tuple[int, ...]
    kept: int
    total: int
    format: str = "dense"  # how inference stores the weight: dense, masked, csr, bitmap, nm, ...
    # Why sparseprune.to_sparse(format="auto") chose it, e.g. "dense: 0.004 ms layer ..." (the
    # printed table's format column shows it in place of the format).
    format_reason: str = ""
    flops_kept: Optional[int] = None
    flops_total: Optional[int] = None
    pattern: Optional[str] = None     # the N:M pattern the layer is checked against, e.g. "2:4"
    complies: Optional[bool] = None   # whether its mask keeps exactly N of every M

    @property
    def density(self) -> float:
        return self.kept / self.total if self.total else 1.0

    @property
    def flop_density(self) -> Optional[float]:
        if self.flops_total is None:
            return None
        return self.flops_kept / self.flops_total if self.flops_total else 1.0


def _fmt_flops(n: int) -> str:
    return f"{n / 1e6:,.3f}M"


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

    @property
    def has_patterns(self) -> bool:
        return any(layer.pattern is not None for layer in self.layers)

    @property
    def complies(self) -> Optional[bool]:
        """Whether every layer checked against an N:M pattern keeps exactly N of every M (None
        when no layer is)."""
        checked = [layer.complies for layer in self.layers if layer.pattern is not None]
        return all(checked) if checked else None

    @property
    def has_flops(self) -> bool:
        return bool(self.layers) and all(layer.flops_total is not None for layer in self.layers)

    @property
    def flops_kept(self) -> Optional[int]:
        return sum(layer.flops_kept for layer in self.layers) if self.has_flops else None

    @property
    def flops_total(self) -> Optional[int]:
        return sum(layer.flops_total for layer in self.layers) if self.has_flops else None

    @property
    def flop_density(self) -> Optional[float]:
        if not self.has_flops:
            return None
        return self.flops_kept / self.flops_total if self.flops_total else 1.0

    def to_dict(self) -> dict:
        out = {
            "layers": [dict(asdict(layer), shape=list(layer.shape), density=layer.density,
                            flop_density=layer.flop_density)
                       for layer in self.layers],
            "kept": self.kept, "total": self.total, "density": self.density,
        }
        if self.has_flops:
            out.update(flops_kept=self.flops_kept, flops_total=self.flops_total,
                       flop_density=self.flop_density)
        if self.has_patterns:
            out["complies"] = self.complies
        return out

    def __str__(self) -> str:
        flops, patterns = self.has_flops, self.has_patterns
        header = ("layer", "type", "shape", "kept", "total", "density")
        if flops:
            header += ("FLOPs kept", "FLOPs total", "FLOP density")
        header += ("format",)
        if patterns:
            header += ("N:M",)

        def nm(pattern, complies):
            if pattern is None:
                return "-"
            return f"{pattern} {'yes' if complies else 'NO'}"

        def cells(name, kind, shape, kept, total, density, fk, ft, fd, format, pattern=None,
                  complies=None):
            row = (name, kind, shape, f"{kept:,}", f"{total:,}", f"{density:.4f}")
            row += (_fmt_flops(fk), _fmt_flops(ft), f"{fd:.4f}") if flops else ()
            return row + (format,) + ((nm(pattern, complies),) if patterns else ())

        rows = [cells(layer.name or "(model)", layer.kind, "x".join(map(str, layer.shape)),
                      layer.kept, layer.total, layer.density, layer.flops_kept,
                      layer.flops_total, layer.flop_density,
                      layer.format_reason or layer.format, layer.pattern, layer.complies)
                for layer in self.layers]
        complies = self.complies
        rows.append(cells("total", "", "", self.kept, self.total, self.density, self.flops_kept,
                          self.flops_total, self.flop_density, "",
                          None if complies is None else "all", complies))
        widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]

        numeric = len(header) - 1 - (1 if patterns else 0)  # format (and N:M) left-aligned

        def line(cells):
            return "  ".join(c.rjust(w) if 3 <= i < numeric else c.ljust(w)
                             for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

        rule = "  ".join("-" * w for w in widths)
        return "\n".join([line(header), rule] + [line(r) for r in rows[:-1]] + [rule, line(rows[-1])])


def _prunable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Masked and sparse layers, and plain layers of the covered kinds (embeddings only when
    masked: they are opt-in)."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, (MaskedLayer, SparseLayer))
            or ((kind := kind_of(m)) is not None and not kind.opt_in)]


def _positions(module: nn.Module, out) -> int:
    if isinstance(module, SparseLayer):  # a Linear's or a Conv2d's
        if len(module.weight_shape) == 4:
            return math.prod(out.shape[-2:]) if out.dim() == 4 else math.prod(out.shape[1:])
        return math.prod(out.shape[1:-1]) if out.dim() > 1 else 1
    return kind_of(module).positions(out)


@torch.no_grad()
def output_positions(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """Output positions per sample of every prunable layer, from one forward pass of a zero batch
    of one ``input_shape`` sample: the output's spatial size for a ``Conv2d``, the product of the
    leading (non-batch, non-feature) sizes for a ``Linear`` (1 for 2-D inputs). A layer called
    several times sums its calls; one never called gets 0.

    The model runs in eval mode, without autograd, and the global CPU random state is restored
    afterwards (a method that samples in eval mode must not perturb training), so this has no side
    effects. Raises ValueError when the forward pass fails on ``input_shape``.
    """
    shape = V.input_shape(input_shape)
    layers = _prunable(model)
    counts = {name: 0 for name, _ in layers}
    hooks = []
    for name, module in layers:
        def hook(mod, args, out, name=name):
            counts[name] += _positions(mod, out)
        hooks.append(module.register_forward_hook(hook))
    modes = {m: m.training for m in model.modules()}
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    try:
        model.eval()
        with torch.random.fork_rng(devices=[]):
            model(torch.zeros((1, *shape), device=device, dtype=dtype))
    except RuntimeError as exc:
        raise ValueError(f"cannot count FLOPs: the model fails on input_shape {shape}: {exc}") from exc
    finally:
        for h in hooks:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return counts


def _compliance(module: nn.Module, mask: torch.Tensor, pattern: Optional[tuple[int, int]]):
    """(pattern name, whether ``mask`` keeps exactly N of every M along the layer's input)."""
    if pattern is None:
        return None, None
    n, m = pattern
    input_dim = kind_of(module).masked.input_dim
    if input_dim is None:
        return f"{n}:{m}", False
    logical = mask if input_dim == 1 else mask.movedim(input_dim, 1)
    return f"{n}:{m}", is_nm(logical, n, m)


@torch.no_grad()
def sparsity_report(model: nn.Module, masks: Optional[dict[str, torch.Tensor]] = None, *,
                    input_shape: Optional[Sequence[int]] = None,
                    pattern: Optional[str] = None) -> Report:
    """Sparsity of every prunable layer of ``model``: masked and sparse layers, and plain layers of
    the kinds ``convert`` masks (:mod:`sparseprune.nn.coverage`).

    ``masks`` (name -> boolean mask, e.g. from :func:`sparseprune.convert.final_masks` with a
    density) overrides the masked layers' own final masks. With ``input_shape`` (one sample's
    shape, e.g. ``(1, 28, 28)``) the report also counts FLOPs per sample (see the module doc).

    N:M patterns: a masked layer whose method has a pattern (``convert(..., pattern="2:4")``)
    reports it and whether its final mask keeps exactly N of every M (``pattern`` and
    ``complies``; the table's ``N:M`` column, e.g. ``2:4 yes``); ``pattern="N:M"`` checks every
    masked and plain layer against that pattern instead (e.g. after ``finalize``, from the
    nonzero weights). ``Report.complies`` is True when every checked layer complies.

    A model sharded by FSDP2 is gathered for the count (:func:`sparseprune.nn.sharded.gathered`;
    every rank must call this), so the report counts the whole masks, not a shard's.
    """
    check = V.pattern(pattern) if pattern is not None else None
    with gathered(model):
        return _report(model, masks, input_shape, check)


def _report(model: nn.Module, masks: Optional[dict[str, torch.Tensor]],
            input_shape: Optional[Sequence[int]], check: Optional[tuple[int, int]]) -> Report:
    positions = output_positions(model, input_shape) if input_shape is not None else None
    report = Report()
    for name, module in _prunable(model):
        if isinstance(module, MaskedLayer):
            mask = masks[name] if masks is not None and name in masks \
                else module.method.final_mask(module)
            kind = f"{type(module).__name__}({module.method.name})"
            kept, format, reason = int(mask.sum()), "masked", ""
        elif isinstance(module, SparseLayer):  # its stored weights: the zeros were dropped
            kind, kept, format = type(module).__name__, module.nnz, module.format
            reason = module.format_reason
        else:
            kind = type(module).__name__
            kept, format = int(torch.count_nonzero(kind_of(module).weight(module))), "dense"
            reason = getattr(module, "sparse_format_reason", "")
        shape = tuple(module.weight_shape if isinstance(module, SparseLayer)
                      else kind_of(module).weight(module).shape)
        total = math.prod(shape)
        layer = LayerSparsity(name, kind, shape, kept, total, format, reason)
        if not isinstance(module, SparseLayer):
            own = module.method.pattern if isinstance(module, MaskedLayer) else None
            weight_mask = mask if isinstance(module, MaskedLayer) \
                else kind_of(module).weight(module) != 0
            layer.pattern, layer.complies = _compliance(module, weight_mask, check or own)
        if positions is not None:
            layer.flops_kept = 2 * kept * positions[name]
            layer.flops_total = 2 * total * positions[name]
        report.layers.append(layer)
    return report
