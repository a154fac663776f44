""":func:`save` and :func:`load`: models and state dicts as safetensors files, no pickle.

The file holds every tensor of the state dict, except that a floating tensor with at least two
dimensions and mostly zeros (a finalized but unconverted weight) is stored in the bitmap format of
:mod:`sparseprune.formats`; sparse layers' buffers are compressed already. So the file grows with
the kept weights, not with the dense size. Non-tensor entries (the sparse layers' format and
geometry) and a SHA-256 of the tensor bytes go into the header metadata, with the file format's
name and version, which :func:`load` checks before trusting anything.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from typing import Any, Optional, Union

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..ops import formats
from ..convert import replace_module
from ..nn.sparse import SparseConv2d, SparseLayer, SparseLinear

FILE_FORMAT = "sparseprune"
FILE_VERSION = 1
_SEP = "::"  # compressed entry "name::values" / "name::row_ptr" / "name::indices"
_PARTS = ("values", "row_ptr", "indices")
_LAYERS = {"SparseLinear": SparseLinear, "SparseConv2d": SparseConv2d}

PathLike = Union[str, "os.PathLike[str]"]


def _worth_compressing(t: Tensor) -> bool:
    # Bitmap storage costs 4 bytes per kept weight + 1 bit per weight (+ 4 per row) vs 4 dense.
    # A -0.0 would come back as +0.0, so tensors holding one stay dense (exact round trip).
    return t.dtype == torch.float32 and t.dim() >= 2 \
        and int(torch.count_nonzero(t)) < t.numel() * 0.9 \
        and not bool((torch.signbit(t) & (t == 0)).any())


def _digest(tensors: dict[str, Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save(model_or_state: Union[nn.Module, dict[str, Any]], path: PathLike) -> None:
    """Write a model's ``state_dict`` (or a state dict) to ``path`` as safetensors."""
    if isinstance(model_or_state, nn.Module):
        state = model_or_state.state_dict()
    elif isinstance(model_or_state, dict):
        state = model_or_state
    else:
        raise TypeError(f"save: expected an nn.Module or a state dict, got "
                        f"{type(model_or_state).__name__}")
    tensors: dict[str, Tensor] = {}
    extra: dict[str, Any] = {}
    dense_shapes: dict[str, list[int]] = {}
    for key, value in state.items():
        if _SEP in key:
            raise ValueError(f"save: state dict keys must not contain {_SEP!r}, got {key!r}")
        if not isinstance(value, Tensor):
            extra[key] = value  # e.g. a sparse layer's extra state: format and geometry
            continue
        t = value.detach().to("cpu").contiguous()
        if _worth_compressing(t):
            parts = formats.compress(t.reshape(t.shape[0], -1), "bitmap")
            tensors.update({f"{key}{_SEP}{p}": v for p, v in zip(_PARTS, parts)})
            dense_shapes[key] = list(t.shape)
        else:
            tensors[key] = t.clone()  # safetensors refuses tensors that share memory
    try:
        extra_json = json.dumps(extra)
    except TypeError as exc:
        raise TypeError(f"save: non-tensor state entries must be JSON-serialisable ({exc})") from None
    metadata = {"format": FILE_FORMAT, "format_version": str(FILE_VERSION),
                "keys": json.dumps(list(state)), "extra_state": extra_json,
                "bitmap_tensors": json.dumps(dense_shapes), "sha256": _digest(tensors)}
    save_file(tensors, os.fspath(path), metadata=metadata)


