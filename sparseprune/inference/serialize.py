""":func:`save` and :func:`load`: models and state dicts as safetensors files, no pickle.

The file holds every tensor of the state dict, except that a floating tensor with at least two
dimensions and mostly zeros (a finalized but unconverted weight) is stored in the bitmap format of
:mod:`sparseprune.formats`; sparse layers' buffers are compressed already. So the file grows with
the kept weights, not with the dense size. Non-tensor entries (the sparse layers' format and
geometry) go into the header metadata, with the file format's name and version.

Integrity (format version 2): a SHA-256 over the whole content, not only the tensor bytes: every
tensor's name, dtype, shape and bytes, and every metadata entry; so a flipped dtype or an edited
layer geometry is caught as corruption. Then the content is checked against itself before anything
is allocated from it: a sparse layer's geometry must match its own tensors' shapes, so a file
cannot make :func:`load` allocate much more than its own size (the dense layout of a sparse layer
is bounded too, see :func:`load`). The writer is canonical (names sorted, fixed JSON), so saving
the same state twice gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections import OrderedDict
from typing import Any, Optional, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from ..ops import formats
from ..convert import replace_module
from ..nn.masked import MaskedLayer
from ..nn.sparse import SparseConv2d, SparseLayer, SparseLinear

FILE_FORMAT = "sparseprune"
FILE_VERSION = 2
_CHECKSUM = "sha256"
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


# safetensors' dtype names (its header format).
_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16",
           torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32", torch.int16: "I16",
           torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
_DTYPES.update({getattr(torch, t): n for t, n in (("uint16", "U16"), ("uint32", "U32"),
                                                  ("uint64", "U64"), ("float8_e4m3fn", "F8_E4M3"),
                                                  ("float8_e5m2", "F8_E5M2"))
                if hasattr(torch, t)})
# The dense layout of a file's sparse layers (load without a model) may take at most this many
# times the file's size, and at least this many bytes: enough for any real pruned model (a layer
# at density 1e-3 in CSR grows 500 times), never the terabytes a crafted geometry could ask for.
_DENSE_GROWTH = 1024
_DENSE_FLOOR = 1 << 30


def _dtype_name(t: Tensor) -> str:
    if t.dtype not in _DTYPES:
        raise TypeError(f"save: tensors of dtype {t.dtype} cannot be stored (safetensors)")
    return _DTYPES[t.dtype]


def _bytes(t: Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _digest(tensors: dict[str, Tensor], metadata: dict[str, str]) -> str:
    """SHA-256 of the whole content: the metadata (but the checksum), every tensor's name, dtype
    and shape, then every tensor's bytes, in name order."""
    h = hashlib.sha256()
    described = {"metadata": {k: v for k, v in metadata.items() if k != _CHECKSUM},
                 "tensors": [[n, _dtype_name(tensors[n]), list(tensors[n].shape)]
                             for n in sorted(tensors)]}
    h.update(_canonical(described).encode())
    for name in sorted(tensors):
        h.update(_bytes(tensors[name]))
    return h.hexdigest()


def _write(path: PathLike, tensors: dict[str, Tensor], metadata: dict[str, str]) -> None:
    """A safetensors file with a canonical header (keys sorted, no spaces; the library's own
    writer orders the metadata by hash, so the same state gave different bytes), written to a
    temporary file first so that a failed save leaves no half file."""
    header: dict[str, Any] = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name in sorted(tensors):
        data = _bytes(tensors[name])
        header[name] = {"dtype": _dtype_name(tensors[name]), "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = _canonical(header).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    target = os.fspath(path)
    tmp = f"{target}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            for data in blobs:
                f.write(data)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save(model_or_state: Union[nn.Module, dict[str, Any]], path: PathLike) -> None:
    """Write a model's ``state_dict`` (or a state dict) to ``path`` as safetensors. The same state
    always gives the same bytes."""
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
        if not isinstance(key, str) or _SEP in key or key == "__metadata__":
            raise ValueError(f"save: state dict keys must be strings without {_SEP!r} (and not "
                             f"'__metadata__'), got {key!r}")
        if not isinstance(value, Tensor):
            extra[key] = value  # e.g. a sparse layer's extra state: format and geometry
            continue
        t = value.detach().to("cpu").contiguous()
        _dtype_name(t)
        if _worth_compressing(t):
            parts = formats.compress(t.reshape(t.shape[0], -1), "bitmap")
            tensors.update({f"{key}{_SEP}{p}": v for p, v in zip(_PARTS, parts)})
            dense_shapes[key] = list(t.shape)
        else:
            tensors[key] = t
    try:
        extra_json = _canonical(extra)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"save: non-tensor state entries must be JSON-serialisable ({exc})") from None
    metadata = {"format": FILE_FORMAT, "format_version": str(FILE_VERSION),
                "keys": _canonical(list(state)), "extra_state": extra_json,
                "bitmap_tensors": _canonical(dense_shapes)}
    metadata[_CHECKSUM] = _digest(tensors, metadata)
    _write(path, tensors, metadata)


