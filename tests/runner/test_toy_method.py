"""The training contract is the whole interface: a method defined here, in the test, trains through
the runner and the CLI with no change anywhere else (its recipe, density role, per-step hook and
final rule are all the runner uses)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import Tensor, nn

import sparseprune as sp
from sparseprune.methods import MaskMethod, Recipe, TrainingHooks
from sparseprune.methods.base import _REGISTRY
from sparseprune.runner import RunConfig, cli, train

from test_cli import QUICK

CLAMP = 3.0


class _Clamp(TrainingHooks):
    """Clamps the scores after every step and counts the steps (the test reads the count)."""

    steps = 0

    def after_step(self, model: nn.Module, inputs: Tensor, labels: Tensor) -> None:
        type(self).steps += 1
        with torch.no_grad():
            for _, layer in sp.masked_layers(model):
                layer.scores.clamp_(-CLAMP, CLAMP)


class SoftGate(MaskMethod):
    """A deterministic soft gate ``weight * sigmoid(scores)``; final mask ``scores >= 0``."""

    name = "toy_soft_gate"
    parameter_names = ("scores",)
    density_role = "learned"
    recipe = Recipe({"scores": 0.5, "weights": 0.05}, source="test")

    def __init__(self, init_logit: float = 1.0):
        self.init_logit = float(init_logit)

    def attach(self, layer) -> None:
        layer.scores = nn.Parameter(torch.full_like(layer.weight, self.init_logit))

    def weight(self, layer) -> Tensor:
        return layer.weight * torch.sigmoid(layer.scores)

    def final_mask(self, layer) -> Tensor:
        return layer.scores.detach() >= 0

    def budget_mass(self, layer) -> Tensor:
        return torch.sigmoid(layer.scores).sum()

    def disagreement(self, layer, keep: Tensor) -> Tensor:
        gate = torch.sigmoid(layer.scores)
        return torch.where(keep, 1 - gate, gate).sum()

    @classmethod
    def training_hooks(cls, layers, *, epochs_per_round: int) -> TrainingHooks:
        return _Clamp()


@pytest.fixture
def toy():
    sp.methods.register(SoftGate)
    _Clamp.steps = 0
    yield SoftGate
    _REGISTRY.pop(SoftGate.name)


def _check(final: dict, steps: int) -> None:
    assert final["method"] == "toy_soft_gate"
    assert final["imposed_density"] == 0.25  # "learned": the final top-k imposes --density
    assert final["sparsity"]["density"] == pytest.approx(0.25, abs=1e-5)
    assert _Clamp.steps == steps > 0  # the method's hook ran once per step


def test_runner_trains_a_method_defined_outside_the_library(toy, tmp_path):
    config = RunConfig(method="toy_soft_gate", model="lenet300", dataset="synthetic", epochs=1,
                       batch_size=64, density=0.25, options={"init_logit": 2.0})
    final = train(config, tmp_path / "run", progress=False, log=lambda _: None)
    _check(final, final["steps"])


def test_cli_trains_a_method_defined_outside_the_library(toy, tmp_path, capsys):
    out = tmp_path / "cli"
    code = cli.main(["train", "--method", "toy_soft_gate", *QUICK, "--epochs", "1",
                     "--density", "0.25", "--init-logit", "2", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    final = json.loads((out / "final.json").read_text())
    _check(final, final["steps"])
    assert json.loads((out / "config.json").read_text())["options"] == {"init_logit": 2.0}
    cli.main(["info"])
    assert "toy_soft_gate" in capsys.readouterr().out
