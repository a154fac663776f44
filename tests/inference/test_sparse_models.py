"""to_sparse on whole models (finalized and masked), the auto format choice and its report,
inference-only errors, and save / load: bit-identical round trips, file sizes, damaged files."""

import copy
import json
import struct

import pytest
import torch
from torch import nn

import sparseprune as sp
from sparseprune.inference import sparsify as sparse
from sparseprune.ops import formats
from sparseprune.runner.models import build_model
from sparseprune.nn import SparseConv2d, SparseLinear


def pruned_model(name, shape, density, seed=0):
    """A model finalized to `density` per layer by random scores (a stand-in for trained ones)."""
    torch.manual_seed(seed)
    model = sp.convert(build_model(name, shape, 10), "aslp")
    with torch.no_grad():
        for _, layer in sp.masked_layers(model):
            layer.scores.normal_()
    return sp.finalize(model, density=density, scope="local").eval()


@pytest.fixture(scope="module")
def lenet():
    return pruned_model("lenet300", (1, 28, 28), 0.1)


@pytest.fixture(scope="module")
def conv4():
    return pruned_model("conv4", (3, 32, 32), 0.2)


@pytest.mark.parametrize("format", ["csr", "bitmap", "auto"])
def test_pruned_models_predict_the_same_dense_and_sparse(lenet, conv4, format):
    for model, shape in ((lenet, (1, 28, 28)), (conv4, (3, 32, 32))):
        x = torch.randn(16, *shape)
        with torch.no_grad():
            dense = model(x)
            sparse_model = sp.to_sparse(copy.deepcopy(model), format=format)
            out = sparse_model(x)
            single = sparse_model(x[:1])
        torch.testing.assert_close(out, dense, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(single, dense[:1], rtol=1e-4, atol=1e-4)
        assert torch.equal(out.argmax(1), dense.argmax(1))
        if format != "auto":
            assert all(type(m) not in (nn.Linear, nn.Conv2d) for m in sparse_model.modules())


def test_masked_layers_in_eval_mode_convert_to_their_final_weights():
    torch.manual_seed(1)
    model = sp.convert(nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.Linear(64, 5)), "aslp")
    with torch.no_grad():
        for _, layer in sp.masked_layers(model):
            layer.scores.normal_()
    x = torch.randn(3, 2, 6, 6)
    with pytest.raises(ValueError, match="eval mode"):
        sp.to_sparse(copy.deepcopy(model))
    model.eval()
    with torch.no_grad():
        expect = model(x)
        sparse_model = sp.to_sparse(copy.deepcopy(model), format="csr")
        torch.testing.assert_close(sparse_model(x), expect, rtol=1e-5, atol=1e-5)
    assert isinstance(sparse_model[0], SparseConv2d) and isinstance(sparse_model[2], SparseLinear)


def test_auto_rule_and_report(lenet):
    assert sparse.auto_format(0.01, 4096, 4096) == "csr"
    assert sparse.auto_format(0.3, 4096, 4096) == "bitmap"
    assert sparse.auto_format(0.9, 4096, 4096) == "dense"
    assert sparse.auto_format(0.01, 10, 100) == "dense"  # too small for sparse kernels to matter
    model = copy.deepcopy(lenet)
    with torch.no_grad():
        model.classifier[2].weight.normal_()  # fully dense again
    sp.to_sparse(model)
    report = sp.sparsity_report(model)
    assert [layer.format for layer in report.layers] == ["csr", "dense", "dense"]
    assert "format" in str(report).splitlines()[0] and "csr" in str(report)
    assert report.to_dict()["layers"][0]["format"] == "csr"
    assert report.layers[0].kept == model.classifier[0].nnz


def test_auto_with_an_example_input_times_the_candidates(lenet):
    x = torch.randn(4, 1, 28, 28)
    model = sp.to_sparse(copy.deepcopy(lenet), example_input=x)
    for layer in sp.sparsity_report(model).layers:
        assert layer.format in ("dense", "csr", "bitmap")
    with torch.no_grad():
        torch.testing.assert_close(model(x), lenet(x), rtol=1e-4, atol=1e-4)


def test_sparse_layers_are_inference_only():
    layer = SparseLinear.from_dense(nn.Linear(6, 3))
    x = torch.randn(2, 6, requires_grad=True)
    with pytest.raises(RuntimeError, match="inference-only.*torch.no_grad"):
        layer(x)
    with torch.no_grad():
        assert layer(x).shape == (2, 3)
    assert layer(x.detach()).shape == (2, 3)  # nothing asks for gradients
    assert not list(layer.parameters())


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("padding,padding_mode", [("same", "zeros"), (1, "reflect"),
                                                  ((2, 1), "circular"), ("valid", "zeros")])
