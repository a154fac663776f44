"""What :func:`sparseprune.prune_oneshot` reports per layer: kept counts, the reconstruction
error on the calibration inputs, the calibration tokens, the time."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Optional


@dataclass
class LayerResult:
    """One pruned matrix (a layer, or the q / k / v part of an attention in_proj).

    ``error`` is ``||(W - W_hat) X|| / ||W X||`` (Frobenius norms, bias left out) over the
    layer's calibration inputs X, the ones it was pruned with; None when not measured."""

    name: str
    kind: str
    shape: tuple[int, int]  # the [out, in] matrix
    kept: int
    total: int
    error: Optional[float]
    tokens: int             # calibration input rows (tokens, or conv output positions)
    stage: str              # the block (or layer run) it was calibrated with
    seconds: float          # selection and reconstruction, statistics excluded
    damp: Optional[float] = None  # SparseGPT: the dampening fraction its Cholesky needed

    @property
    def density(self) -> float:
        return self.kept / self.total if self.total else 1.0


@dataclass
class OneshotReport:
    """The result of one :func:`sparseprune.prune_oneshot` call; ``str()`` is a table,
    :meth:`to_dict` is JSON-able."""

    method: str
    target: str           # "density 0.5" or "2:4"
    sequential: bool
    stages: int
    batches: int
    layers: list[LayerResult] = field(default_factory=list)
    percdamp: Optional[float] = None  # SparseGPT: the dampening asked for (a layer's retries differ)
    calibration_seconds: float = 0.0  # forwards with statistics hooks
    prune_seconds: float = 0.0        # selection and reconstruction
    seconds: float = 0.0              # the whole call

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
    def mean_error(self) -> Optional[float]:
        errors = [layer.error for layer in self.layers if layer.error is not None]
        return sum(errors) / len(errors) if errors else None

    def to_dict(self) -> dict:
        out = asdict(self)
        for layer, d in zip(self.layers, out["layers"]):
            d["shape"] = list(layer.shape)
            d["density"] = layer.density
            if d["error"] is not None and not math.isfinite(d["error"]):
                d["error"] = None
        out.update(kept=self.kept, total=self.total, density=self.density,
                   mean_error=self.mean_error)
        return out

    def __str__(self) -> str:
        order = f"sequential over {self.stages} stage(s)" if self.sequential else "one pass"
        head = (f"prune_oneshot: {self.method}, {self.target}, {order}, {self.batches} "
                f"calibration batch(es)")
        width = max([len("layer")] + [len(layer.name) for layer in self.layers])
        rows = [f"{'layer'.ljust(width)}  {'matrix':>11}  {'kept':>10}  {'total':>10}  "
                f"{'density':>7}  {'error':>7}  {'tokens':>7}  {'s':>6}"]
        for layer in self.layers:
            error = "-" if layer.error is None else f"{layer.error:.4f}"
            damp = "" if layer.damp in (None, self.percdamp) else f"  (damp {layer.damp:g})"
            rows.append(f"{layer.name.ljust(width)}  {'x'.join(map(str, layer.shape)):>11}  "
                        f"{layer.kept:>10,}  {layer.total:>10,}  {layer.density:>7.4f}  "
                        f"{error:>7}  {layer.tokens:>7,}  {layer.seconds:>6.2f}{damp}")
        mean = "-" if self.mean_error is None else f"{self.mean_error:.4f}"
        rows.append(f"{'total'.ljust(width)}  {'':>11}  {self.kept:>10,}  {self.total:>10,}  "
                    f"{self.density:>7.4f}  {mean:>7}")
        tail = (f"calibration {self.calibration_seconds:.2f} s, pruning {self.prune_seconds:.2f}"
                f" s, total {self.seconds:.2f} s (error: ||(W - W_hat) X|| / ||W X|| on the "
                "calibration inputs; total row: mean)")
        return "\n".join([head, *rows, tail])
