"""``prune_oneshot``: one-shot pruning of a pretrained model, layer by layer on calibration data,
with magnitude, Wanda or SparseGPT (docs/METHODS.md sections 14-15), unstructured or N:M.

Per matrix (:mod:`.matrices`: ``W [out, in]``, input rows ``X``):

- ``"magnitude"``: score ``|W_ij|``, kept per layer (the references' magnitude baseline) or
  per row (``group="row"``);
- ``"wanda"``: score ``|W_ij| * ||X_j||_2`` (the column norm over all calibration tokens),
  kept per output row: every row keeps exactly ``round(density * in)`` (``group="layer"``: per
  layer);
- ``"sparsegpt"``: :func:`.sparsegpt.sparsegpt` on the Gram matrix ``sum x x^T``: adaptive
  selection per 128-column block, the kept weights updated to reconstruct ``W X``.

N:M keeps exactly N of every group of :func:`sparseprune.select.nm_groups`. Ties keep the lower
index of the matrix. The order of the calibration (blocks) is :mod:`.calibration`'s.
"""

from __future__ import annotations

import math
import time
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn
from tqdm import tqdm

from .. import _validate as V
from ..convert import Filter, convert
from ..methods.fixed import set_masks
from ..select import nm_groups, top_k_masks, top_n_of_m
from . import calibration as C
from .args import prunable_layers
from .matrices import Capture, Part, hook_module, parts
from .oneshot_report import LayerResult, OneshotReport
from .sparsegpt import compute_dtype, no_tf32, sparsegpt

METHODS = V.ONESHOT_METHODS
BLOCKSIZE, PERCDAMP = 128, 0.01  # SparseGPT's defaults (docs/METHODS.md 15)


class _Stats:
    """A matrix's calibration statistics: the squared column norms (float64) and, when asked
    for, the Gram matrix ``sum x x^T`` (float64 on CPU up to 4096 inputs, else float32)."""

    def __init__(self, columns: int, device: torch.device, gram: bool):
        self.sq = torch.zeros(columns, dtype=torch.float64, device=device)
        dtype = compute_dtype(columns, device)
        self.gram = torch.zeros(columns, columns, dtype=dtype, device=device) if gram else None
        self.rows = 0

    def add(self, rows: Tensor) -> None:
        rows = rows.detach()
        self.sq += rows.to(torch.float64).square().sum(0)
        if self.gram is not None:
            r = rows.to(self.gram.dtype)
            self.gram.addmm_(r.t(), r)
        self.rows += rows.shape[0]


def _error(before: Tensor, after: Tensor, gram: Tensor) -> float:
    """``||(W - W_hat) X|| / ||W X||`` from the Gram matrix of X."""
    before = before.to(gram.dtype)
    delta = before - after.to(gram.dtype)
    num = float(((delta @ gram) * delta).sum())
    den = float(((before @ gram) * before).sum())
    return math.sqrt(max(num, 0.0) / den) if den > 0 else math.nan


def _keep(method: str, W: Tensor, stats: Optional[_Stats], density: Optional[float],
          nm: Optional[tuple[int, int]], group: str, label: str) -> Tensor:
    """Magnitude's or Wanda's keep mask of the matrix ``W``."""
    if method == "magnitude":
        score = W.abs()
    else:
        score = W.abs().to(torch.float64) * stats.sq.sqrt().to(W.device)
    if nm is not None:
        return top_n_of_m(score, nm[0], nm[1], layer=label)
    columns = score.shape[1]
    if group == "row":  # one group of size `in` per row: exactly round(density * in) each
        return top_n_of_m(score, round(density * columns), columns, layer=label)
    return top_k_masks([score], round(density * score.numel()))[0]


def _check(method: str, density, pattern, group, blocksize, percdamp, batches,
           data) -> tuple[Optional[float], Optional[tuple[int, int]], str, int, float]:
    method = V.choice("method", method, METHODS)
    density, nm = V.density_or_pattern(density, pattern)
    V.choice("group", group, V.ONESHOT_GROUPS)
    if group is not None and (nm is not None or method == "sparsegpt"):
        raise ValueError(f"group applies to an unstructured density with magnitude or wanda "
                         f"(SparseGPT selects per column block), got group={group!r} with "
                         f"method={method!r}, pattern={pattern!r}")
    group = group or ("row" if method == "wanda" else "layer")
    if method != "sparsegpt" and (blocksize is not None or percdamp is not None):
        raise ValueError(f"blocksize and percdamp apply to sparsegpt, got blocksize={blocksize!r}"
                         f", percdamp={percdamp!r} with method={method!r}")
    blocksize = V.positive_int("blocksize", blocksize, optional=True) or BLOCKSIZE
    percdamp = V.finite_number("percdamp", PERCDAMP if percdamp is None else percdamp,
                               minimum=0.0, strict=True)
    if method == "sparsegpt" and nm is not None and blocksize % nm[1]:
        raise ValueError(f"blocksize must be a multiple of M={nm[1]} for pattern={pattern!r} "
                         f"(N:M groups must not straddle column blocks), got {blocksize}")
    V.positive_int("batches", batches, optional=True)
    if data is None and method != "magnitude":
        raise ValueError(f"method {method!r} needs data= (calibration batches: tensors, tuples or "
                         "dicts of model inputs), got data=None")
    return density, nm, group, blocksize, percdamp


