"""Datasets: the MNIST family from IDX files, CIFAR-10/100 from their python-pickle archives, and a
synthetic task for tests; :func:`load_dataset` takes any of them by name (``DATASETS``).

Everything is returned as in-memory ``TensorDataset`` s: these sets fit in memory easily, and a
tensor pipeline avoids per-sample Python overhead on small CPUs. Files are looked up in a given
directory, ``$SPARSEPRUNE_DATA``, ``/usr/share/datasets/<name>`` and ``~/.cache/sparseprune/<name>``;
with ``download=True`` missing files are fetched from the publisher and MD5-checked.
"""

from __future__ import annotations

import gzip
import os
import pathlib
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import torch
from torch.utils.data import (BatchSampler, DataLoader, RandomSampler, SequentialSampler,
                              TensorDataset)

from ... import _validate as V

PathLike = Union[str, os.PathLike]
Pair = tuple[torch.Tensor, torch.Tensor]  # (images, labels)

# IDX type code -> big-endian numpy dtype of the stored values.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
}
SYSTEM_DATA_DIR = pathlib.Path("/usr/share/datasets")
ENV_VAR = "SPARSEPRUNE_DATA"


def cache_dir() -> pathlib.Path:
    """Where downloads go when neither a directory nor ``SPARSEPRUNE_DATA`` is given."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "sparseprune"


@dataclass
class Splits:
    """Train / validation / test sets plus what a model and a plot need to know about them."""

    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    num_classes: int
    input_shape: tuple[int, ...]
    mean: Union[float, tuple[float, ...]]  # one value, or one per channel (CIFAR)
    std: Union[float, tuple[float, ...]]
    name: str = ""


# ---------------------------------------------------------------------------------------- IDX

def _read_bytes(path: pathlib.Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as e:  # gzip raises these on truncated or corrupt streams
        raise ValueError(f"{path}: cannot read IDX data ({e})") from e


def read_idx(path: PathLike) -> torch.Tensor:
    """Read an IDX file (plain or ``.gz``) into a tensor of its stored dtype and shape.

    Raises ValueError naming the file when the magic number, type code, dimensions or size are
    inconsistent with the header (corrupt or truncated files).
    """
    path = pathlib.Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise ValueError(f"{path}: file too short for an IDX header ({len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: bad magic number {raw[:4].hex()} (IDX files start with 00 00)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX type code 0x{code:02x}; "
                         f"valid codes: {', '.join(f'0x{c:02x}' for c in _IDX_DTYPES)}")
    if ndim == 0:
        raise ValueError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated header: {ndim} dimensions need {header} bytes, "
                         f"file has {len(raw)}")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        kind = "truncated" if len(raw) < expected else "trailing bytes"
        raise ValueError(f"{path}: size mismatch ({kind}): header shape {shape} of {dtype.name} "
                         f"needs {expected} bytes, file has {len(raw)}")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    # Native byte order and a writable copy: torch rejects big-endian and read-only buffers.
    return torch.from_numpy(data.astype(dtype.newbyteorder("="), copy=True))


# ------------------------------------------------------------------------------ locating data

def _idx_path(directory: pathlib.Path, stem: str) -> Optional[pathlib.Path]:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _has_dataset(directory: pathlib.Path) -> bool:
    return all(_idx_path(directory, stem) is not None for stem in IDX_FILES.values())


def _candidates(name: str, root: Optional[PathLike]) -> list[pathlib.Path]:
    places = []
    if root is not None:
        places += [pathlib.Path(root), pathlib.Path(root) / name]
    env = os.environ.get(ENV_VAR)
    if env:
        places += [pathlib.Path(env), pathlib.Path(env) / name]
    places += [SYSTEM_DATA_DIR / name, cache_dir() / name]
    return places


def _how_to_get(name: str) -> str:
    from . import cifar

    if name in cifar.LAYOUTS:
        layout = cifar.LAYOUTS[name]
        what = f"{layout.folder}/ or {layout.archive}"
    else:
        what = f"the four IDX files ({', '.join(IDX_FILES.values())}, optionally .gz)"
    hint = f"set {ENV_VAR} to a directory holding {what} or to its parent containing {name}/"
    hint += ", or download it (download=True; CLI: --download)"
    if name == "fashion-mnist":
        return f"install it with `apt-get install -y dataset-fashion-mnist`, or {hint}"
    return hint


def find_dataset_dir(name: str = "fashion-mnist", root: Optional[PathLike] = None) -> pathlib.Path:
    """The directory holding dataset ``name``'s four IDX files.

    Searched in order: ``root`` (the dataset directory itself or its parent), the
    ``SPARSEPRUNE_DATA`` environment variable (likewise), then ``/usr/share/datasets/<name>``.
    Raises FileNotFoundError listing the places searched and how to get the data.
    """
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"name must be a dataset directory name like 'fashion-mnist', "
                         f"got {name!r}")
    places = _candidates(name, root)
    for place in places:
        if _has_dataset(place):
            return place
    searched = "\n  ".join(str(p) for p in places)
    raise FileNotFoundError(f"dataset {name!r} not found; searched:\n  {searched}\n"
                            f"To get it: {_how_to_get(name)}.")


# ------------------------------------------------------------------------------------ loading

def _check_fraction(val_fraction: float) -> float:
    return V.number_in("val_fraction", val_fraction, 0.0, 1.0, high_open=True)


def _load_pair(directory: pathlib.Path, split: str) -> Pair:
    images = read_idx(_idx_path(directory, IDX_FILES[f"{split}_images"]))
    labels = read_idx(_idx_path(directory, IDX_FILES[f"{split}_labels"]))
    if images.dim() != 3 or labels.dim() != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"{directory}: {split} images {tuple(images.shape)} and labels "
                         f"{tuple(labels.shape)} are not (N, H, W) and (N,)")
    # uint8 pixels -> [0, 1]; one channel axis so conv nets take them as they are.
    return images.float().div_(255.0).unsqueeze(1), labels.long()


def _split_off(images: torch.Tensor, labels: torch.Tensor, val_fraction: float,
               seed: int) -> tuple[Pair, Pair]:
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_val = int(round(val_fraction * len(labels)))
    val_idx, train_idx = order[:n_val], order[n_val:]
    return (images[train_idx], labels[train_idx]), (images[val_idx], labels[val_idx])


def _finish(train: Pair, test: Pair, *, val_fraction: float, seed: int, normalize: bool,
            per_channel: bool, name: str, num_classes: int) -> Splits:
    """Split validation off ``train`` (seeded), standardise by the remaining train split's mean and
    std (one value, or one per channel), and wrap everything as Splits."""
    (train_x, train_y), (val_x, val_y) = _split_off(*train, val_fraction, seed)
    test_x, test_y = test
    if not normalize:
        mean, std = 0.0, 1.0
        shift, scale = torch.tensor(0.0), torch.tensor(1.0)
    elif per_channel:
        dims = [0] + list(range(2, train_x.dim()))
        m, s = train_x.mean(dim=dims), train_x.std(dim=dims)
        s = torch.where(s > 0, s, torch.ones_like(s))
        mean, std = tuple(m.tolist()), tuple(s.tolist())
        per_channel_shape = (1, -1) + (1,) * (train_x.dim() - 2)  # broadcast over N, H, W
        shift, scale = m.view(per_channel_shape), s.view(per_channel_shape)
    else:
        mean, std = train_x.mean().item(), train_x.std().item()
        std = std if std > 0 else 1.0  # a constant image set would otherwise divide by zero
        shift, scale = torch.tensor(mean), torch.tensor(std)
    sets = [TensorDataset((x - shift) / scale, y)
            for x, y in ((train_x, train_y), (val_x, val_y), (test_x, test_y))]
    return Splits(*sets, num_classes=num_classes, input_shape=tuple(train_x.shape[1:]),
                  mean=mean, std=std, name=name)


def load_idx_dataset(name: str = "fashion-mnist", root: Optional[PathLike] = None, *,
                     val_fraction: float = 0.1, seed: int = 0, normalize: bool = True) -> Splits:
    """Load an MNIST-style IDX dataset as float32 (N, 1, H, W) images and int64 labels.

    The validation split is a seeded random ``val_fraction`` of the training files; with
    ``normalize`` every split is standardised by the mean and std of the remaining train split.
    """
    val_fraction = _check_fraction(val_fraction)
    directory = find_dataset_dir(name, root)
    train, test = _load_pair(directory, "train"), _load_pair(directory, "test")
    num_classes = int(max(train[1].max(), test[1].max()).item()) + 1
    return _finish(train, test, val_fraction=val_fraction, seed=seed, normalize=normalize,
                   per_channel=False, name=name, num_classes=num_classes)


def load_cifar_dataset(name: str = "cifar10", root: Optional[PathLike] = None, *,
                       val_fraction: float = 0.1, seed: int = 0, normalize: bool = True) -> Splits:
    """Load CIFAR-10 or CIFAR-100 (fine labels) from the python-pickle release, extracted or as the
    ``.tar.gz``, found like :func:`find_dataset_dir`. Float32 (N, 3, 32, 32) images standardised
    per channel by the train split's statistics; int64 labels."""
    from . import cifar

    if name not in cifar.LAYOUTS:
        V.choice("name", name, tuple(cifar.LAYOUTS))
    val_fraction = _check_fraction(val_fraction)
    places = _candidates(name, root)
    location = cifar.locate(name, places)
    if location is None:
        searched = "\n  ".join(str(p) for p in places)
        raise FileNotFoundError(f"dataset {name!r} not found; searched:\n  {searched}\n"
                                f"To get it: {_how_to_get(name)}.")
    train_x, train_y, test_x, test_y = cifar.read_cifar(name, location)
    return _finish((train_x.float().div_(255.0), train_y), (test_x.float().div_(255.0), test_y),
                   val_fraction=val_fraction, seed=seed, normalize=normalize, per_channel=True,
                   name=name, num_classes=cifar.LAYOUTS[name].num_classes)