def _read(path: PathLike) -> tuple[dict[str, Tensor], dict[str, str]]:
    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(os.fspath(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ValueError(f"load: {os.fspath(path)!r} is not a readable safetensors file "
                         f"(corrupted or truncated?): {exc}") from None
    if metadata.get("format") != FILE_FORMAT:
        raise ValueError(f"load: {os.fspath(path)!r} is not a sparseprune file (its metadata "
                         f"format is {metadata.get('format')!r}); write it with sparseprune.save")
    version = metadata.get("format_version")
    if version != str(FILE_VERSION):
        raise ValueError(f"load: {os.fspath(path)!r} has sparseprune file format version "
                         f"{version}; this sparseprune reads version {FILE_VERSION}")
    if metadata.get("sha256") != _digest(tensors):
        raise ValueError(f"load: {os.fspath(path)!r} is corrupted: its tensor bytes do not match "
                         "the checksum written with them")
    return tensors, metadata


def _state(tensors: dict[str, Tensor], metadata: dict[str, str]) -> "OrderedDict[str, Any]":
    try:
        keys, extra, dense_shapes = (json.loads(metadata[k])
                                     for k in ("keys", "extra_state", "bitmap_tensors"))
    except (KeyError, ValueError) as exc:
        raise ValueError(f"load: the file's sparseprune metadata is damaged ({exc!r})") from None
    missing = [k for k in keys if k not in extra and k not in dense_shapes and k not in tensors]
    if missing:
        raise ValueError(f"load: the file lacks the tensors {missing[:5]}")
    state: OrderedDict[str, Any] = OrderedDict()
    for key in keys:
        if key in extra:
            state[key] = extra[key]
        elif key in dense_shapes:
            shape = dense_shapes[key]
            rows, cols = shape[0], int(torch.Size(shape[1:]).numel())
            parts = [tensors[f"{key}{_SEP}{p}"] for p in _PARTS]
            formats.validate(*parts, "bitmap", rows, cols, what=f"load: {key}")
            state[key] = formats.to_dense(*parts, "bitmap", rows, cols).view(shape)
        else:
            state[key] = tensors[key]
    return state


def _sparse_shells(model: nn.Module, state: dict[str, Any]) -> nn.Module:
    """Replace each layer the state saves as sparse with an empty sparse layer of that geometry,
    so that ``load_state_dict`` can fill it."""
    for key, value in state.items():
        if not key.endswith("_extra_state") or not isinstance(value, dict) \
                or value.get("type") not in _LAYERS:
            continue
        name = key[: -len("_extra_state")].rstrip(".")
        try:
            current = model.get_submodule(name)
        except AttributeError:
            continue  # load_state_dict reports the unexpected keys
        if isinstance(current, _LAYERS[value["type"]]):
            continue
        bias_key = f"{name}.bias" if name else "bias"
        try:
            shell = _shell(value, bias_key in state)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"load: the saved layer {name or '(model)'} is malformed ({exc!r})") \
                from None
        model = replace_module(model, name, shell)
    return model


def _shell(spec: dict[str, Any], has_bias: bool) -> SparseLayer:
    if spec["type"] == "SparseLinear":
        rows, cols = spec["out_features"], spec["in_features"]
    else:
        k = spec["kernel_size"]
        rows, cols = spec["out_channels"], spec["in_channels"] // spec["groups"] * k[0] * k[1]
    values, row_ptr = torch.zeros(0), torch.zeros(rows + 1, dtype=torch.int32)
    indices = torch.zeros(rows, formats.words_per_row(cols), dtype=torch.int32)
    bias = torch.zeros(rows) if has_bias else None
    if spec["type"] == "SparseLinear":
        return SparseLinear(cols, rows, values, row_ptr, indices, bias, format="bitmap")
    return SparseConv2d(spec["in_channels"], rows, spec["kernel_size"], values, row_ptr, indices,
                        bias, spec["stride"], spec["padding"], spec["dilation"], spec["groups"],
                        spec["padding_mode"], format="bitmap")


def load(path: PathLike, model: Optional[nn.Module] = None) -> Any:
    """Read a file written by :func:`save`.

    Without ``model``: the state dict. With ``model`` (e.g. a freshly built dense architecture):
    its layers saved as sparse become sparse layers, then the state is loaded strictly, and the
    model is returned (a new module only if ``model`` itself was such a layer), its parameters
    frozen if it holds sparse layers (an inference model, as after ``to_sparse``). Corrupted files,
    other file formats and other format versions raise ValueError saying which.
    """
    state = _state(*_read(path))
    if model is None:
        return state
    model = _sparse_shells(model, state)
    model.load_state_dict(state, strict=True)
    if any(isinstance(m, SparseLayer) for m in model.modules()):
        model.requires_grad_(False)  # an inference model, as sparseprune.to_sparse makes it
    return model
