"""sparseprune.data (IDX reader, dataset lookup, splits, synthetic task) and sparseprune.runner.models."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import sparseprune as sp
from sparseprune.runner import data as D
from sparseprune.runner.models import MODELS, LeNet300, build_model, kaiming_normal_


def write_idx(path, array: np.ndarray, code: int = 0x08, compress: bool = False) -> None:
    """Write ``array`` as an IDX file (big-endian header and values)."""
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(dtype).tobytes()
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def write_dataset(directory, n_train: int = 50, n_test: int = 20, seed: int = 0) -> None:
    """Four tiny gzipped IDX files laid out like MNIST."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(directory / f"{split}-images-idx3-ubyte.gz",
                  rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), compress=True)
        write_idx(directory / f"{split}-labels-idx1-ubyte.gz",
                  (np.arange(n) % 10).astype(np.uint8), compress=True)


# ------------------------------------------------------------------------------------ read_idx

@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, compress):
    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    labels = np.array([7, 0, 255], dtype=np.uint8)
    suffix = ".gz" if compress else ""
    write_idx(tmp_path / f"img{suffix}", images, compress=compress)
    write_idx(tmp_path / f"lbl{suffix}", labels, compress=compress)
    got_images = D.read_idx(tmp_path / f"img{suffix}")
    got_labels = D.read_idx(str(tmp_path / f"lbl{suffix}"))
    assert got_images.dtype == torch.uint8 and got_images.shape == (3, 4, 5)
    assert torch.equal(got_images, torch.from_numpy(images))
    assert torch.equal(got_labels, torch.from_numpy(labels))


@pytest.mark.parametrize("code,dtype", [(0x09, torch.int8), (0x0B, torch.int16),
                                        (0x0C, torch.int32), (0x0D, torch.float32),
                                        (0x0E, torch.float64)])
def test_read_idx_other_dtypes_big_endian(tmp_path, code, dtype):
    values = np.array([[-3, 1], [2, 100]])
    write_idx(tmp_path / "x", values, code=code)
    got = D.read_idx(tmp_path / "x")
    assert got.dtype == dtype
    assert torch.equal(got, torch.tensor(values, dtype=dtype))


def test_read_idx_truncated(tmp_path):
    write_idx(tmp_path / "x", np.zeros((4, 3, 3), dtype=np.uint8))
    raw = (tmp_path / "x").read_bytes()
    (tmp_path / "x").write_bytes(raw[:-5])
    with pytest.raises(ValueError, match="truncated") as info:
        D.read_idx(tmp_path / "x")
    assert "x" in str(info.value)