@dataclass(frozen=True)
class DatasetInfo:
    """What the runner needs to know about a dataset before loading it."""

    kind: str                      # "idx", "cifar" or "synthetic"
    num_classes: int
    input_shape: tuple[int, int, int]
    augment_pad: int               # random-translation padding of the standard augmentation
    augment_flip: bool             # whether horizontal flips preserve the labels


DATASETS: dict[str, DatasetInfo] = {
    "fashion-mnist": DatasetInfo("idx", 10, (1, 28, 28), 2, True),
    "mnist": DatasetInfo("idx", 10, (1, 28, 28), 2, False),
    "kmnist": DatasetInfo("idx", 10, (1, 28, 28), 2, False),
    "cifar10": DatasetInfo("cifar", 10, (3, 32, 32), 4, True),
    "cifar100": DatasetInfo("cifar", 100, (3, 32, 32), 4, True),
    "synthetic": DatasetInfo("synthetic", 10, (1, 28, 28), 2, False),
}


def locate(name: str, root: Optional[PathLike] = None) -> Optional[pathlib.Path]:
    """Where dataset ``name`` would be loaded from (a directory or an archive), or None when it is
    not found (or is generated, like ``synthetic``)."""
    from . import cifar

    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    kind = DATASETS[name].kind
    if kind == "idx":
        try:
            return find_dataset_dir(name, root)
        except FileNotFoundError:
            return None
    if kind == "cifar":
        return cifar.locate(name, _candidates(name, root))
    return None