def test_conv_padding_modes_and_to_dense(padding, padding_mode):
    torch.manual_seed(2)
    conv = nn.Conv2d(3, 5, (4, 3), padding=padding, padding_mode=padding_mode, dilation=(1, 2))
    with torch.no_grad():
        conv.weight.mul_(torch.rand_like(conv.weight) < 0.5)
    layer = SparseConv2d.from_dense(conv, "bitmap")
    x = torch.randn(2, 3, 9, 10)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), conv(x), rtol=1e-5, atol=1e-5)
    assert torch.equal(layer.to_dense().weight, conv.weight)


def test_bad_arguments(lenet):
    with pytest.raises(ValueError, match=r"format must be one of \('auto', 'csr', 'bitmap'\), got 'coo'"):
        sp.to_sparse(copy.deepcopy(lenet), format="coo")
    with pytest.raises(TypeError, match="float64 weights; the sparse kernels run in float32"):
        sp.to_sparse(nn.Linear(4, 3).double(), format="csr")
    assert type(sp.to_sparse(nn.Linear(4, 3).double())) is nn.Linear  # auto keeps it dense
    layer = SparseLinear.from_dense(nn.Linear(6, 3))
    with pytest.raises(ValueError, match=r"input's last dimension must equal in_features = 6"):
        layer(torch.randn(2, 5))
    with pytest.raises(TypeError, match="input must be float32"):
        layer(torch.randn(2, 6, dtype=torch.float64))
    values, row_ptr, indices = formats.compress(torch.ones(3, 6), "csr")
    with pytest.raises(ValueError, match=r"column indices must lie in \[0, 6\)"):
        SparseLinear(6, 3, values, row_ptr, indices + 1)


def test_state_dict_round_trip_between_formats(lenet):
    source = sp.to_sparse(copy.deepcopy(lenet), format="bitmap")
    target = sp.to_sparse(copy.deepcopy(lenet), format="csr")
    target.load_state_dict(source.state_dict())
    assert target.classifier[0].format == "bitmap"
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(target(x), source(x))


@pytest.mark.parametrize("format", ["csr", "bitmap", "auto"])
def test_save_load_is_bit_identical(tmp_path, conv4, format):
    model = sp.to_sparse(copy.deepcopy(conv4), format=format)
    path = tmp_path / "model.safetensors"
    sp.save(model, path)
    x = torch.randn(4, 3, 32, 32)
    loaded = sp.load(path, build_model("conv4", (3, 32, 32), 10))  # a fresh dense architecture
    assert torch.equal(loaded(x), model(x))
    assert [m.format for m in sp.sparsity_report(loaded).layers] == \
        [m.format for m in sp.sparsity_report(model).layers]
    state = sp.load(path)  # the dense layout: a plain conv4 takes it
    plain = build_model("conv4", (3, 32, 32), 10)
    plain.load_state_dict(state)
    assert torch.allclose(plain(x), model(x), atol=1e-4)


def test_file_size_follows_the_kept_weights(tmp_path):
    sizes = {}
    for density in (0.5, 0.1, 0.01):
        model = sp.to_sparse(pruned_model("lenet300", (1, 28, 28), density), format="csr")
        sp.save(model, tmp_path / "m.safetensors")
        sizes[density] = (tmp_path / "m.safetensors").stat().st_size
    kept = {d: round(d * 266_200) for d in sizes}
    for d in sizes:  # 8 bytes per kept weight (value + column) plus small per-row and fixed costs
        assert 8 * kept[d] < sizes[d] < 8 * kept[d] + 20_000, (d, sizes[d])
    dense_zeros = pruned_model("lenet300", (1, 28, 28), 0.1)  # finalized, never converted
    sp.save(dense_zeros, tmp_path / "d.safetensors")
    assert (tmp_path / "d.safetensors").stat().st_size < 4 * kept[0.1] + 40_000


def test_plain_state_dicts_round_trip(tmp_path, lenet):
    state = lenet.state_dict()
    sp.save(state, tmp_path / "s.safetensors")
    loaded = sp.load(tmp_path / "s.safetensors")
    assert list(loaded) == list(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def _rewrite_header(path, edit):
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    edit(header)
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + n:])


def test_damaged_and_foreign_files_raise_clear_errors(tmp_path, lenet):
    path = tmp_path / "m.safetensors"
    sp.save(sp.to_sparse(copy.deepcopy(lenet), format="csr"), path)
    good = path.read_bytes()

    flipped = bytearray(good)
    flipped[-100] ^= 0xFF  # one byte of tensor data
    path.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="is corrupted: its content .* does not match"):
        sp.load(path)
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        sp.load(path)
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        sp.load(path)

    path.write_bytes(good)
    _rewrite_header(path, lambda h: h["__metadata__"].update(format_version="1"))
    with pytest.raises(ValueError, match="file format version 1; this sparseprune reads version 2"):
        sp.load(path)
    path.write_bytes(good)
    _rewrite_header(path, lambda h: h.pop("__metadata__"))
    with pytest.raises(ValueError, match="is not a sparseprune file"):
        sp.load(path)
    with pytest.raises(ValueError, match="not a readable"):
        sp.load(tmp_path / "missing.safetensors")
    with pytest.raises(TypeError, match="expected an nn.Module or a state dict, got int"):
        sp.save(3, path)
