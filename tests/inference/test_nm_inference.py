"""N:M models through to_sparse: format "nm" (and "semi_structured", whose CUDA path needs a GPU),
compliance errors, format="auto" with its reasons and batch sizes, save/load round trips and file
sizes, and the whole MiniLM-L6 pruned to 2:4."""

import copy

import pytest
import torch
from torch import nn

import sparseprune as sp
from sparseprune import select
from sparseprune.inference import sparsify
from sparseprune.nn import SparseLinear, semi_structured
from sparseprune.runner import minilm

needs_minilm = pytest.mark.skipif(minilm.available() is not None, reason=str(minilm.available()))
needs_semi_structured = pytest.mark.skipif(semi_structured.unavailable() is not None,
                                           reason=str(semi_structured.unavailable()))


@torch.no_grad()
def prune_nm(model, n=2, m=4, dtype=torch.float32):
    """Every nn.Linear of `model` keeps its n largest-magnitude weights of every m inputs."""
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.in_features % m == 0:
            module.weight.mul_(select.top_n_of_m(module.weight.abs(), n, m))
    return model.to(dtype).eval().requires_grad_(False)


def mlp(seed=0, dims=(64, 128, 32, 8)):
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


@pytest.mark.parametrize("pattern", [(2, 4), (1, 4), (4, 8)])
def test_to_sparse_nm_matches_dense(pattern):
    dense = prune_nm(mlp(), *pattern)
    model = sp.to_sparse(copy.deepcopy(dense), format="nm")
    layers = [m for m in model.modules() if isinstance(m, SparseLinear)]
    assert len(layers) == 3 and all(m.format == "nm" for m in layers)
    assert {m.pattern for m in layers} == {pattern}
    for shape in [(64,), (5, 64), (2, 7, 64), (0, 64)]:
        x = torch.randn(shape)
        torch.testing.assert_close(model(x), dense(x), rtol=1e-4, atol=1e-4)
    assert "nm" in str(sp.sparsity_report(model)) and f"{pattern[0]}:{pattern[1]}" in repr(model)


def test_bfloat16_model_keeps_bfloat16_values():
    dense = prune_nm(mlp(), dtype=torch.bfloat16)
    model = sp.to_sparse(copy.deepcopy(dense), format="nm")
    assert model[0].values.dtype == torch.bfloat16
    x = torch.randn(3, 64).bfloat16()
    torch.testing.assert_close(model(x).float(), dense(x).float(), rtol=3e-2, atol=3e-2)
    auto = sp.to_sparse(copy.deepcopy(dense), format="auto")  # csr / bitmap are float32 only
    assert all(getattr(m, "format", "nm") == "nm" for m in auto.modules()
               if isinstance(m, SparseLinear))


def test_non_compliant_mask_errors_for_nm_and_auto_picks_another():
    dense = prune_nm(mlp())
    with torch.no_grad():
        dense[2].weight[0, :3] = 1.0  # three of a group of four, and 3 of 8
        dense[2].weight[0, 3] = 1.0
    with pytest.raises(ValueError, match=r"layer 2: format 'nm' needs an N:M weight.*keeps 4"):
        sp.to_sparse(copy.deepcopy(dense), format="nm")
    model = sp.to_sparse(copy.deepcopy(dense), format="auto", batch_sizes=(1,))
    assert not isinstance(model[2], SparseLinear) or model[2].format != "nm"
    report = str(sp.sparsity_report(model))
    assert "not N:M" in report or "csr" in report or "bitmap" in report
    conv = nn.Sequential(nn.Conv2d(4, 8, 3))
    with pytest.raises(ValueError, match="is for linear layers; layer 0 is a Conv2d"):
        sp.to_sparse(conv, format="nm")
    odd = prune_nm(nn.Sequential(nn.Linear(30, 8)))  # 30 inputs: no groups of 4 or 8
    with pytest.raises(ValueError, match="not a multiple"):
        sp.to_sparse(odd, format="nm")


def test_auto_reasons_and_batch_sizes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 16))
    prune_nm(model)
    converted = sp.to_sparse(copy.deepcopy(model), format="auto", batch_sizes=(1, 8))
    assert isinstance(converted[0], SparseLinear) and converted[0].format == "nm"
    assert converted[0].format_reason.startswith("nm: est.")
    assert not isinstance(converted[2], SparseLinear)  # 16 x 2048: the call overhead decides
    report = sp.sparsity_report(converted)
    assert report.layers[1].format == "dense"
    assert report.layers[1].format_reason.startswith("dense: ")
    assert "ms layer" in str(report)
    with pytest.raises(ValueError, match="batch_sizes must be"):
        sp.to_sparse(copy.deepcopy(model), batch_sizes=(0,))
    with pytest.raises(ValueError, match="batch_sizes must be"):
        sp.to_sparse(copy.deepcopy(model), batch_sizes=8)
    timed = sp.to_sparse(copy.deepcopy(model), format="auto", example_input=torch.randn(1, 2048))
    assert "measured" in str(sp.sparsity_report(timed))
    x = torch.randn(2, 2048)
    torch.testing.assert_close(timed(x), model(x), rtol=1e-4, atol=1e-4)