def download_dir(name: str, root: Optional[PathLike] = None) -> pathlib.Path:
    """Where :func:`load_dataset` puts a download: ``root/<name>``, else
    ``$SPARSEPRUNE_DATA/<name>``, else ``~/.cache/sparseprune/<name>``."""
    base = root if root is not None else os.environ.get(ENV_VAR) or cache_dir()
    return pathlib.Path(base) / name


def load_dataset(name: str, root: Optional[PathLike] = None, *, val_fraction: float = 0.1,
                 seed: int = 0, normalize: bool = True, download: bool = False,
                 progress: bool = True) -> Splits:
    """Any dataset of ``DATASETS`` by name, with a seeded validation split of ``val_fraction`` of
    the training set and standardisation by the train split's statistics.

    ``root`` (if given) must be an existing directory: the dataset's own or its parent. With
    ``download`` a dataset that is not found is fetched from its official source into
    :func:`download_dir` and MD5-checked (``sparseprune.runner.data.download``). ``synthetic`` is
    :func:`synthetic_dataset` with ``seed`` (its validation split is generated, not split off).
    Raises ValueError (unknown name, bad arguments, corrupt files), FileNotFoundError (missing
    data) or ``sparseprune.runner.data.download.DownloadError``.
    """
    from .download import download as fetch

    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    if root is not None and not pathlib.Path(root).is_dir():
        raise FileNotFoundError(f"data directory {str(root)!r} does not exist or is not a directory")
    kind = DATASETS[name].kind
    if kind == "synthetic":
        _check_fraction(val_fraction)
        splits = synthetic_dataset(seed=seed)
        splits.name = name
        return splits
    load = load_idx_dataset if kind == "idx" else load_cifar_dataset
    kwargs = dict(val_fraction=val_fraction, seed=seed, normalize=normalize)
    try:
        return load(name, root, **kwargs)
    except FileNotFoundError:
        if not download:
            raise
    target = download_dir(name, root)
    fetch(name, target, progress=progress)
    return load(name, target, **kwargs)


