"""The experiment runner's parts: FLOP/sparsity counting against hand counts, CIFAR archives,
downloads (mocked), augmentation, option parsing, learning-rate defaults, the method adapters."""

from __future__ import annotations

import io
import pickle
import tarfile
import urllib.error

import numpy as np
import pytest
import torch
from torch import nn

import sparseprune as sp
from sparseprune.runner.data import cifar as _cifar, download as _download
from sparseprune.runner import data as D
from sparseprune.runner.data.augment import Augment
from sparseprune.runner import config as C
from sparseprune.runner import methods as M
from sparseprune.runner.metrics import converged_epoch, pareto_front
from sparseprune.runner.optim import build_optimizer, learning_rates


# ------------------------------------------------------------------ sparsity: hand counts

def constructed_model() -> nn.Sequential:
    """Input (1, 8, 8). conv1 3x3 pad 1 -> (2, 8, 8): 18 weights x 64 positions; pool -> (2, 4, 4);
    conv2 3x3 -> (4, 2, 2): 72 weights x 4 positions; flatten 16 -> linear 3: 48 weights x 1."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(2, 4, 3), nn.Flatten(), nn.Linear(16, 3))
    with torch.no_grad():
        for m in (model[0], model[3], model[5]):
            m.weight.copy_(torch.rand_like(m.weight) + 0.1)  # no accidental zeros
        model[0].weight.view(-1)[:8] = 0      # conv1 keeps 10 of 18
        model[3].weight.view(-1)[18:] = 0     # conv2 keeps 18 of 72
    return model                              # linear keeps 48 of 48


HAND = {"0": (10, 18, 64), "3": (18, 72, 4), "5": (48, 48, 1)}  # kept, total, positions


def check_hand_counts(report: sp.Report) -> None:
    rows = {r.name: r for r in report.layers}
    assert set(rows) == set(HAND)
    for name, (kept, total, positions) in HAND.items():
        assert (rows[name].kept, rows[name].total) == (kept, total)
        assert rows[name].flops_kept == 2 * kept * positions
        assert rows[name].flops_total == 2 * total * positions
        assert rows[name].flop_density == pytest.approx(kept / total)
    assert (report.kept, report.total) == (76, 138)
    assert report.density == 76 / 138
    # 2 * (10*64 + 18*4 + 48) and 2 * (18*64 + 72*4 + 48)
    assert (report.flops_kept, report.flops_total) == (1520, 2976)
    assert report.flop_density == 1520 / 2976


def test_report_flops_hand_counts_plain_layers():
    check_hand_counts(sp.sparsity_report(constructed_model(), input_shape=(1, 8, 8)))


def test_report_flops_hand_counts_masked_layers():
    model = constructed_model()
    keep = {name: m.weight != 0 for name, m in model.named_modules()
            if isinstance(m, (nn.Linear, nn.Conv2d))}
    sp.convert(model, "aslp")
    with torch.no_grad():
        for name, layer in sp.masked_layers(model):
            layer.scores.copy_(torch.where(keep[name], 2.0, -2.0))
    model.train()
    state = torch.get_rng_state()
    report = sp.sparsity_report(model, input_shape=(1, 8, 8))
    check_hand_counts(report)
    assert torch.equal(torch.get_rng_state(), state) and model.training  # no side effects
    d = report.to_dict()
    assert d["flops_kept"] == 1520 and d["layers"][0]["flops_total"] == 2 * 18 * 64
    assert "FLOP density" in str(report)


def test_report_without_input_shape_has_no_flops():
    report = sp.sparsity_report(constructed_model())
    assert report.flop_density is None and "flops_kept" not in report.to_dict()
    assert "FLOP" not in str(report)


def test_report_flops_shared_layer_counts_every_call():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(self.fc(x))

    report = sp.sparsity_report(Twice(), input_shape=(4,))
    assert report.layers[0].flops_total == 2 * 16 * 2


def test_report_flops_bad_input_shape():
    with pytest.raises(ValueError, match="input_shape"):
        sp.sparsity_report(constructed_model(), input_shape=(1, 0, 8))
    with pytest.raises(ValueError, match="fails on input_shape"):
        sp.sparsity_report(constructed_model(), input_shape=(3, 8, 8))


# ------------------------------------------------------------------------------ CIFAR

def write_cifar(root, name="cifar10", n=6, archive=False, seed=0):
    layout = _cifar.LAYOUTS[name]
    rng = np.random.default_rng(seed)
    files = {}
    for f in layout.train + layout.test:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, layout.num_classes, n)]
        files[f] = (data, labels, pickle.dumps({b"data": data, layout.label_key: labels}))
    if archive:
        root.mkdir(parents=True, exist_ok=True)
        with tarfile.open(root / layout.archive, "w:gz") as tar:
            for f, (_, _, raw) in files.items():
                info = tarfile.TarInfo(f"{layout.folder}/{f}")
                info.size = len(raw)
                tar.addfile(info, io.BytesIO(raw))
    else:
        folder = root / layout.folder
        folder.mkdir(parents=True, exist_ok=True)
        for f, (_, _, raw) in files.items():
            (folder / f).write_bytes(raw)
    return files


@pytest.mark.parametrize("archive", [False, True])
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_reads_folder_and_archive(tmp_path, archive, name):
    files = write_cifar(tmp_path / name, name, archive=archive)
    layout = _cifar.LAYOUTS[name]
    where = _cifar.locate(name, [tmp_path / name])
    assert where is not None and where.is_file() == archive
    train_x, train_y, test_x, test_y = _cifar.read_cifar(name, where)
    expect = np.concatenate([files[f][0] for f in layout.train]).reshape(-1, 3, 32, 32)
    assert torch.equal(train_x, torch.from_numpy(expect))
    assert train_y.tolist() == sum((files[f][1] for f in layout.train), [])
    assert test_x.shape == (len(layout.test) * 6, 3, 32, 32)
    splits = D.load_dataset(name, tmp_path, val_fraction=0.2, seed=1)
    assert splits.num_classes == layout.num_classes and splits.input_shape == (3, 32, 32)
    assert len(splits.mean) == 3 and len(splits.train) + len(splits.val) == len(train_y)
    again = D.load_dataset(name, tmp_path, val_fraction=0.2, seed=1)
    assert torch.equal(splits.val.tensors[0], again.val.tensors[0])
    x = splits.train.tensors[0]
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)


def test_cifar_rejects_foreign_pickle(tmp_path):
    write_cifar(tmp_path, "cifar10")
    evil = b"cos\nsystem\n(S'echo hacked'\ntR."
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(evil)
    with pytest.raises(ValueError, match="os.system is not allowed"):
        D.load_dataset("cifar10", tmp_path)


# ---------------------------------------------------------------------------- download

class FakeResponse(io.BytesIO):
    headers = {"Content-Length": "5"}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_without_network_fails_clearly(tmp_path, monkeypatch):
    def offline(url, timeout):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(_download.urllib.request, "urlopen", offline)
    monkeypatch.setattr(D, "SYSTEM_DATA_DIR", tmp_path / "system")
    monkeypatch.delenv("SPARSEPRUNE_DATA", raising=False)
    with pytest.raises(_download.DownloadError, match=r"cannot download http://yann.lecun.com/"
                       r"exdb/mnist/train-images-idx3-ubyte.gz: .*name resolution"):
        D.load_dataset("mnist", tmp_path, download=True, progress=False)
    assert not any((tmp_path / "mnist").glob("*"))  # no partial files left
    with pytest.raises(FileNotFoundError, match="download"):  # without download: the hint
        D.load_dataset("mnist", tmp_path)


def test_download_checks_md5(tmp_path, monkeypatch):
    payload = b"hello"
    monkeypatch.setattr(_download.urllib.request, "urlopen",
                        lambda url, timeout: FakeResponse(payload))
    good = _download.Source("http://example.invalid/", {"a.bin": "5d41402abc4b2a76b9719d911017c592"}, "")
    bad = _download.Source("http://example.invalid/", {"b.bin": "0" * 32}, "")
    _download.download("x", tmp_path, progress=False, sources={"x": good})
    assert (tmp_path / "a.bin").read_bytes() == payload
    with pytest.raises(_download.DownloadError, match="MD5 mismatch"):
        _download.download("y", tmp_path, progress=False, sources={"y": bad})
    assert not (tmp_path / "b.bin").exists() and not (tmp_path / "b.bin.part").exists()


def test_download_sources_cover_the_real_datasets():
    assert set(_download.SOURCES) == {n for n, i in D.DATASETS.items() if i.kind != "synthetic"}
    for source in _download.SOURCES.values():
        assert all(len(md5) == 32 for md5 in source.files.values())


def test_load_dataset_rejects_unknown_name_and_missing_dir(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'.*fashion-mnist"):
        D.load_dataset("imagenet")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        D.load_dataset("mnist", tmp_path / "nowhere")


# ---------------------------------------------------------------------------- augment

def test_augment_translates_flips_and_is_seeded():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).view(2, 3, 5, 5)
    aug = Augment(pad=2, flip=True, fill=(-1.0, -2.0, -3.0))
    a = aug(x, torch.Generator().manual_seed(0))
    b = aug(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape
    # every output is a shifted (and maybe flipped) window of the input padded with the fill
    for n in range(2):
        ok = False
        padded = torch.nn.functional.pad(x[n] + torch.tensor([1.0, 2, 3]).view(3, 1, 1),
                                         (2, 2, 2, 2)) - torch.tensor([1.0, 2, 3]).view(3, 1, 1)
        for dy in range(5):
            for dx in range(5):
                window = padded[:, dy:dy + 5, dx:dx + 5]
                ok |= torch.equal(a[n], window) or torch.equal(a[n], window.flip(-1))
        assert ok
    assert torch.equal(Augment(pad=0, flip=False)(x, torch.Generator()), x)
    with pytest.raises(ValueError, match="pad"):
        Augment(pad=-1)


# ------------------------------------------------------------------- options and defaults

def test_parse_pairs():
    got = C.parse_pairs(["temperature=0.5", "rescale=smart", "signed_constant=true", "n=3",
                         "x=none"], "--opt")
    assert got == {"temperature": 0.5, "rescale": "smart", "signed_constant": True, "n": 3,
                   "x": None}
    for bad in (["noequals"], ["=1"], ["a=1", "a=2"]):
        with pytest.raises(C.ConfigError, match="--opt"):
            C.parse_pairs(bad, "--opt")


def test_mask_options_are_validated_by_methods_create():
    assert M.mask_options("aslp", {"rescale": "smart", "temperature": 1}, None)[0] == \
        {"rescale": "smart", "temperature": 1.0}
    assert M.mask_options("aslp", {"scores_dtype": "bfloat16"}, 0.5)[0] == \
        {"scores_dtype": torch.bfloat16}  # aslp takes no density option
    with pytest.raises(C.ConfigError, match="unknown option.*'temprature'.*valid options"):
        M.check("aslp", {"temprature": 0.5}, None)
    with pytest.raises(C.ConfigError, match="rescale must be one of"):
        M.check("aslp", {"rescale": "dwr2"}, None)
    with pytest.raises(C.ConfigError, match="not a torch dtype"):
        M.check("aslp", {"scores_dtype": "float99"}, None)
    with pytest.raises(C.ConfigError, match="unknown method 'nope'; available: .*aslp"):
        M.check("nope", {}, None)


def test_learning_rates_defaults_and_overrides():
    cfg = C.RunConfig(method="aslp", model="lenet300", dataset="synthetic")
    assert learning_rates(cfg, ["scores", "scale"]) == {"scores": 50.0, "scale": 1e-3}
    cfg.lr, cfg.group_lr = 10.0, {"scale": 0.01}
    assert learning_rates(cfg, ["scores", "scale"]) == {"scores": 10.0, "scale": 0.01}
    cfg.group_lr = {"bogus": 1.0}
    with pytest.raises(C.ConfigError, match="--group-lr: no parameter group bogus"):
        learning_rates(cfg, ["scores"])
    model = sp.convert(nn.Sequential(nn.Linear(4, 3)), "aslp", rescale="smart")
    opt, sched, groups = build_optimizer(model, C.RunConfig("aslp", "lenet300", "synthetic"))
    assert groups == ["scores", "scale"] and sched is None
    assert [g["lr"] for g in opt.param_groups] == [50.0, 1e-3]
    assert opt.param_groups[0]["momentum"] == 0.9


def test_prune_at_init_adapter(monkeypatch):
    calls = {}

    def fake_prune_at_init(model, method, *, density, data=None, loss_fn=None, scope="global",
                           iterations=1, generator=None):
        calls.update(method=method, density=density, scope=scope, iterations=iterations,
                     batch=next(iter(data))[0].shape)
        return sp.convert(model, "aslp")

    monkeypatch.setattr(sp, "prune_at_init", fake_prune_at_init, raising=False)
    assert M.available()["snip"] == "prune_at_init" and M.available()["aslp"] == "mask"
    with pytest.raises(C.ConfigError, match="needs --density"):
        M.check("snip", {}, None)
    with pytest.raises(C.ConfigError, match="unknown option.*'bogus'.*scope, iterations"):
        M.check("snip", {"bogus": 1}, 0.1)
    with pytest.raises(C.ConfigError, match="cannot be set with --opt"):
        M.check("snip", {"density": 0.2}, 0.1)
    M.check("snip", {"iterations": 3}, 0.1)
    data = [(torch.randn(2, 4), torch.tensor([0, 1]))]
    M.apply(nn.Sequential(nn.Linear(4, 2)), "snip", {"iterations": 3}, density=0.1, data=data)
    assert calls == {"method": "snip", "density": 0.1, "scope": "global", "iterations": 3,
                     "batch": (2, 4)}


def test_config_validation_messages():
    ok = dict(method="aslp", model="lenet300", dataset="synthetic")
    for change, pattern in [({"model": "alexnet"}, "--model: unknown model 'alexnet'"),
                            ({"dataset": "imagenet"}, "--dataset: unknown dataset"),
                            ({"density": 0.0}, r"--density must be a number in \(0, 1\]"),
                            ({"density": 1.5}, "got 1.5"), ({"epochs": 0}, "--epochs"),
                            ({"val_fraction": 1.0}, "--val-fraction"),
                            ({"patience": 2, "val_fraction": 0.0, "dataset": "mnist"},
                             "--patience needs a validation split")]:
        with pytest.raises(C.ConfigError, match=pattern):
            C.validate(C.RunConfig(**{**ok, **change}))


def test_metrics_helpers():
    history = [{"epoch": 1, "val_acc": 0.5}, {"epoch": 2, "val_acc": 0.795},
               {"epoch": 3, "val_acc": 0.8}]
    assert converged_epoch(history) == 2
    assert pareto_front([(0.5, 0.9), (0.3, 0.9), (0.2, 0.8), (0.6, 0.7)]) == [2, 1]


def test_progress_bar_shows_loss_accuracy_density(tmp_path, capsys):
    from sparseprune.runner.training import build, train_epoch
    session = build(C.RunConfig("aslp", "lenet300", "synthetic", batch_size=64), tmp_path)
    out = train_epoch(session, 1, progress=True)
    err = capsys.readouterr().err
    assert "epoch 1/10" in err and "loss=" in err and "acc=" in err and "density=0.5" in err
    assert out["train_loss"] > 0 and len(session.state.step_seconds) == 8  # 512 / 64 steps


def test_step_times_runs_the_three_code_paths():
    """The demo's timing table: fused kernels, the seed paper's code path, dense."""
    from sparseprune.runner.models import build_model
    from sparseprune.runner import timing

    torch.manual_seed(0)
    model = sp.convert(build_model("lenet300", (1, 28, 28), 10), "aslp", rescale="smart")
    dense = build_model("lenet300", (1, 28, 28), 10)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    times = timing.step_times(model, dense, x, y, lrs={"scores": 50.0, "scale": 1e-3},
                              repeats=1, warmup=0)
    assert set(times) == {timing.FUSED, timing.PAPER, timing.DENSE}
    assert all(t > 0 for t in times.values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # copied
    assert "x fused" in timing.timing_table(times, 8)