def test_save_load_round_trip_and_file_size(tmp_path):
    torch.manual_seed(1)
    dense = prune_nm(nn.Sequential(nn.Linear(1024, 256), nn.ReLU(), nn.Linear(256, 64)))
    model = sp.to_sparse(copy.deepcopy(dense), format="nm")
    path = tmp_path / "m.sp"
    sp.save(model, path)
    loaded = sp.load(path, model=prune_nm(nn.Sequential(nn.Linear(1024, 256), nn.ReLU(),
                                                        nn.Linear(256, 64))))
    assert loaded[0].format == "nm" and loaded[0].pattern == (2, 4)
    for key, value in model.state_dict().items():
        if torch.is_tensor(value):
            assert torch.equal(loaded.state_dict()[key], value), key
    x = torch.randn(4, 1024)
    assert torch.equal(loaded(x), model(x))
    plain = sp.load(path)  # the dense layout
    assert torch.equal(plain["0.weight"], dense[0].weight)
    weights = 4 * (1024 * 256 + 256 * 64)
    nm_bytes = sum(m.values.numel() * 4 + m.indices.numel() * 4 for m in (model[0], model[2]))
    assert nm_bytes <= 0.55 * weights
    assert path.stat().st_size <= 0.55 * weights + 8192  # + biases and the header


def test_save_load_bfloat16(tmp_path):
    model = sp.to_sparse(prune_nm(mlp(), dtype=torch.bfloat16), format="nm")
    sp.save(model, tmp_path / "b.sp")
    loaded = sp.load(tmp_path / "b.sp", model=prune_nm(mlp(), dtype=torch.bfloat16))
    assert loaded[0].values.dtype == torch.bfloat16
    x = torch.randn(2, 64).bfloat16()
    assert torch.equal(loaded(x), model(x))


def test_semi_structured_runs_nm_kernel_on_cpu():
    dense = prune_nm(mlp())
    model = sp.to_sparse(copy.deepcopy(dense), format="semi_structured")
    assert model[0].format == "semi_structured" and model[0].pattern == (2, 4)
    x = torch.randn(3, 64)
    torch.testing.assert_close(model(x), dense(x), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"needs an N:M weight \(2:4\)"):
        sp.to_sparse(prune_nm(mlp(), 4, 8), format="semi_structured")


@needs_semi_structured
def test_semi_structured_on_cuda():
    torch.manual_seed(2)
    dense = prune_nm(nn.Sequential(nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 64)))
    dense = dense.half().cuda()
    model = sp.to_sparse(copy.deepcopy(dense), format="semi_structured")
    for shape in [(1, 256), (64, 256), (2, 32, 256)]:
        x = torch.randn(shape, device="cuda", dtype=torch.half)
        torch.testing.assert_close(model(x), dense(x), rtol=1e-2, atol=1e-2)


@needs_semi_structured
def test_semi_structured_auto_on_cuda():
    """auto on CUDA: dense without example_input (the latency model is the CPU's), timed (with
    synchronisation) on it; either way the outputs are the dense model's."""
    torch.manual_seed(3)
    dense = prune_nm(nn.Sequential(nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 64)))
    dense = dense.half().cuda()
    x = torch.randn(64, 256, device="cuda", dtype=torch.half)
    untimed = sp.to_sparse(copy.deepcopy(dense), format="auto")
    assert all(type(m) is nn.Linear for m in (untimed[0], untimed[2]))
    timed = sp.to_sparse(copy.deepcopy(dense), format="auto", example_input=x)
    for model in (untimed, timed):
        torch.testing.assert_close(model(x), dense(x), rtol=1e-2, atol=1e-2)


@needs_minilm
def test_minilm_pruned_to_2_4_matches_finalized_dense():
    teacher, tokenizer = minilm.load()
    dense = prune_nm(teacher)
    model = sp.to_sparse(copy.deepcopy(dense), format="nm", include=minilm.ENCODER)
    assert sum(isinstance(m, SparseLinear) for m in model.modules()) == 36
    batch = minilm.encode(tokenizer, ["Sparse kernels make pruned models faster.",
                                      "A second, somewhat longer sentence to pad the batch."])
    with torch.no_grad():
        torch.testing.assert_close(minilm.embed(model, batch), minilm.embed(dense, batch),
                                   rtol=1e-4, atol=1e-4)