def synthetic_dataset(num_train: int = 512, num_test: int = 256, *,
                      input_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10,
                      seed: int = 0, signal: float = 0.5) -> Splits:
    """A learnable toy task: ``signal`` * a fixed random template per class + N(0, 1) noise.

    Deterministic from ``seed``. The validation split has ``num_test`` samples too. The default
    ``signal`` makes a dense LeNet-300-100 need a couple of epochs on 512 samples, not one step.
    """
    for arg, value in (("num_train", num_train), ("num_test", num_test),
                       ("num_classes", num_classes)):
        V.positive_int(arg, value)
    input_shape = V.input_shape(input_shape)
    V.finite_number("signal", signal, minimum=0.0, strict=True)
    gen = torch.Generator().manual_seed(seed)
    templates = signal * torch.randn((num_classes, *input_shape), generator=gen)

    def sample(n: int) -> TensorDataset:
        labels = torch.randint(num_classes, (n,), generator=gen)
        # Per-pixel noise stronger than the signal: only many pixels together identify the class.
        images = templates[labels] + torch.randn((n, *input_shape), generator=gen)
        return TensorDataset(images, labels)

    return Splits(sample(num_train), sample(num_test), sample(num_test), num_classes=num_classes,
                  input_shape=input_shape, mean=0.0, std=1.0)


def loader(dataset: TensorDataset, batch_size: int, *, shuffle: bool,
           seed: int = 0) -> DataLoader:
    """A single-process DataLoader whose shuffling is reproducible from ``seed``."""
    V.positive_int("batch_size", batch_size)
    generator = torch.Generator().manual_seed(seed)
    order = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    # Index the tensors once per batch (TensorDataset accepts a list of indices) instead of once
    # per sample plus a collate: several times faster for small in-memory images.
    return DataLoader(dataset, sampler=BatchSampler(order, batch_size, drop_last=False),
                      batch_size=None, num_workers=0)
