"""The sparse inference workloads: one pruned 4096x4096 layer in every form (dense F.linear,
torch.sparse CSR, sparseprune CSR, bitmap and, for an N:M weight, nm), and whole pruned models
dense vs sparse (MiniLM-L6: sparse_minilm.py). Each
builder checks its results against dense first, then returns zero-argument callables to time.
"""

from __future__ import annotations

import copy
import os
import tempfile
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

import sparseprune as sp
from sparseprune import ops, select
from sparseprune.inference import sparsify as sparse
from sparseprune.ops import formats, nm_format
from sparseprune.runner.models import build_model

MODELS = {"lenet300": (1, 28, 28), "conv4": (3, 32, 32)}


def pruned_weight(size: int, density: float, seed: int = 0) -> torch.Tensor:
    """A random size x size weight under a random mask keeping exactly round(density * N)."""
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(size, size, generator=gen)
    keep = torch.randperm(size * size, generator=gen)[: round(density * size * size)]
    mask = torch.zeros(size * size, dtype=torch.bool)
    mask[keep] = True
    return weight * mask.view(size, size)


def nm_weight(size: int, n: int = 2, m: int = 4, seed: int = 0) -> torch.Tensor:
    """A random size x size weight keeping n of every m consecutive inputs (random scores)."""
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(size, size, generator=gen)
    return weight * select.top_n_of_m(torch.rand(size, size, generator=gen), n, m)


def layer_candidates(weight: torch.Tensor, batch: int) -> dict[str, Callable[[], object]]:
    """Callables computing F.linear(x, weight) for one batch, in every form (nm where the weight
    is N:M), checked first."""
    x = torch.randn(batch, weight.shape[1])
    csr = weight.to_sparse_csr()
    fns: dict[str, Callable[[], object]] = {
        "dense": lambda: F.linear(x, weight),
        "torch.sparse": lambda: (csr @ x.t()).t(),
    }
    for format in formats.FORMATS:
        parts = formats.compress(weight, format)
        fns[format] = (lambda p, f: lambda: ops.sparse_linear(x, *p, None, f, weight.shape))(
            parts, format)
    pattern = nm_format.detect(weight)
    if pattern is not None:
        values, _, indices = nm_format.compress(weight, pattern)
        fns["nm"] = lambda: ops.nm_linear(x, values, indices, None, *pattern, weight.shape)
    expect = fns["dense"]()
    for name, fn in fns.items():
        torch.testing.assert_close(fn(), expect, rtol=1e-3, atol=1e-3, msg=name)
    return fns


def pruned_model(name: str, density: float, seed: int = 0) -> nn.Module:
    """The model finalized to `density` in every layer, ranked by random scores (a stand-in for
    trained ones: the kernels' speed depends on how many weights are kept, not which)."""
    torch.manual_seed(seed)
    model = sp.convert(build_model(name, MODELS[name], 10), "aslp")
    with torch.no_grad():
        for _, layer in sp.masked_layers(model):
            layer.scores.normal_()
    return sp.finalize(model, density=density, scope="local").eval().requires_grad_(False)


def model_candidates(name: str, density: float, batch: int) -> tuple[dict, dict, nn.Module]:
    """(whole-model callables dense / sparse, per-layer callables {layer: {dense, sparse}}, the
    sparse model) for one pruned model and batch, checked first."""
    dense = pruned_model(name, density)
    sparse_model = sp.to_sparse(copy.deepcopy(dense), format="auto", batch_sizes=(batch,))
    x = torch.randn(batch, *MODELS[name])
    with torch.no_grad():
        torch.testing.assert_close(sparse_model(x), dense(x), rtol=1e-3, atol=1e-3)
    inputs = sparse.layer_inputs(dense, [n for n, m in dense.named_modules()
                                          if type(m) in (nn.Linear, nn.Conv2d)], x)
    layers = {}
    for layer_name, layer_input in inputs.items():
        d, s = dense.get_submodule(layer_name), sparse_model.get_submodule(layer_name)
        layers[layer_name] = {"dense": (lambda m, i: lambda: m(i))(d, layer_input),
                              "sparse": (lambda m, i: lambda: m(i))(s, layer_input)}
    whole = {"dense": lambda: dense(x), "sparse": lambda: sparse_model(x)}
    return whole, layers, sparse_model


def file_sizes(name: str, density: float) -> dict[str, int]:
    """Bytes on disk: the dense state dict (safetensors, every weight stored) vs sparseprune.save
    of the sparse model."""
    from safetensors.torch import save_file
    dense = pruned_model(name, density)
    sparse_model = sp.to_sparse(copy.deepcopy(dense), format="auto")
    with tempfile.TemporaryDirectory() as tmp:
        dense_path, sparse_path = os.path.join(tmp, "d.safetensors"), os.path.join(tmp, "s.sp")
        save_file({k: v.contiguous() for k, v in dense.state_dict().items()}, dense_path)
        sp.save(sparse_model, sparse_path)
        return {"dense_bytes": os.path.getsize(dense_path),
                "sparse_bytes": os.path.getsize(sparse_path),
                "kept_weights": sp.sparsity_report(dense).kept}
