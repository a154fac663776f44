"""CIFAR-10 / CIFAR-100 from their standard python-pickle archives (the ``*-python`` releases of
https://www.cs.toronto.edu/~kriz/cifar.html), as an extracted folder or the ``.tar.gz`` itself.

The batches are pickles. Unpickling can run arbitrary code, so they are read with an unpickler
that only accepts what these files contain (numpy arrays, lists, dicts, bytes) and rejects any
other global with a clear error.
"""

from __future__ import annotations

import io
import pathlib
import pickle
import tarfile
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
}


@dataclass(frozen=True)
class Layout:
    """Names inside one CIFAR release."""

    folder: str
    archive: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    label_key: bytes
    num_classes: int


LAYOUTS = {
    "cifar10": Layout("cifar-10-batches-py", "cifar-10-python.tar.gz",
                      tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), b"labels", 10),
    "cifar100": Layout("cifar-100-python", "cifar-100-python.tar.gz", ("train",), ("test",),
                       b"fine_labels", 100),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")
        if module == "numpy.core.multiarray":  # numpy 2 moved it; the old path still pickles
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _unpickle(raw: bytes, where: str) -> dict:
    try:
        batch = _RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # any malformed pickle: report the file, not the parser's internals
        raise ValueError(f"{where}: not a CIFAR python batch ({exc})") from exc
    if not isinstance(batch, dict) or b"data" not in batch:
        raise ValueError(f"{where}: not a CIFAR python batch (no b'data' entry)")
    return batch


def locate(name: str, places: list[pathlib.Path]) -> Optional[pathlib.Path]:
    """The first place holding the extracted folder (or being it) or the archive; None if none."""
    layout = LAYOUTS[name]
    for place in places:
        for candidate in (place, place / layout.folder):
            if all((candidate / f).is_file() for f in layout.train + layout.test):
                return candidate
        if (place / layout.archive).is_file():
            return place / layout.archive
    return None


def _members(name: str, location: pathlib.Path) -> dict[str, bytes]:
    layout = LAYOUTS[name]
    wanted = layout.train + layout.test
    if location.is_dir():
        return {f: (location / f).read_bytes() for f in wanted}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(location, "r:*") as archive:
            for member in archive:
                base = pathlib.PurePosixPath(member.name)
                if member.isfile() and base.parent.name == layout.folder and base.name in wanted:
                    found[base.name] = archive.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ValueError(f"{location}: cannot read the archive ({exc})") from exc
    missing = [f for f in wanted if f not in found]
    if missing:
        raise ValueError(f"{location}: archive lacks {layout.folder}/{', '.join(missing)}")
    return found


def _stack(name: str, batches: list[dict], where: str) -> tuple[torch.Tensor, torch.Tensor]:
    key = LAYOUTS[name].label_key
    images, labels = [], []
    for batch in batches:
        data = np.asarray(batch[b"data"])
        if key not in batch or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 \
                or len(batch[key]) != data.shape[0]:
            raise ValueError(f"{where}: batch is not (N, 3072) uint8 with N {key.decode()}")
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        labels.append(torch.as_tensor(list(batch[key]), dtype=torch.int64))
    return torch.cat(images), torch.cat(labels)


def read_cifar(name: str, location: pathlib.Path) -> tuple[torch.Tensor, torch.Tensor,
                                                           torch.Tensor, torch.Tensor]:
    """(train images, train labels, test images, test labels): uint8 (N, 3, 32, 32) and int64.

    ``location`` is an extracted folder or the ``.tar.gz``. Raises ValueError naming the file for
    anything that is not a well-formed CIFAR python batch."""
    layout = LAYOUTS[name]
    raw = _members(name, location)
    train = _stack(name, [_unpickle(raw[f], f"{location}/{f}") for f in layout.train], str(location))
    test = _stack(name, [_unpickle(raw[f], f"{location}/{f}") for f in layout.test], str(location))
    for labels in (train[1], test[1]):
        if len(labels) and (labels.min() < 0 or labels.max() >= layout.num_classes):
            raise ValueError(f"{location}: labels outside [0, {layout.num_classes})")
    return (*train, *test)