def _read(path: PathLike) -> tuple[dict[str, Tensor], dict[str, str]]:
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            head = f.read(8)
            size = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if not 0 < size <= min(os.fstat(f.fileno()).st_size - 8, 100 << 20):
                raise ValueError(f"header size {size} does not fit the file")
            header = json.loads(f.read(size))
        metadata = header.get("__metadata__") or {} if isinstance(header, dict) else {}
        tensors = load_file(name)
    except (SafetensorError, OSError, ValueError, RuntimeError, RecursionError,
            struct.error) as exc:
        raise ValueError(f"load: {name!r} is not a readable safetensors file "
                         f"(corrupted or truncated?): {exc}") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FILE_FORMAT:
        raise ValueError(f"load: {name!r} is not a sparseprune file (its metadata format is "
                         f"{metadata.get('format') if isinstance(metadata, dict) else None!r}); "
                         "write it with sparseprune.save")
    version = metadata.get("format_version")
    if version != str(FILE_VERSION):
        raise ValueError(f"load: {name!r} has sparseprune file format version {version}; this "
                         f"sparseprune reads version {FILE_VERSION} (version 1 files lacked the "
                         "header checksum: load them with the sparseprune that wrote them and "
                         "save again)")
    try:
        intact = metadata.get(_CHECKSUM) == _digest(tensors, metadata)
    except TypeError:
        intact = False
    if not intact:
        raise ValueError(f"load: {name!r} is corrupted: its content (tensor names, dtypes, shapes, "
                         "bytes or metadata) does not match the checksum written with it")
    return tensors, metadata


def _json(metadata: dict[str, str], key: str, kind: type) -> Any:
    try:
        value = json.loads(metadata[key])
    except (KeyError, ValueError, RecursionError) as exc:
        raise ValueError(f"load: the file's sparseprune metadata is damaged ({exc!r})") from None
    if not isinstance(value, kind):
        raise ValueError(f"load: the file's metadata entry {key!r} must be a {kind.__name__}, "
                         f"got {type(value).__name__}")
    return value


def _prefix(name: str) -> str:
    return f"{name}." if name else ""


def _sparse_layer(name: str, spec: Any, state: dict[str, Any]) -> SparseLayer:
    """The sparse layer ``name`` built from its saved geometry and its own tensors, every size
    checked against the tensors before anything is allocated from it."""
    p = _prefix(name)
    try:
        parts = [state[p + part] for part in _PARTS]
        bias = state.get(p + "bias")
        for what, value in spec.items():
            if what in ("in_features", "out_features", "in_channels", "out_channels", "groups") \
                    and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{what} must be an int >= 0, got {value!r}")
        rows = spec["out_features"] if spec["type"] == "SparseLinear" else spec["out_channels"]
        if not isinstance(parts[1], Tensor) or parts[1].shape != (rows + 1,):
            raise ValueError(f"the geometry says {rows} rows, its row_ptr holds "
                             f"{getattr(parts[1], 'shape', None)}")
        if spec["type"] == "SparseLinear":
            return SparseLinear(spec["in_features"], rows, *parts, bias, format=spec["format"])
        return SparseConv2d(spec["in_channels"], rows, spec["kernel_size"], *parts, bias,
                            spec["stride"], spec["padding"], spec["dilation"], spec["groups"],
                            spec["padding_mode"], format=spec["format"])
    except (KeyError, TypeError, ValueError, RuntimeError, OverflowError) as exc:
        raise ValueError(f"load: the saved sparse layer {name or '(model)'} is malformed or does "
                         f"not match its tensors ({exc})") from None


