"""The runner with the weight-training methods: pruning rounds (lottery, magnitude), the budgets
toward --density (the constrained default and the penalty of --budget-strength), and their CLI
names, on the synthetic dataset."""

from __future__ import annotations

import json

import pytest
import torch

from test_cli import QUICK, check_resume_is_exact, losses, run


def final(directory):
    return json.loads((directory / "final.json").read_text())


def test_lottery_rounds_through_the_cli(tmp_path, capsys):
    out = tmp_path / "lth"
    code, stdout, err = run(["train", "--method", "lottery", *QUICK, "--epochs", "1",
                             "--rounds", "2", "--output-rate", "0.5", "--out", out], capsys)
    assert code == 0, err
    assert "pruning round 1/2" in stdout and "pruning round 2/2" in stdout
    assert [row[0] for row in losses(out)] == ["1", "2", "3"]  # rounds 0, 1, 2
    f = final(out)
    assert f["epochs_configured"] == 3 and f["selected_epoch"] == 3  # best of the last round
    kept = {layer["name"]: layer["kept"] for layer in f["sparsity"]["layers"]}
    assert kept == {"classifier.0": round(235_200 * 0.8 ** 2), "classifier.2": round(30_000 * 0.8 ** 2),
                    "classifier.4": round(1_000 * 0.5 ** 2)}
    assert f["test_acc"] == f["masked_model_test_acc"]


def test_lottery_resume_mid_schedule_gives_identical_losses(tmp_path, capsys, monkeypatch):
    args = ["train", "--method", "lottery", *QUICK, "--epochs", "1", "--rounds", "2",
            "--rewind-step", "2"]
    check_resume_is_exact(args, tmp_path, capsys, monkeypatch, stop_before=3)


def test_magnitude_density_rounds_and_magnitude_at_init(tmp_path, capsys):
    code, stdout, err = run(["train", "--method", "magnitude", *QUICK, "--epochs", "1",
                             "--rounds", "2", "--density", "0.1", "--out", tmp_path / "han"],
                            capsys)
    assert code == 0, err
    assert final(tmp_path / "han")["sparsity"]["kept"] == round(0.1 * 266_200)
    # Magnitude pruning at initialisation keeps its place under another CLI name.
    code, stdout, err = run(["train", "--method", "magnitude_init", *QUICK, "--epochs", "1",
                             "--density", "0.1", "--out", tmp_path / "init"], capsys)
    assert code == 0, err
    assert final(tmp_path / "init")["sparsity"]["kept"] == round(0.1 * 266_200)


@pytest.mark.parametrize("method", ["reparam", "hard_concrete"])
def test_budget_loss_drives_learned_density(method, tmp_path, capsys):
    """With --density, the learned-density methods train with the budget term: the expected
    density moves toward the target, and the final top-k keeps it exactly."""
    runs = {}
    for strength in ("0", "1"):
        out = tmp_path / f"{method}-{strength}"
        code, stdout, err = run(["train", "--method", method, *QUICK, "--epochs", "2",
                                 "--density", "0.2", "--budget-strength", strength,
                                 "--out", out], capsys)
        assert code == 0, err
        runs[strength] = out
        assert final(out)["sparsity"]["kept"] == round(0.2 * 266_200)
    with_budget = [row[1] for row in losses(runs["1"])]
    without = [row[1] for row in losses(runs["0"])]
    assert with_budget != without  # the budget term changed the training


@pytest.mark.parametrize("method,batch", [("aslp", 64), ("reparam", 16)])
def test_constrained_budget_is_the_default_and_resumes_exactly(method, batch, tmp_path, capsys,
                                                               monkeypatch):
    """--density alone trains with sp.budget.Budget over the run's steps: the schedule reaches
    the target after 80 % of them (the final model is selected after it), the masks commit, and
    a run cut in its commit phase resumes with the same multipliers and step (identical losses).
    Reparam moves its density through t (Adam, lr 1 a step from t = 100): it needs more steps."""
    args = ["train", "--method", method, *QUICK, "--batch-size", str(batch), "--epochs", "10",
            "--density", "0.2"]
    whole, cut = check_resume_is_exact(args, tmp_path, capsys, monkeypatch, stop_before=10)
    f = final(whole)
    d = f["densities"]
    assert d["target"] == 0.2 and d["exact"] == pytest.approx(0.2, abs=1e-5)
    assert d["rule"] == pytest.approx(0.2, rel=0.1) and d["changed"] <= 0.02
    assert 0 < d["rule_test_acc"] <= 1 and d["expected"] > 0
    assert f["selected_epoch"] >= 9  # not before the target was reached (end of epoch 8)
    rows = (whole / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert {"budget_target", "expected_density", "budget_dual"} <= set(header)
    targets = [float(r.split(",")[header.index("budget_target")]) for r in rows[1:]]
    assert targets[:8] == sorted(targets[:8], reverse=True) and targets[7:] == [0.2] * 3
    state = torch.load(cut / "checkpoint.pt", weights_only=True)["state"]["hooks"]["budget"]
    assert int(state["step"]) == int(state["total_steps"]) == 10 * 512 // batch  # 512 images
    assert float(state["commit_dual"].max()) > 0


def test_iterative_methods_reject_patience(tmp_path, capsys):
    code, stdout, err = run(["train", "--method", "lottery", *QUICK, "--patience", "2",
                             "--out", tmp_path / "x"], capsys)
    assert code == 2 and "--patience does not apply to --method lottery" in err
    code, stdout, err = run(["train", "--method", "aslp", *QUICK, "--budget-strength", "-1",
                             "--out", tmp_path / "y"], capsys)
    assert code == 2 and "--budget-strength must be a finite number >= 0, got -1" in err


def test_sensitivity_prunes_on_a_plateau_and_resumes_exactly(tmp_path, capsys, monkeypatch):
    """The LOBSTER schedule in the runner: decay every step, threshold search and pruning on a
    validation-loss plateau; the plateau detector's state survives a resume."""
    args = ["train", "--method", "sensitivity", *QUICK, "--epochs", "4", "--variant", "specific",
            "--plateau-patience", "1", "--strength", "0.05"]  # strong decay: the loss rises
    # Cut before epoch 3, whose plateau needs the detector's memory of epoch 2.
    whole, cut = check_resume_is_exact(args, tmp_path, capsys, monkeypatch, stop_before=3)
    f = final(whole)
    assert f["sparsity"]["density"] < 1 and f["test_acc"] == f["masked_model_test_acc"]
    assert float(losses(whole)[-1][3]) < 1  # pruned before the last epoch, so resumed pruned
    code, stdout, err = run(["train", "--method", "sensitivity", *QUICK, "--val-fraction", "0",
                             "--out", tmp_path / "noval"], capsys)
    assert code == 2 and "--method sensitivity needs a validation split" in err
