"""`sparseprune oneshot`: a dense run's weights pruned in one shot on the synthetic dataset, the run
directory, `report` on it, MiniLM on the fortunes corpus, and bad input (exit status 2)."""

from __future__ import annotations

import json

import pytest
import torch

import sparseprune as sp
from sparseprune.runner import cli, minilm
from sparseprune.runner import data as D
from sparseprune.runner.models import build_model
from sparseprune.runner.training import evaluate
from sparseprune.select import is_nm

QUICK = ["--model", "lenet300", "--dataset", "synthetic", "--no-progress"]


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_oneshot_of_a_dense_run(tmp_path, capsys):
    dense = tmp_path / "dense"
    code, _, err = run(["train", "--method", "magnitude_init", "--density", "1", *QUICK,
                        "--epochs", "2", "--batch-size", "64", "--out", dense], capsys)
    assert code == 0, err
    out = tmp_path / "sgpt"
    code, text, err = run(["oneshot", "--method", "sparsegpt", "--pattern", "2:4", *QUICK,
                           "--weights", dense, "--calibration", "100", "--batch-size", "32",
                           "--out", out], capsys)
    assert code == 0, err
    assert "sparsegpt one-shot, 2:4" in text and "classifier.0" in text
    for f in ("config.json", "final.json", "subnetwork.safetensors", "oneshot.txt",
              "density.png"):
        assert (out / f).is_file(), f
    final = json.loads((out / "final.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "oneshot" and config["pattern"] == "2:4"
    assert final["sparsity"]["density"] == 0.5 and final["calibration_samples"] == 100
    assert final["dense_test_acc"] > 0.5 and final["test_acc"] > 0.5
    layers = final["oneshot"]["layers"]
    assert [r["tokens"] for r in layers] == [100] * 3 and all(0 < r["error"] < 1 for r in layers)
    # the saved subnetwork is the finalized model: 2:4 weights, the reported accuracy
    splits = D.load_dataset("synthetic")
    model = sp.load(out / "subnetwork.safetensors", build_model("lenet300", (1, 28, 28), 10))
    assert is_nm(model.classifier[0].weight != 0, 2, 4)
    assert evaluate(model, splits.test)[0] == final["test_acc"]
    code, text, _ = run(["report", out], capsys)
    assert code == 0 and "test accuracy" in text and "classifier.4" in text
    # one pass, Wanda, per layer, weights from a torch.save state dict: another run directory,
    # refused without --overwrite
    torch.save(sp.load(dense / "subnetwork.safetensors"), tmp_path / "dense.pt")
    args = ["oneshot", "--method", "wanda", "--density", "0.3", "--group", "layer",
            "--one-pass", *QUICK, "--weights", tmp_path / "dense.pt", "--out", out]
    code, _, err = run(args, capsys)
    assert code == 2 and "already holds a run" in err
    code, _, err = run(args + ["--overwrite"], capsys)
    assert code == 0, err
    final = json.loads((out / "final.json").read_text())
    assert final["sparsity"]["kept"] == round(0.3 * 784 * 300) + round(0.3 * 300 * 100) \
        + round(0.3 * 100 * 10) and final["oneshot"]["sequential"] is False


@pytest.mark.parametrize("argv, message", [
    (["--method", "wanda", *QUICK], "give exactly one of --density"),
    (["--method", "obs", "--density", "0.5", *QUICK], "--method must be one of"),
    (["--method", "wanda", "--density", "0.5", "--model", "lenet300"], "--dataset: missing"),
    (["--method", "wanda", "--density", "0.5", *QUICK, "--weights", "/nonexistent"],
     "no such file"),
    (["--method", "wanda", "--pattern", "2:3", *QUICK], "multiple of 3"),
    (["--method", "wanda", "--density", "0.5", "--model", "minilm", "--dataset", "mnist"],
     "drop --dataset"),
])
def test_bad_input_is_one_line_and_status_2(argv, message, capsys, tmp_path):
    code, _, err = run(["oneshot", *argv, "--out", tmp_path / "x"], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.skipif(minilm.available() is not None, reason=str(minilm.available()))
def test_oneshot_minilm(tmp_path, capsys):
    out = tmp_path / "minilm"
    code, text, err = run(["oneshot", "--method", "magnitude", "--pattern", "2:4", "--model",
                           "minilm", "--calibration", "4", "--heldout", "8", "--batch-size", "4",
                           "--no-progress", "--out", out], capsys)
    if code == 2 and "fortunes" in err:
        pytest.skip(err)
    assert code == 0, err
    final = json.loads((out / "final.json").read_text())
    assert 0.2 < final["teacher_cosine"] < 1 and final["heldout_sentences"] == 8
    assert len(final["oneshot"]["layers"]) == 36 and "teacher cosine" in text