def _state(tensors: dict[str, Tensor],
           metadata: dict[str, str]) -> tuple["OrderedDict[str, Any]", dict[str, SparseLayer]]:
    """The state dict as saved (sparse layers compressed) and each sparse layer, validated."""
    keys = _json(metadata, "keys", list)
    extra = _json(metadata, "extra_state", dict)
    dense_shapes = _json(metadata, "bitmap_tensors", dict)
    if not all(isinstance(k, str) for k in keys):
        raise ValueError("load: the file's metadata entry 'keys' must list strings")
    missing = [k for k in keys if k not in extra and k not in dense_shapes and k not in tensors]
    if missing:
        raise ValueError(f"load: the file lacks the tensors {missing[:5]}")
    state: OrderedDict[str, Any] = OrderedDict()
    for key in keys:
        if key in extra:
            state[key] = extra[key]
        elif key in dense_shapes:
            shape = dense_shapes[key]
            if not (isinstance(shape, list) and len(shape) >= 2 and all(
                    isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
                raise ValueError(f"load: {key}: bad saved shape {shape!r}")
            rows, cols = shape[0], math.prod(shape[1:])
            parts = [tensors.get(f"{key}{_SEP}{p}") for p in _PARTS]
            # Checked against the stored words before the dense tensor is allocated.
            formats.validate(*parts, "bitmap", rows, cols, what=f"load: {key}")
            state[key] = formats.to_dense(*parts, "bitmap", rows, cols).view(shape)
        else:
            state[key] = tensors[key]
    layers = {}
    for key, value in state.items():
        if (key == "_extra_state" or key.endswith("._extra_state")) and isinstance(value, dict) \
                and value.get("type") in _LAYERS:
            name = key[: -len("_extra_state")].rstrip(".")
            layers[name] = _sparse_layer(name, value, state)
    return state, layers


def _dense_layout(state: "OrderedDict[str, Any]", layers: dict[str, SparseLayer],
                  file_bytes: int) -> "OrderedDict[str, Any]":
    """``state`` with every sparse layer as the plain layer's ``weight`` (and ``bias``)."""
    dense_bytes = sum(4 * math.prod(layer.weight_shape) for layer in layers.values())
    limit = max(_DENSE_FLOOR, _DENSE_GROWTH * file_bytes)
    if dense_bytes > limit:
        raise ValueError(f"load: the dense layout of this file's sparse layers takes "
                         f"{dense_bytes} bytes, over {limit} ({_DENSE_GROWTH} times the file's "
                         "size): load it into a model with sparseprune.load(path, model=...), "
                         "which keeps sparse layers sparse")
    owner = {_prefix(name) + part: name for name in layers for part in (*_PARTS, "_extra_state")}
    out: OrderedDict[str, Any] = OrderedDict()
    for key, value in state.items():
        if key not in owner:
            out[key] = value
        elif key.endswith("values"):  # the weight takes the place of the compressed buffers
            layer = layers[owner[key]]
            out[_prefix(owner[key]) + "weight"] = layer.dense_weight().clone()
    return out


def _refuse_masked_into_plain(model: nn.Module, state: dict[str, Any]) -> None:
    """A clear error where the file holds a masked (training) layer and the model a plain one."""
    for name, module in model.named_modules():
        if isinstance(module, (MaskedLayer, SparseLayer)) \
                or not isinstance(getattr(module, "weight", None), Tensor):
            continue
        p = _prefix(name)
        own = set(module.state_dict(keep_vars=True))
        saved = {k[len(p):] for k in state if k.startswith(p) and "." not in k[len(p):]}
        extra = sorted(saved - own)
        if "weight" in saved and extra:
            raise ValueError(
                f"load: the file holds layer {name or '(model)'} as a masked (training) layer "
                f"(entries {', '.join(extra)}) but the model's is a plain "
                f"{type(module).__name__}. Finalize the masked model before saving "
                "(sparseprune.finalize(model); sparseprune.save(model, path)), or load into a "
                "model converted with the same method: sparseprune.convert(model, method, ...), "
                "then sparseprune.load(path, model=model)")


def load(path: PathLike, model: Optional[nn.Module] = None) -> Any:
    """Read a file written by :func:`save`.

    Without ``model``: the state dict in the dense layout, whatever was saved: a sparse layer's
    compressed buffers become the plain layer's ``weight`` (zeros where pruned), so
    ``plain_model.load_state_dict(sparseprune.load(path))`` works for dense and sparse saves alike
    (a sparse model takes it too: its layers compress the weight again). A file whose sparse layers
    would take more than 1024 times its size in the dense layout (at least 1 GiB) is refused:
    load it with a model.

    With ``model`` (e.g. a freshly built dense architecture): its layers saved as sparse become
    sparse layers, then the state is loaded strictly, and the model is returned (a new module only
    if ``model`` itself was such a layer), its parameters frozen if it holds sparse layers (an
    inference model, as after ``to_sparse``). A masked (training) state saved for what is a plain
    layer in ``model`` raises ValueError naming the layer and the fix.

    Corrupted files (any change to the tensors or the header), other file formats and other
    format versions raise ValueError saying which.
    """
    tensors, metadata = _read(path)
    state, layers = _state(tensors, metadata)
    if model is None:
        return _dense_layout(state, layers, os.path.getsize(os.fspath(path)))
    _refuse_masked_into_plain(model, state)
    for name, layer in layers.items():
        try:
            current = model.get_submodule(name)
        except AttributeError:
            continue  # load_state_dict reports the unexpected keys
        if not isinstance(current, type(layer)):
            model = replace_module(model, name, layer)
    model.load_state_dict(state, strict=True)
    if any(isinstance(m, SparseLayer) for m in model.modules()):
        model.requires_grad_(False)  # an inference model, as sparseprune.to_sparse makes it
    return model
