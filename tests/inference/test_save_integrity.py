"""Issue 20 (save files) and issue 19 item 6 (loading habits): the checksum covers the header,
geometry is checked against the file's own tensors, loads are bounded, saves byte-reproducible;
model.load_state_dict(sp.load(path)) works for plain models of dense and sparse saves."""

from __future__ import annotations

import copy
import json
import struct

import pytest
import torch
from torch import nn

import sparseprune as sp


def _rewrite(path, edit):
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    edit(header)
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + n:])


def _linear():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(40, 30), nn.ReLU(), nn.Linear(30, 10))


def _conv():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, stride=2))


def _sparse(model, format):
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p[p.abs() < p.abs().median()] = 0
    return sp.to_sparse(model, format=format)


def _recheck(header):
    """Recomputes the checksum as an attacker (or a careless tool) could: the geometry checks must
    still refuse the file."""
    from safetensors.torch import load as load_bytes  # noqa: F401
    return header


@pytest.mark.parametrize("format", ["csr", "bitmap"])
@pytest.mark.parametrize("dtype", ["F32", "I32"])
def test_a_flipped_dtype_is_corruption(tmp_path, format, dtype):
    path = tmp_path / "m.safetensors"
    sp.save(_sparse(_linear(), format), path)

    def flip(h):
        key = next(k for k, v in h.items() if k != "__metadata__" and v["dtype"] == dtype)
        h[key]["dtype"] = "I32" if dtype == "F32" else "F32"
    _rewrite(path, flip)
    with pytest.raises(ValueError, match="is corrupted: its content"):
        sp.load(path)


@pytest.mark.parametrize("edit", [
    lambda e: e["0._extra_state"].update(padding_mode="reflect"),
    lambda e: e["2._extra_state"].update(stride=[1, 1]),
    lambda e: e["0._extra_state"].update(kernel_size=[1, 9]),
])
def test_edited_geometry_is_corruption(tmp_path, edit):
    path = tmp_path / "m.safetensors"
    sp.save(_sparse(_conv(), "csr"), path)

    def change(h):
        extra = json.loads(h["__metadata__"]["extra_state"])
        edit(extra)
        h["__metadata__"]["extra_state"] = json.dumps(extra)
    _rewrite(path, change)
    with pytest.raises(ValueError, match="is corrupted"):
        sp.load(path, _conv())


def _resign(path):
    """Recompute the checksum of an edited file (what a tool that rewrites files would do)."""
    from sparseprune.inference import serialize
    tensors, _ = {}, None
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    from safetensors.torch import load_file
    tensors = load_file(str(path))
    header["__metadata__"]["sha256"] = serialize._digest(tensors, header["__metadata__"])
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + n:])


@pytest.mark.parametrize("format", ["csr", "bitmap"])
@pytest.mark.parametrize("with_model", [True, False])
def test_geometry_is_checked_against_the_tensors_before_allocating(tmp_path, format, with_model):
    path = tmp_path / "m.safetensors"
    sp.save(_sparse(_linear(), format), path)

    def huge(h):
        extra = json.loads(h["__metadata__"]["extra_state"])
        extra["0._extra_state"]["out_features"] = 10**12
        h["__metadata__"]["extra_state"] = json.dumps(extra)
    _rewrite(path, huge)
    _resign(path)  # a consistent checksum: only the geometry check stands in the way
    with pytest.raises(ValueError, match=r"saved sparse layer 0 is malformed or does not match "
                                         r"its tensors \(the geometry says 1000000000000 rows"):
        sp.load(path, _linear()) if with_model else sp.load(path)


def test_dense_layout_is_bounded_by_the_file_size(tmp_path, monkeypatch):
    from sparseprune.inference import serialize
    path = tmp_path / "m.safetensors"
    sp.save(_sparse(_linear(), "csr"), path)
    monkeypatch.setattr(serialize, "_DENSE_FLOOR", 0)
    monkeypatch.setattr(serialize, "_DENSE_GROWTH", 0.5)
    with pytest.raises(ValueError, match="load it into a model with sparseprune.load"):
        sp.load(path)
    assert isinstance(sp.load(path, _linear())[0], sp.nn.SparseLinear)  # stays sparse


@pytest.mark.parametrize("make", [lambda: _linear(), lambda: _sparse(_linear(), "csr"),
                                  lambda: _sparse(_conv(), "bitmap")])
def test_saves_are_byte_reproducible(tmp_path, make):
    model = make()
    sp.save(model, tmp_path / "a.safetensors")
    sp.save(copy.deepcopy(model), tmp_path / "b.safetensors")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


@pytest.mark.parametrize("format", ["dense", "csr", "bitmap"])
@pytest.mark.parametrize("arch", [_linear, _conv])
def test_load_state_dict_of_a_plain_model_works_for_any_save(tmp_path, format, arch):
    source = arch()
    if format != "dense":
        source = _sparse(source, format)
    path = tmp_path / "m.safetensors"
    sp.save(source, path)
    plain = arch()
    plain.load_state_dict(sp.load(path))
    x = torch.randn(2, 40) if arch is _linear else torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), source(x), rtol=1e-4, atol=1e-5)
    if format != "dense":  # a sparse model of another format takes the dense layout too
        other = _sparse(arch(), "bitmap" if format == "csr" else "csr")
        other.load_state_dict(sp.load(path))
        with torch.no_grad():
            torch.testing.assert_close(other(x), source(x), rtol=1e-4, atol=1e-5)


def test_a_masked_state_into_a_plain_model_names_the_cause_and_the_fix(tmp_path):
    masked = nn.Sequential(nn.Linear(8, 6))
    sp.convert(masked, "aslp")
    path = tmp_path / "m.safetensors"
    sp.save(masked, path)
    with pytest.raises(ValueError, match=r"holds layer 0 as a masked \(training\) layer \(entries "
                                         r"rng, scores\).*Finalize the masked model"):
        sp.load(path, nn.Sequential(nn.Linear(8, 6)))
    target = nn.Sequential(nn.Linear(8, 6))
    sp.convert(target, "aslp")
    sp.load(path, target)  # the fix named in the message
    torch.testing.assert_close(target[0].scores, masked[0].scores)
