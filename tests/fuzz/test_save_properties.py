"""Property-based tests of sp.save / sp.load: round trips are exact and byte-reproducible, and any
change to a file (a flipped byte anywhere, a truncation, an edited header entry) is refused with
a ValueError; nothing crashes (the loads run in the crash-guarded worker)."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import sparseprune as sp

pytestmark = pytest.mark.fuzz


def _model(seed: int, density: float, format: str):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(12, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p[torch.rand_like(p) > density] = 0
    return model if format == "dense" else sp.to_sparse(model, format=format)


@given(seed=st.integers(0, 50), density=st.floats(0.0, 1.0),
       format=st.sampled_from(["dense", "csr", "bitmap"]), with_model=st.booleans(),
       damage=st.sampled_from(["none", "byte", "truncate", "header"]), where=st.floats(0, 1),
       value=st.integers(1, 255))
def test_saved_files_round_trip_or_are_refused(worker, tmp_path_factory, seed, density, format,
                                               with_model, damage, where, value):
    path = tmp_path_factory.mktemp("save") / "m.safetensors"
    model = _model(seed, density, format)
    sp.save(model, path)
    good = path.read_bytes()
    sp.save(model, path)
    assert path.read_bytes() == good  # byte-reproducible
    raw = bytearray(good)
    if damage == "byte":
        raw[min(int(where * len(raw)), len(raw) - 1)] ^= value
    elif damage == "truncate":
        raw = raw[: int(where * (len(raw) - 1))]
    elif damage == "header":
        n = struct.unpack("<Q", raw[:8])[0]
        header = json.loads(raw[8:8 + n])
        entries = [k for k in header if k != "__metadata__"]
        key = entries[min(int(where * len(entries)), len(entries) - 1)]
        header[key]["shape"] = list(reversed(header[key]["shape"])) + [1] \
            if value % 2 else header[key]["shape"]
        header[key]["dtype"] = {"F32": "I32", "I32": "F32"}.get(header[key]["dtype"], "U8") \
            if value % 3 == 0 else header[key]["dtype"]
        md = header["__metadata__"]
        extra = json.loads(md["extra_state"])
        for state in extra.values():
            if isinstance(state, dict) and "out_features" in state and value % 5 == 0:
                state["out_features"] = 10**12
        md["extra_state"] = json.dumps(extra)
        blob = json.dumps(header).encode()
        blob += b" " * (-len(blob) % 8)
        raw = bytearray(struct.pack("<Q", len(blob)) + blob + bytes(raw[8 + n:]))
    path.write_bytes(bytes(raw))
    outcome = worker.call("fuzz.cases", "load", str(path), with_model)
    assert outcome[0] != "crash", outcome
    if bytes(raw) == good:
        assert outcome[0] == "ok", outcome
        if with_model:
            with torch.no_grad():
                torch.testing.assert_close(outcome[1], model(torch.ones(2, 12)))
    elif outcome[0] == "raise":
        assert outcome[1] == "ValueError" and outcome[2].startswith("load:"), outcome
    else:  # a change that safetensors normalises away (e.g. header whitespace) must load the same
        assert damage in ("header", "byte"), outcome
