"""Resume semantics and progress (issue 19, items 8 and 9).

``--resume DIR --epochs N``: N is the run's total, as in ``train`` (never epochs to add); a total
below what the run trained is a one-line error, an unchanged finished run is "nothing to do" (and
not finished again), and a change is printed, written to config.json and recorded in final.json
(``resumes``) and the report. A cosine schedule extended this way continues on the new total's
curve. Progress: the training bar's figures are those of the latest step (not of step 0 on short
epochs), and the validation and test passes show bars of their own."""

from __future__ import annotations

import csv
import json

import pytest
from tqdm import tqdm

from sparseprune.runner import RunConfig, training
from sparseprune.runner import train as run_train

from test_cli import QUICK, losses, run


def _text(path):
    return path.read_bytes(), path.stat().st_mtime_ns


def test_resume_epochs_is_the_total_and_changes_are_recorded(tmp_path, capsys):
    d = tmp_path / "r"
    code, out, err = run(["train", "--method", "aslp", *QUICK, "--epochs", "2", "--out", d],
                         capsys)
    assert code == 0, err
    config, final = _text(d / "config.json"), _text(d / "final.json")

    # fewer than done: one line, status 2, nothing rewritten
    code, out, err = run(["train", "--resume", d, "--epochs", "1", "--no-progress"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "already trained 2 epochs" in err and "not epochs to add" in err
    assert "--epochs 3" in err  # the total for 1 more
    assert _text(d / "config.json") == config and _text(d / "final.json") == final

    # the same total, or no flag, on a finished run: nothing to do, nothing rewritten
    for extra in ([], ["--epochs", "2"]):
        code, out, err = run(["train", "--resume", d, *extra, "--no-progress"], capsys)
        assert code == 0, err
        assert "nothing to do" in out and "2 of 2 epochs" in out and "resuming" not in out
        assert _text(d / "config.json") == config and _text(d / "final.json") == final
        assert "test accuracy of the final subnetwork" in out  # the report

    # a larger total: said, written, recorded; the run trains up to it
    code, out, err = run(["train", "--resume", d, "--epochs", "3", "--no-progress"], capsys)
    assert code == 0, err
    assert "config.json: epochs 2 -> 3" in out
    assert "resuming" in out and "after epoch 2 of 3" in out
    assert [row[0] for row in losses(d)] == ["1", "2", "3"]
    assert json.loads((d / "config.json").read_text())["epochs"] == 3
    f = json.loads((d / "final.json").read_text())
    assert f["epochs_run"] == 3 and f["epochs_configured"] == 3
    assert f["resumes"] == [{"after_epoch": 2, "changed": {"epochs": [2, 3]}}]
    assert "resumed after epoch 2 with epochs 2 -> 3" in out  # report printed after training
    code, out, err = run(["report", d], capsys)
    assert "resumed after epoch 2 with epochs 2 -> 3" in out


def test_resume_of_an_interrupted_run_keeps_config_untouched(tmp_path, capsys, monkeypatch):
    """Resuming without a change never rewrites config.json (here: an interrupted run)."""
    d = tmp_path / "cut"
    real = training.train_epoch

    def interrupted(s, epoch, progress):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(s, epoch, progress)

    monkeypatch.setattr(training, "train_epoch", interrupted)
    code, _, _ = run(["train", "--method", "aslp", *QUICK, "--epochs", "2", "--out", d], capsys)
    assert code == 130
    monkeypatch.setattr(training, "train_epoch", real)
    config = _text(d / "config.json")
    code, out, err = run(["train", "--resume", d, "--no-progress"], capsys)
    assert code == 0, err
    assert "after epoch 1 of 2" in out and "config.json:" not in out
    assert _text(d / "config.json") == config
    assert json.loads((d / "final.json").read_text())["resumes"] == []


def test_resume_cannot_shift_pruning_rounds(tmp_path, capsys):
    d = tmp_path / "lt"
    code, _, err = run(["train", "--method", "lottery", *QUICK, "--epochs", "1", "--rounds", "1",
                        "--out", d], capsys)
    assert code == 0, err
    config = _text(d / "config.json")
    code, _, err = run(["train", "--resume", d, "--epochs", "2", "--no-progress"], capsys)
    assert code == 2 and err.count("\n") == 1 and "rounds cannot change" in err, err
    assert _text(d / "config.json") == config


def _lrs(directory):
    with open(directory / "metrics.csv") as f:
        return [float(row["lr/scores"]) for row in csv.DictReader(f)]


def test_extending_a_cosine_schedule_follows_the_new_total(tmp_path, capsys):
    """Edge-Popup's cosine schedule: epochs 3-4 of a 2-epoch run extended to 4 use the learning
    rates of a 4-epoch run, not the end of the 2-epoch curve (lr 0, then rising again)."""
    args = ["train", "--method", "edge_popup", *QUICK]
    assert run([*args, "--epochs", "4", "--out", tmp_path / "whole"], capsys)[0] == 0
    assert run([*args, "--epochs", "2", "--out", tmp_path / "ext"], capsys)[0] == 0
    code, out, err = run(["train", "--resume", tmp_path / "ext", "--epochs", "4",
                          "--no-progress"], capsys)
    assert code == 0, err
    assert "cosine learning-rate schedule re-planned over 4 epochs (was 2)" in out
    whole, ext = _lrs(tmp_path / "whole"), _lrs(tmp_path / "ext")
    assert len(ext) == 4 and ext[2:] == pytest.approx(whole[2:], rel=1e-12)
    assert ext[2] > 0.01  # not the old curve's end


class _Recorded(tqdm):
    """tqdm that remembers every bar and, at close, its postfix and count."""

    bars: list = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.closed_with, self.shown = None, not self.disable  # close() sets disable
        _Recorded.bars.append(self)

    def close(self):
        if self.closed_with is None:
            self.closed_with = (getattr(self, "postfix", None), self.n)
        super().close()


@pytest.fixture
def bars(monkeypatch):
    _Recorded.bars = []
    monkeypatch.setattr(training, "tqdm", _Recorded)
    return _Recorded.bars


def test_training_bar_shows_the_last_steps_figures(tmp_path, bars):
    """A short epoch (8 steps, well under a second): the bar's figures at the end are the
    epoch's, not step 0's (they were refreshed only every 20 steps)."""
    session = training.build(RunConfig("aslp", "lenet300", "synthetic", batch_size=64), tmp_path)
    out = training.train_epoch(session, 1, progress=True)
    (bar,) = bars
    postfix, n = bar.closed_with
    assert n == 8
    figures = dict(item.split("=") for item in postfix.split(", "))
    assert figures["loss"] == f"{out['train_loss']:.4f}"
    assert figures["acc"] == f"{out['train_acc']:.3f}"
    assert figures["density"] == f"{training.current_density(session.model):.4f}"


def test_validation_and_test_passes_show_progress(tmp_path, bars, capsys):
    config = RunConfig("aslp", "lenet300", "synthetic", epochs=1, batch_size=64)
    run_train(config, tmp_path / "r", progress=True, log=lambda line: None)
    shown = {bar.desc: bar.closed_with[1] for bar in bars if bar.shown}
    assert shown == {"epoch 1/1": 8, "epoch 1/1 validation": 1, "test (masked model)": 1,
                     "test (final subnetwork)": 1}
    # --no-progress (progress=False): no bar at all
    bars.clear()
    run_train(config, tmp_path / "q", progress=False, log=lambda line: None)
    assert bars and not any(bar.shown for bar in bars)