def prune_oneshot(model: nn.Module, method: str, *, density: Optional[float] = None,
                  pattern: Optional[str] = None, data: Any = None, batches: Optional[int] = None,
                  include: Filter = None, exclude: Filter = None, sequential: bool = True,
                  blocks: C.Blocks = None, group: Optional[str] = None,
                  blocksize: Optional[int] = None, percdamp: Optional[float] = None,
                  errors: bool = True, progress: bool = True, return_report: bool = False
                  ) -> Union[nn.Module, tuple[nn.Module, OneshotReport]]:
    """Prune a pretrained ``model`` in one shot, layer by layer, from calibration data.

    Args:
        method: ``"magnitude"``, ``"wanda"`` or ``"sparsegpt"``.
        density: fraction of each layer's weights kept; or
        pattern: ``"N:M"``, N kept of every M consecutive inputs (exactly one of the two).
        data: calibration batches (:mod:`.calibration`: tensors, tuples, dicts; a dict's
            ``attention_mask`` excludes padding tokens). Not needed by magnitude (then no
            error is reported).
        batches: read at most this many batches from ``data`` (default: all).
        include, exclude: the layers, as :func:`sparseprune.convert` selects them.
        sequential: block by block, each block calibrated on the pruned outputs of the blocks
            before it (the references); False: one pass, every layer calibrated on the dense
            model (then every layer's statistics are held at once).
        blocks: the blocks (default: found, see :mod:`.calibration`): a glob over module names
            or a sequence of modules or names.
        group: unstructured comparison group: ``"row"`` (Wanda's default) or ``"layer"``
            (magnitude's default).
        blocksize, percdamp: SparseGPT's column block (128) and dampening fraction of the mean
            Hessian diagonal (0.01).
        errors: measure each layer's reconstruction error (needs the ``in x in`` Gram matrix of
            its inputs; SparseGPT computes it anyway).
        progress: a tqdm bar over the stages.
        return_report: return ``(model, report)`` instead of the model
            (:class:`~.oneshot_report.OneshotReport`; ``print(report)`` shows the table).

    The pruned layers become ``"fixed"`` masked layers (pruned weights exactly 0; SparseGPT's
    kept weights are its reconstruction), so ``finalize``, ``sparsity_report``, ``to_sparse`` and
    ``save`` work unchanged. In place (a new module only when ``model`` is itself one layer).
    Calibration runs in eval mode under ``no_grad``; every module's training flag is restored.
    A layer the calibration data never reaches is an error naming it, raised before any weight
    changes.
    """
    start = time.perf_counter()
    density, nm, group, blocksize, percdamp = _check(method, density, pattern, group, blocksize,
                                                     percdamp, batches, data)
    layers = prunable_layers(model, include, exclude)
    names = [name for name, _ in layers]
    all_parts = {name: parts(name, module) for name, module in layers}
    if nm is not None:
        for name, module in layers:  # conv: M input channels at one tap
            p = all_parts[name][0]
            nm_groups(p.weight if p.weight.dim() > 2 else p.matrix(), nm[1], layer=p.layer_label)
    calibrate = data is not None and (method != "magnitude" or errors)
    batch_list = C.read_batches(data, batches) if calibrate else None
    device = all_parts[names[0]][0].weight.device
    block_names = C.find_blocks(model, names, blocks) if sequential else []
    plan = C.stages(names, block_names) if sequential else [C.Stage(None, names)]
    target = f"density {density:g}" if nm is None else f"{nm[0]}:{nm[1]}"
    report = OneshotReport(method, target, bool(sequential), len(plan),
                           len(batch_list) if batch_list else 0,
                           percdamp=percdamp if method == "sparsegpt" else None)
    modules = dict(model.named_modules())
    modes = {name: m.training for name, m in modules.items()}
    masks: dict[str, list[Tensor]] = {}
    forwarder = C.Forwarder(model, batch_list, device, block_names) if calibrate else None
    bar = tqdm(plan, desc=f"prune_oneshot {method}", unit="stage", disable=not progress,
               dynamic_ncols=True, leave=False)
    try:
        model.eval()
        with no_tf32():
            for i, stage in enumerate(bar):
                bar.set_postfix_str(stage.label)
                stage_parts = [p for name in stage.layers for p in all_parts[name]]
                stats = {}
                if calibrate:
                    began = time.perf_counter()
                    # The first stage's forward runs to the end and checks every layer is reached.
                    others = [n for n in names if n not in stage.layers] if i == 0 else []
                    stats = _calibrate(model, forwarder, stage, stage_parts, others, batch_list,
                                       device, method == "sparsegpt" or errors, modules)
                    report.calibration_seconds += time.perf_counter() - began
                for p in stage_parts:
                    result, keep = _prune(p, method, stats.get(p.label), density, nm, group,
                                          blocksize, percdamp, stage.label)
                    report.layers.append(result)
                    report.prune_seconds += result.seconds
                    masks.setdefault(p.layer, []).append(keep)
                del stats
                if calibrate:
                    began = time.perf_counter()
                    forwarder.advance(stage.block, plan[i + 1].block if i + 1 < len(plan)
                                      else None)
                    report.calibration_seconds += time.perf_counter() - began
    finally:
        bar.close()
        for name, m in model.named_modules():
            if name in modes:
                m.training = modes[name]
    model = convert(model, "fixed", include=lambda name, _: name in masks)
    for name, m in model.named_modules():  # the new layers take the old ones' flags
        if name in modes:
            m.training = modes[name]
    set_masks(model, {name: torch.cat(keeps) for name, keeps in masks.items()})
    report.seconds = time.perf_counter() - start
    return (model, report) if return_report else model


