"""The `sparseprune` command end to end on the synthetic dataset: train, report, compare, info;
exact resume; bad input gets one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import csv
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

import sparseprune as sp
from sparseprune.runner import cli
from sparseprune.runner import data as D
from sparseprune.runner import training as train_module
from sparseprune.runner.models import build_model

ROOT = pathlib.Path(__file__).resolve().parents[2]
QUICK = ["--model", "lenet300", "--dataset", "synthetic", "--batch-size", "64", "--no-progress"]


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def losses(directory):
    with open(directory / "metrics.csv") as f:
        return [(row["epoch"], row["train_loss"], row["val_acc"], row["density"])
                for row in csv.DictReader(f)]


def test_train_report_compare(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    code, out, err = run(["train", "--method", "aslp", *QUICK, "--epochs", "2", "--out", a,
                          "--opt", "rescale=smart"], capsys)
    assert code == 0, err
    assert "epoch   2/2" in out and "test accuracy of the final subnetwork" in out
    for f in ("config.json", "metrics.csv", "final.json", "checkpoint.pt", "best.pt",
              "subnetwork.safetensors", "curves.png", "density.png", "scores.png"):
        assert (a / f).is_file(), f
    final = json.loads((a / "final.json").read_text())
    assert final["epochs_run"] == 2 and final["test_acc"] > 0.3  # 10 classes: chance is 0.1
    assert final["test_acc"] == final["masked_model_test_acc"]
    s = final["sparsity"]
    assert 0 < s["density"] < 1 and 0 < s["flop_density"] < 1
    assert [layer["total"] for layer in s["layers"]] == [784 * 300, 300 * 100, 100 * 10]
    assert s["kept"] == sum(layer["kept"] for layer in s["layers"])
    assert final["step_seconds_median"] > 0 and final["wall_seconds"] > 0
    config = json.loads((a / "config.json").read_text())
    assert config["options"] == {"rescale": "smart"} and config["method"] == "aslp"
    header = (a / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train_loss", "val_acc", "density", "temperature", "density/classifier.0",
            "lr/scores", "lr/scale"} <= set(header)
    # the finalized subnetwork has exactly the reported number of nonzero weights
    sub = sp.load(a / "subnetwork.safetensors")  # written by sp.save: no pickle
    assert sum(int(torch.count_nonzero(v)) for k, v in sub.items() if k.endswith("weight")) \
        <= s["kept"]
    plain = build_model("lenet300", (1, 28, 28), 10)
    plain.load_state_dict(sub)  # the loading habit works on the saved architecture

    code, out, err = run(["train", "--method", "aslp", *QUICK, "--epochs", "1", "--out", b,
                          "--density", "0.1"], capsys)
    assert code == 0, err
    assert json.loads((b / "final.json").read_text())["sparsity"]["density"] == \
        pytest.approx(0.1, abs=1e-5)

    code, out, err = run(["report", a], capsys)
    assert code == 0 and "| classifier.0 | 300x784 |" in out and "FLOPs" in out
    plot = tmp_path / "pareto.png"
    code, out, err = run(["compare", a, b, "--plot", plot, "--target-acc", "0.2"], capsys)
    assert code == 0, err
    lines = [ln for ln in out.splitlines() if ln.startswith("| ")]
    assert len(lines) == 3 and "aslp(rescale=smart)" in lines[1] and "0.1000" in lines[2]
    first = next(int(r["epoch"]) for r in csv.DictReader(open(a / "metrics.csv"))
                 if float(r["val_acc"]) >= 0.2)
    assert "epoch to val acc ≥ 20 %" in lines[0] and lines[1].split(" | ")[9] == str(first)
    assert plot.stat().st_size > 0


@pytest.mark.parametrize("method,flags,options", [
    ("supermask", ["--rescale", "dwr"], {"rescale": "dwr"}),
    ("edge_popup", ["--density", "0.3", "--weight-init", "signed_constant"],
     {"weight_init": "signed_constant"}),
    ("aslp", ["--signed-constant", "--rescale", "smart", "--temperature", "2"],
     {"signed_constant": True, "rescale": "smart", "temperature": 2}),
])
def test_every_method_end_to_end_with_option_flags(method, flags, options, tmp_path, capsys):
    """Each registered method trains, reports and compares through the CLI; its options come
    as their own flags."""
    out = tmp_path / method
    code, stdout, err = run(["train", "--method", method, *QUICK, "--epochs", "2", *flags,
                             "--out", out], capsys)
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == method and config["options"] == options
    final = json.loads((out / "final.json").read_text())
    assert final["test_acc"] > 0.3 and final["test_acc"] == final["masked_model_test_acc"]
    s = final["sparsity"]
    assert s["kept"] == sum(layer["kept"] for layer in s["layers"])
    if method == "edge_popup":  # the method keeps round(density * numel) per layer
        assert config["density"] == 0.3 and final["imposed_density"] is None
        assert [layer["kept"] for layer in s["layers"]] == \
            [round(0.3 * layer["total"]) for layer in s["layers"]]
    else:
        assert 0 < s["density"] < 1
    sub = sp.load(out / "subnetwork.safetensors")
    assert sum(int(torch.count_nonzero(v)) for k, v in sub.items() if k.endswith("weight")) \
        <= s["kept"]
    code, stdout, err = run(["report", out], capsys)
    assert code == 0 and "test accuracy of the final subnetwork" in stdout
    code, stdout, err = run(["compare", out, "--plot", tmp_path / "p.png"], capsys)
    assert code == 0 and method in stdout


def test_steps_per_epoch_caps_each_epoch(tmp_path, capsys):
    out = tmp_path / "short"
    code, stdout, err = run(["train", "--method", "aslp", *QUICK, "--epochs", "3",
                             "--steps-per-epoch", "2", "--out", out], capsys)
    assert code == 0, err
    final = json.loads((out / "final.json").read_text())
    assert final["steps"] == 6 and final["epochs_run"] == 3
    assert json.loads((out / "config.json").read_text())["steps_per_epoch"] == 2
    code, stdout, err = run(["train", "--method", "aslp", *QUICK, "--steps-per-epoch", "0",
                             "--out", tmp_path / "bad"], capsys)
    assert code == 2 and "--steps-per-epoch must be an int >= 1, got 0" in err


def test_option_flags_come_from_the_registry(capsys):
    from sparseprune.runner import methods as M

    options = M.option_defaults()
    assert options["rescale"] == {"aslp": None, "supermask": None}
    assert options["density"] == {"edge_popup": 0.5, "magnitude": None}
    assert options["signed_constant"] == {"aslp": False, "supermask": False}
    parser = cli.build_parser()
    args = parser.parse_args(["train", "--method", "aslp", "--rescale", "none",
                              "--no-signed-constant", "--init-logit", "0.5"])
    assert cli.method_options(args) == {"rescale": None, "signed_constant": False,
                                        "init_logit": 0.5}
    assert cli.method_options(parser.parse_args(["train"])) == {}
    code, out, err = run(["train", "--help"], capsys)
    assert code == 0
    for flag in ("--rescale", "--temperature", "--signed-constant", "--weight-init",
                 "--scale-fan", "--density"):
        assert flag in out, flag
    listed = out[out.index("pruning method:"):].split()
    for name in ("aslp", "edge_popup", "supermask", "snip", "synflow"):
        assert f"{name}," in listed or name in listed, name
    assert "fixed," not in listed and "fixed" not in listed


def check_resume_is_exact(args, tmp_path, capsys, monkeypatch, stop_before):
    """Train ``args`` once whole and once with Ctrl-C before epoch ``stop_before`` then
    ``--resume``: the metrics and final checkpoints must be identical. Returns (whole, cut)."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert run([*args, "--out", whole], capsys)[0] == 0

    real = train_module.train_epoch

    def interrupted(s, epoch, progress):
        if epoch == stop_before:
            raise KeyboardInterrupt
        return real(s, epoch, progress)

    monkeypatch.setattr(train_module, "train_epoch", interrupted)
    code, out, err = run([*args, "--out", cut], capsys)
    assert code == 130 and f"--resume {cut}" in err
    assert len(losses(cut)) == stop_before - 1 and not (cut / "final.json").exists()
    monkeypatch.setattr(train_module, "train_epoch", real)
    code, out, err = run(["train", "--resume", cut, "--no-progress"], capsys)
    assert code == 0, err
    assert losses(cut) == losses(whole)  # bit-identical text of every epoch's numbers
    a = torch.load(whole / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(cut / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    return whole, cut


def test_resume_after_interrupt_gives_identical_losses(tmp_path, capsys, monkeypatch):
    args = ["train", "--method", "aslp", *QUICK, "--epochs", "3", "--opt", "rescale=smart"]
    whole, cut = check_resume_is_exact(args, tmp_path, capsys, monkeypatch, stop_before=3)
    # a finished run continues with more epochs
    code, out, err = run(["train", "--resume", cut, "--epochs", "4", "--no-progress"], capsys)
    assert code == 0, err
    assert [row[0] for row in losses(cut)] == ["1", "2", "3", "4"]
    assert losses(cut)[:3] == losses(whole)
    assert json.loads((cut / "config.json").read_text())["epochs"] == 4
    assert json.loads((cut / "final.json").read_text())["epochs_run"] == 4


def test_info(capsys):
    code, out, err = run(["info"], capsys)
    assert code == 0
    assert "aslp" in out and "scores 50" in out and "conv4" in out and "cifar100" in out
    assert "supermask" in out and "edge_popup" in out and "density=0.5" in out


def write_idx(path, array):
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(bytes([0, 0, 0x08, array.ndim]) + dims + array.astype(np.uint8).tobytes())


@pytest.fixture
def corrupt_data(tmp_path):
    d = tmp_path / "data" / "mnist"
    d.mkdir(parents=True)
    for split, n in (("train", 20), ("t10k", 10)):
        write_idx(d / f"{split}-images-idx3-ubyte", np.zeros((n, 28, 28)))
        write_idx(d / f"{split}-labels-idx1-ubyte", np.arange(n) % 10)
    raw = (d / "train-images-idx3-ubyte").read_bytes()
    (d / "train-images-idx3-ubyte").write_bytes(raw[:-100])  # truncated
    return tmp_path / "data"


BAD = [
    (["--method", "nope", "--model", "lenet300", "--dataset", "synthetic"],
     "unknown method 'nope'; available: "),
    (["--method", "aslp", "--model", "alexnet", "--dataset", "synthetic"],
     "unknown model 'alexnet'; valid: lenet300"),
    (["--method", "aslp", "--model", "lenet300", "--dataset", "imagenet"],
     "unknown dataset 'imagenet'; valid: fashion-mnist"),
    (["--method", "aslp", "--model", "lenet300", "--dataset", "mnist", "--data-dir",
      "/nonexistent/sparseprune-data"], "'/nonexistent/sparseprune-data' does not exist"),
    (["--method", "aslp", "--model", "lenet300", "--dataset", "synthetic", "--density", "0"],
     r"--density must be a number in (0, 1], got 0.0"),
    (["--method", "aslp", "--model", "lenet300", "--dataset", "synthetic", "--density", "1.5"],
     "got 1.5"),
    (["--method", "aslp", "--model", "lenet300", "--dataset", "synthetic", "--density", "nan"],
     "got nan"),
    (["--method", "aslp", "--model", "lenet300", "--dataset", "synthetic", "--density", "abc"],
     "expected a number, got 'abc'"),
    (["--method", "aslp", "--model", "lenet300", "--dataset", "synthetic", "--opt", "tau=2"],
     "unknown option(s) 'tau' for method 'aslp'"),
    (["--model", "lenet300", "--dataset", "synthetic"], "train needs --method"),
    (["--method", "supermask", "--model", "lenet300", "--dataset", "synthetic", "--temperature",
      "2"], "unknown option(s) 'temperature' for method 'supermask'"),
    (["--method", "aslp", "--model", "lenet300", "--dataset", "synthetic", "--rescale", "max"],
     "--method aslp: rescale must be one of"),
    (["--method", "aslp", "--model", "lenet300", "--dataset", "synthetic", "--rescale", "smart",
      "--opt", "rescale=dwr"], "option rescale given twice"),
    (["--method", "edge_popup", "--model", "lenet300", "--dataset", "synthetic", "--density",
      "2"], "--density must be a number in (0, 1]"),
]


@pytest.mark.parametrize("argv,message", BAD, ids=[m[:30] for _, m in BAD])
def test_bad_input_one_line_exit_2(argv, message, capsys, tmp_path):
    code, out, err = run(["train", *argv, "--out", tmp_path / "run"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err and not (tmp_path / "run" / "checkpoint.pt").exists()


def test_corrupt_idx_file(corrupt_data, capsys, tmp_path):
    code, out, err = run(["train", "--method", "aslp", "--model", "lenet300", "--dataset", "mnist",
                          "--data-dir", corrupt_data, "--out", tmp_path / "run"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert "train-images-idx3-ubyte: size mismatch (truncated)" in lines[0]


def test_missing_dataset_and_existing_run(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(D, "SYSTEM_DATA_DIR", tmp_path / "system")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("SPARSEPRUNE_DATA", raising=False)
    (tmp_path / "empty").mkdir()
    code, out, err = run(["train", "--method", "aslp", "--model", "lenet300", "--dataset", "kmnist",
                          "--data-dir", tmp_path / "empty", "--out", tmp_path / "r"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "dataset 'kmnist' not found" in err and "--download" in err
    (tmp_path / "r2").mkdir()
    (tmp_path / "r2" / "config.json").write_text("{}")
    code, out, err = run(["train", "--method", "aslp", *QUICK, "--out", tmp_path / "r2"], capsys)
    assert code == 2 and "already holds a run" in err and "--overwrite" in err
    code, out, err = run(["train", "--resume", tmp_path / "r2", "--seed", "3"], capsys)
    assert code == 2 and "drop --seed" in err
    code, out, err = run(["train", "--resume", tmp_path / "r2", "--rescale", "dwr"], capsys)
    assert code == 2 and "drop --rescale" in err
    code, out, err = run(["report", tmp_path / "empty"], capsys)
    assert code == 2 and "not a run directory" in err


def test_subprocess_bad_input_has_no_traceback(tmp_path):
    """The real entry point, `python -m sparseprune`, in its own process: one line, status 2."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "sparseprune", "train", "--method", "nope",
                           "--model", "lenet300", "--dataset", "synthetic"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert "\n" not in line and "aslp" in line
    assert line.startswith("sparseprune train: error: --method: unknown method 'nope'; available:")
    assert proc.stdout == ""


@pytest.mark.parametrize("method", ["snip", "synflow"])
def test_train_prune_at_init(tmp_path, capsys, method):
    # A pruning-at-init method runs through the same CLI: exact kept count, fixed mask.
    out_dir = tmp_path / method
    code, out, err = run(["train", "--method", method, "--density", "0.1", *QUICK,
                          "--epochs", "1", "--out", out_dir], capsys)
    assert code == 0, err
    s = json.loads((out_dir / "final.json").read_text())["sparsity"]
    assert s["kept"] == round(0.1 * 266_200)
    assert (out_dir / "scores.png").is_file()
