"""The README's examples work as users copy them: every ```python block of README.md runs, as
written, on a small synthetic loader, and the training loss it computes is finite and decreases.

What a block may take from outside, because the README says it is the user's (``Example``'s
preamble): ``loader`` (training batches of ``(N, 1, 28, 28)`` images, 10 classes), ``epochs``,
``evaluate(model)`` and ``val_loss(model)``. Everything else a block uses it defines itself, so a
block that needs an undefined name fails here: fix the README, not this test.

Substitutions, to keep it fast and offline (the code paths are the same):
- ``sparseprune.runner.data.load_idx_dataset`` returns the synthetic splits (no dataset files);
- ``sparseprune.prune_at_init`` scores with at most ``MAX_ITERATIONS`` iterations (SynFlow's 100
  over Conv-2's 3.3 M weights take a minute on 2 cores).

A block that cannot run (real data, a network, a fragment) is preceded by
``<!-- not run: reason -->``; it is reported as skipped with that reason.

The learning-rate table of "Using it on your own model" is generated from the methods' recipes:
``test_recipe_table_matches_the_recipes`` fails, printing the table to paste, when they drift.
"""

from __future__ import annotations

import math
import pathlib
import re
from dataclasses import dataclass
from typing import Optional

import pytest
import torch
import torch.nn.functional as F

import sparseprune as sp
from sparseprune.pruning.scores import SCORERS
from sparseprune.runner import data as D

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
NOT_RUN = re.compile(r"^<!--\s*not run:\s*(?P<reason>.*?)\s*-->$")
MAX_ITERATIONS = 2


@dataclass
class Block:
    line: int                  # of the opening fence
    code: str
    not_run: Optional[str]     # the reason, when marked


def readme_blocks(text: str) -> list[Block]:
    lines, blocks, i = text.splitlines(), [], 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("```"))
            before = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
            marked = NOT_RUN.match(before)
            blocks.append(Block(i + 1, "\n".join(lines[i + 1:end]),
                                marked.group("reason") if marked else None))
            i = end
        i += 1
    return blocks


BLOCKS = readme_blocks(README.read_text())


def _splits(num_train: int = 512):
    return D.synthetic_dataset(num_train=num_train, num_test=128, seed=0)


@pytest.fixture
def user(monkeypatch):
    """The names the README leaves to the user, and the training losses the block computes."""
    splits = _splits()
    val = D.loader(splits.val, 128, shuffle=False)

    @torch.no_grad()
    def val_loss(model):
        was = model.training
        model.eval()
        out = sum(F.cross_entropy(model(x), y).item() for x, y in val) / len(val)
        model.train(was)
        return out

    @torch.no_grad()
    def evaluate(model):
        was = model.training
        model.eval()
        right = sum(int((model(x).argmax(1) == y).sum()) for x, y in val)
        model.train(was)
        return right / len(splits.val)

    losses, scoring = [], []
    real = F.cross_entropy

    def recording(*args, **kwargs):  # training losses: with gradients, not pruning's scoring
        loss = real(*args, **kwargs)
        if torch.is_grad_enabled() and loss.requires_grad and loss.dim() == 0 and not scoring:
            losses.append(loss.item())
        return loss

    monkeypatch.setattr(F, "cross_entropy", recording)
    # 1024 images: 8 batches of the pruning-at-init example's 128
    monkeypatch.setattr(D, "load_idx_dataset", lambda *a, **k: _splits(1024))
    real_pai = sp.prune_at_init

    def quick_pai(model, method, *args, iterations=None, **kwargs):
        if SCORERS[method].iterative:
            iterations = min(iterations or MAX_ITERATIONS, MAX_ITERATIONS)
        scoring.append(True)
        try:
            return real_pai(model, method, *args, iterations=iterations, **kwargs)
        finally:
            scoring.pop()

    monkeypatch.setattr(sp, "prune_at_init", quick_pai)
    names = {"loader": D.loader(splits.train, 64, shuffle=True, seed=0), "epochs": 2,
             "evaluate": evaluate, "val_loss": val_loss, "__name__": "readme_example"}
    return names, losses


def test_the_readme_has_examples():
    assert len([b for b in BLOCKS if b.not_run is None]) >= 5
    for b in BLOCKS:
        assert b.not_run != "", f"README.md:{b.line}: '<!-- not run: -->' needs a reason"


@pytest.mark.parametrize("block", BLOCKS, ids=[f"README.md:{b.line}" for b in BLOCKS])
def test_readme_block_runs_and_its_loss_decreases(block, user, capsys, tmp_path, monkeypatch):
    if block.not_run is not None:
        pytest.skip(f"README.md:{block.line} is marked not run: {block.not_run}")
    names, losses = user
    monkeypatch.chdir(tmp_path)  # the files a block saves land here, not in the checkout
    torch.manual_seed(0)
    try:
        exec(compile(block.code, f"README.md:{block.line}", "exec"), names)
    except Exception as exc:
        raise AssertionError(f"the README block at line {block.line} fails as written: "
                             f"{type(exc).__name__}: {exc}") from exc
    if not losses:  # a block that trains nothing (none yet) has nothing more to check
        return
    assert all(math.isfinite(v) for v in losses), losses
    k = max(1, len(losses) // 4)
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    assert len(losses) >= 4 and last < first, \
        f"README.md:{block.line}: the loss did not decrease ({first:.4f} -> {last:.4f}): {losses}"


# ------------------------------------------------------------------ the learning-rate table

TABLE = re.compile(r"<!-- recipes:start -->\n(.*?)<!-- recipes:end -->", re.S)


def recipe_table() -> str:
    """The README's table of the methods' training recipes, from the recipes themselves."""
    rows = ["| method | optimizer | learning rate per group (`sp.param_groups`) | weight decay | "
            "schedule | source |", "|---|---|---|---|---|---|"]
    recipes = [(f"`{n}`", sp.methods.get(n).recipe) for n in sp.methods.available()]
    recipes.append(("pruning at init (`snip`, `synflow`, ...)", sp.pruning.RECIPE))
    for name, r in recipes:
        groups = dict(r.lrs)
        groups.setdefault("weights", r.lr("weights"))
        lrs = ", ".join(f"`{g}` {lr:g}" for g, lr in groups.items())
        opt = f"SGD, momentum {r.momentum:g}" if r.optimizer == "sgd" else "Adam"
        rows.append(f"| {name} | {opt} | {lrs} | {r.weight_decay:g} | {r.lr_schedule or '-'} | "
                    f"{r.source} |")
    return "\n".join(rows) + "\n"


def test_recipe_table_matches_the_recipes():
    found = TABLE.search(README.read_text())
    assert found, "README.md lacks the <!-- recipes:start --> ... <!-- recipes:end --> table"
    expected = recipe_table()
    assert found.group(1) == expected, f"README's recipe table is stale; paste:\n{expected}"


def test_the_example_needs_its_kaiming_init(user):
    """What "Initialisation" says: the Example without its init loop (torch's default init) stays
    at chance, ln 10, where the Example as written learns (test above)."""
    example = next(b for b in BLOCKS if "sp.convert(model, \"aslp\"" in b.code)
    code = re.sub(r"for m in model\.modules\(\):.*?kaiming_normal_\(m\.weight[^\n]*\n", "",
                  example.code, flags=re.S)
    assert "kaiming" not in code
    names, losses = user
    torch.manual_seed(0)
    exec(compile(code, f"README.md:{example.line} (default init)", "exec"), names)
    assert len(losses) == 8 and all(abs(v - math.log(10)) < 0.1 for v in losses), losses
