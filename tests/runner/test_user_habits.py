"""What a new user hits first in the CLI and its plots: --version, a one-line error for an
unwritable --out, score plots that count what they say for every method, and a comparison plot
whose legend is by method and model with nothing drawn that it does not list."""

from __future__ import annotations

import re

import matplotlib
import pytest

import sparseprune as sp
from sparseprune.runner import cli, plots

from test_cli import QUICK, run

matplotlib.use("Agg")


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures the plot functions close, kept for inspection."""
    import matplotlib.pyplot as plt
    kept = []
    monkeypatch.setattr(plt, "close", lambda fig=None: kept.append(fig))
    return kept


def test_version(capsys):
    assert run(["--version"], capsys)[:2] == (0, f"sparseprune {sp.__version__}\n")


def test_unwritable_out_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    code, _, err = run(["train", "--method", "aslp", *QUICK, "--epochs", "1", "--out",
                        tmp_path / "file" / "run"], capsys)
    assert code == 2 and err.count("\n") == 1 and "Not a directory" in err


@pytest.mark.parametrize("method,extra,label", [
    ("snip", ["--density", "0.1"], "|w| of the kept weights"),
    ("aslp", [], "logit"),
    ("edge_popup", [], "|score|"),
])
def test_score_plot_counts_every_weight_and_names_the_score(tmp_path, capsys, figures, method,
                                                            extra, label):
    code, _, err = run(["train", "--method", method, *QUICK, "--epochs", "1", *extra, "--out",
                        tmp_path / "r"], capsys)
    assert code == 0, err
    fig = next(f for f in figures if f._suptitle is None and f.axes[0].get_yscale() == "log")
    ax = fig.axes[0]
    assert label in ax.get_xlabel()
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    pruned, kept = (int(re.match(rf"{what} \(([\d,]+)", text).group(1).replace(",", ""))
                    for what, text in zip(("pruned", "kept"), texts))
    assert kept + pruned == 266_200 and pruned > 0  # LeNet-300-100's weights, all counted


def test_comparison_plot_legend_by_method_and_model(figures, tmp_path):
    runs = [{"density": d, "accuracy": a, "method": m, "model": model}
            for d, a, m, model in [(0.1, 0.9, "aslp", "lenet300 / mnist"),
                                   (0.5, 0.95, "aslp", "lenet300 / mnist"),
                                   (0.1, 0.8, "snip(rounds=1)", "conv2 / cifar10"),
                                   (0.2, 0.7, "edge_popup", "lenet300 / mnist")]]
    plots.pareto(runs, tmp_path / "p.png")
    ax = figures[-1].axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["aslp", "snip(rounds=1)", "edge_popup", "lenet300 / mnist",
                      "conv2 / cifar10", "Pareto front of a model"]
    assert not ax.texts  # no run-name annotations to overlap or clip
    assert len(ax.lines) == 1  # lenet300's front has two points; conv2's single point is ringed