def test_read_idx_truncated_gzip(tmp_path):
    write_idx(tmp_path / "x.gz", np.arange(1000, dtype=np.uint8) % 7, compress=True)
    raw = (tmp_path / "x.gz").read_bytes()
    (tmp_path / "x.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="x.gz"):
        D.read_idx(tmp_path / "x.gz")


def test_read_idx_trailing_bytes(tmp_path):
    write_idx(tmp_path / "x", np.zeros(6, dtype=np.uint8))
    (tmp_path / "x").write_bytes((tmp_path / "x").read_bytes() + b"\0")
    with pytest.raises(ValueError, match="size mismatch"):
        D.read_idx(tmp_path / "x")


def test_read_idx_bad_magic(tmp_path):
    (tmp_path / "x").write_bytes(b"\x12\x34\x08\x01" + struct.pack(">I", 2) + b"\0\0")
    with pytest.raises(ValueError, match="magic"):
        D.read_idx(tmp_path / "x")


def test_read_idx_bad_type_code(tmp_path):
    (tmp_path / "x").write_bytes(b"\0\0\x07\x01" + struct.pack(">I", 2) + b"\0\0")
    with pytest.raises(ValueError, match="type code 0x07"):
        D.read_idx(tmp_path / "x")


def test_read_idx_short_header(tmp_path):
    (tmp_path / "x").write_bytes(b"\0\0\x08\x03\0\0\0\x02")
    with pytest.raises(ValueError, match="header"):
        D.read_idx(tmp_path / "x")


# ---------------------------------------------------------------------------- load / find

def test_load_idx_dataset_shapes_and_split(tmp_path):
    write_dataset(tmp_path / "kmnist")
    s = D.load_idx_dataset("kmnist", tmp_path, val_fraction=0.2, seed=0)
    assert (len(s.train), len(s.val), len(s.test)) == (40, 10, 20)
    assert s.num_classes == 10 and s.input_shape == (1, 28, 28)
    x, y = s.train.tensors
    assert x.dtype == torch.float32 and x.shape == (40, 1, 28, 28) and y.dtype == torch.int64
    assert s.test.tensors[0].shape == (20, 1, 28, 28)


def test_load_idx_dataset_split_determinism(tmp_path):
    write_dataset(tmp_path)
    a = D.load_idx_dataset("x", tmp_path, val_fraction=0.2, seed=1)
    b = D.load_idx_dataset("x", tmp_path, val_fraction=0.2, seed=1)
    c = D.load_idx_dataset("x", tmp_path, val_fraction=0.2, seed=2)
    assert torch.equal(a.val.tensors[0], b.val.tensors[0])
    assert torch.equal(a.train.tensors[1], b.train.tensors[1])
    assert not torch.equal(a.val.tensors[0], c.val.tensors[0])
    # train + val together are a permutation of the training file
    raw_a = D.load_idx_dataset("x", tmp_path, val_fraction=0.2, seed=1, normalize=False)
    raw_c = D.load_idx_dataset("x", tmp_path, val_fraction=0.2, seed=2, normalize=False)
    labels_a = torch.cat([raw_a.train.tensors[1], raw_a.val.tensors[1]])
    labels_c = torch.cat([raw_c.train.tensors[1], raw_c.val.tensors[1]])
    assert torch.equal(labels_a.sort().values, labels_c.sort().values)
    assert not torch.equal(labels_a, labels_c)


def test_load_idx_dataset_normalisation_from_train_only(tmp_path):
    write_dataset(tmp_path)
    raw = D.load_idx_dataset("x", tmp_path, val_fraction=0.3, seed=0, normalize=False)
    x = raw.train.tensors[0]
    assert 0 <= x.min() and x.max() <= 1 and (raw.mean, raw.std) == (0.0, 1.0)
    norm = D.load_idx_dataset("x", tmp_path, val_fraction=0.3, seed=0)
    assert norm.mean == pytest.approx(x.mean().item()) and norm.std == pytest.approx(x.std().item())
    assert norm.train.tensors[0].mean().item() == pytest.approx(0, abs=1e-5)
    assert norm.train.tensors[0].std().item() == pytest.approx(1, abs=1e-5)
    expected_test = (raw.test.tensors[0] - norm.mean) / norm.std
    assert torch.allclose(norm.test.tensors[0], expected_test)
    # the val split's own statistics were not used
    assert abs(norm.val.tensors[0].mean().item()) > 1e-6


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, "0.1", True])
def test_load_idx_dataset_rejects_bad_fraction(tmp_path, fraction):
    write_dataset(tmp_path)
    with pytest.raises(ValueError, match="val_fraction"):
        D.load_idx_dataset("x", tmp_path, val_fraction=fraction)


def test_load_idx_dataset_no_validation(tmp_path):
    write_dataset(tmp_path)
    s = D.load_idx_dataset("x", tmp_path, val_fraction=0)
    assert (len(s.train), len(s.val)) == (50, 0)


def test_find_dataset_dir_env_var(tmp_path, monkeypatch):
    write_dataset(tmp_path / "kmnist")
    monkeypatch.setenv("SPARSEPRUNE_DATA", str(tmp_path))  # parent of <name>/
    assert D.find_dataset_dir("kmnist") == tmp_path / "kmnist"
    monkeypatch.setenv("SPARSEPRUNE_DATA", str(tmp_path / "kmnist"))  # the directory itself
    assert D.find_dataset_dir("kmnist") == tmp_path / "kmnist"