def _calibrate(model: nn.Module, forwarder: C.Forwarder, stage: C.Stage,
               stage_parts: list[Part], others: list[str], batch_list: list,
               device: torch.device, gram: bool,
               modules: dict[str, nn.Module]) -> dict[str, _Stats]:
    """The statistics of the stage's matrices over the calibration batches; ValueError naming
    the layers that the data does not reach (``others``: more layers to check)."""
    stats = {p.label: _Stats(p.matrix().shape[1], device, gram) for p in stage_parts}
    capture = Capture(model, stage_parts, lambda part, rows: stats[part.label].add(rows))
    reached: set[str] = set()
    handles = [hook_module(model, n, modules[n]).register_forward_hook(
        lambda *_, n=n: reached.add(n)) for n in others]

    def before(batch: Any) -> None:
        capture.mask = C.token_mask(batch, device)
    try:
        forwarder.run(stage.block, before, to_the_end=bool(others))
    finally:
        capture.remove()
        for h in handles:
            h.remove()
    missing = sorted({p.layer for p in stage_parts if stats[p.label].rows == 0}
                     | (set(others) - reached), key=list(modules).index)
    if missing:
        raise ValueError(f"prune_oneshot: layer(s) {', '.join(map(repr, missing))} received no "
                         f"calibration input from the {len(batch_list)} batch(es) of data (never "
                         "called by the model's forward, or only on padding); calibrate with data "
                         "that reaches them, or leave them dense with exclude=")
    return stats


def _prune(part: Part, method: str, stats: Optional[_Stats], density: Optional[float],
           nm: Optional[tuple[int, int]], group: str, blocksize: int, percdamp: float,
           stage: str) -> tuple[LayerResult, Tensor]:
    """Select (and for SparseGPT reconstruct) one matrix, write it back; its result and its
    keep mask in the weight's layout."""
    began = time.perf_counter()
    W = part.matrix()
    gram = stats.gram if stats is not None else None
    damp = None
    if method == "sparsegpt":
        new, keep, damp = sparsegpt(W, gram, density=density, pattern=nm, blocksize=blocksize,
                                    percdamp=percdamp, layer=part.label)
    else:
        keep = _keep(method, W, stats, density, nm, group, part.label)
        new = W * keep
    error = _error(W, new, gram) if gram is not None else None
    keep_weight = part.write(new, keep)
    result = LayerResult(part.label, part.kind, tuple(W.shape), int(keep.sum()), keep.numel(),
                         error, stats.rows if stats is not None else 0, stage,
                         time.perf_counter() - began, damp)
    return result, keep_weight