def test_find_dataset_dir_missing(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("SPARSEPRUNE_DATA", str(empty))
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as info:
        D.find_dataset_dir("kmnist", root=missing)
    message = str(info.value)
    assert str(missing) in message and str(empty) in message
    assert "/usr/share/datasets/kmnist" in message and "SPARSEPRUNE_DATA" in message


def test_find_dataset_dir_apt_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEPRUNE_DATA", str(tmp_path))
    monkeypatch.setattr(D, "SYSTEM_DATA_DIR", tmp_path / "system")  # hide the real install
    with pytest.raises(FileNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        D.find_dataset_dir("fashion-mnist", root=tmp_path / "nowhere")


# ----------------------------------------------------------------------------- synthetic

def test_synthetic_dataset_deterministic():
    a, b = D.synthetic_dataset(seed=3), D.synthetic_dataset(seed=3)
    c = D.synthetic_dataset(seed=4)
    for split in ("train", "val", "test"):
        assert all(torch.equal(u, v) for u, v in zip(getattr(a, split).tensors,
                                                     getattr(b, split).tensors))
    assert not torch.equal(a.train.tensors[0], c.train.tensors[0])
    assert a.train.tensors[0].shape == (512, 1, 28, 28) and a.test.tensors[1].dtype == torch.int64


def test_loader_is_seeded():
    s = D.synthetic_dataset(num_train=64, num_test=8)
    first = [y for _, y in D.loader(s.train, 16, shuffle=True, seed=5)]
    again = [y for _, y in D.loader(s.train, 16, shuffle=True, seed=5)]
    assert all(torch.equal(u, v) for u, v in zip(first, again)) and len(first) == 4
    ordered = torch.cat([y for _, y in D.loader(s.train, 10, shuffle=False)])
    assert torch.equal(ordered, s.train.tensors[1])


def test_synthetic_dataset_learnable():
    torch.manual_seed(0)
    s = D.synthetic_dataset(seed=0)
    model = LeNet300(s.input_shape, s.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(3):
        for x, y in D.loader(s.train, 64, shuffle=True):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    x, y = s.test.tensors
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.5


# -------------------------------------------------------------------------------- models

@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_models_forward(name, shape):
    torch.manual_seed(0)
    model = build_model(name, shape, 7).eval()
    with torch.no_grad():
        assert model(torch.randn(2, *shape)).shape == (2, 7)


@pytest.mark.parametrize("name", ["lenet300", "conv2"])
def test_models_convert_aslp(name):
    torch.manual_seed(0)
    model = sp.convert(build_model(name, (1, 28, 28), 10), "aslp")
    model(torch.randn(2, 1, 28, 28)).sum().backward()
    layers = [m for m in model.modules() if isinstance(m, sp.nn.MaskedLayer)]
    assert layers and all(m.scores.grad is not None for m in layers)
    assert all(m.weight.grad is None for m in layers)  # frozen by the method


def test_parameter_counts_match_methods_table():
    def weights(model):
        return sum(m.weight.numel() for m in model.modules()
                   if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)))
    assert weights(build_model("lenet300", (1, 28, 28), 10)) == 266_200
    assert weights(build_model("lenet5", (1, 28, 28), 10)) == 430_500
    assert weights(build_model("conv2", (3, 32, 32), 10)) == 4_300_992
    assert weights(build_model("conv4", (3, 32, 32), 10)) == 2_425_024
    assert weights(build_model("conv6", (3, 32, 32), 10)) == 2_261_184
    assert weights(build_model("conv6", (1, 28, 28), 10)) == 1_801_280


def test_build_model_rejects_unknown_name():
    with pytest.raises(ValueError, match="lenet300"):
        build_model("alexnet", (1, 28, 28), 10)


@pytest.mark.parametrize("shape,classes", [((28, 28), 10), ((1, 28, 28), 0), ((1, 2, 2), 10)])
def test_models_reject_bad_shapes(shape, classes):
    with pytest.raises(ValueError, match="input_shape|num_classes|height"):
        build_model("conv4", shape, classes)


def test_kaiming_normal_init():
    torch.manual_seed(0)
    model = kaiming_normal_(LeNet300())
    first = model.classifier[0]
    assert first.weight.std().item() == pytest.approx((2 / 784) ** 0.5, rel=0.02)
    assert first.bias.abs().max().item() <= 1 / 784 ** 0.5
    assert kaiming_normal_(model) is model


def test_demo_exits_2_without_data(tmp_path, monkeypatch, capsys):
    from sparseprune.runner import demo
    monkeypatch.setattr(D, "SYSTEM_DATA_DIR", tmp_path / "system")
    monkeypatch.setattr(demo, "_try_apt_install", lambda: False)
    monkeypatch.delenv("SPARSEPRUNE_DATA", raising=False)
    with pytest.raises(SystemExit) as info:
        demo.main(["--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
    assert info.value.code == 2
    assert "apt-get install -y dataset-fashion-mnist" in capsys.readouterr().err
