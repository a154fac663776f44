"""docs/reproduce.sh and docs/write_results.py end to end, on the synthetic dataset with one-epoch
budgets (the real table needs Fashion-MNIST and about 45 minutes): every method variant trains, the
table and the claim checks are written with the exact commands, and a second call skips the runs
that finished with the same command."""

from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
VARIANTS = ("aslp", "aslp-sr", "aslp-sc", "supermask", "supermask-dwr", "edge-popup")
WEIGHT_VARIANTS = ("aslp-budget", "supermask-budget", "reparam", "hard-concrete", "magnitude",
                   "lottery", "sensitivity")
LEARNED = ("aslp-budget", "supermask-budget", "reparam", "hard-concrete")


def reproduce(tmp_path, **env):
    env = dict(os.environ, PY=sys.executable, OUT=str(tmp_path / "runs"),
               DEST=str(tmp_path / "results.md"), MODELS="lenet300", DATASET="synthetic",
               LENET_EPOCHS="1", WEIGHT_EPOCHS="1", **env)
    return subprocess.run(["bash", str(ROOT / "docs" / "reproduce.sh")], env=env,
                          capture_output=True, text=True, timeout=600)


def test_reproduce_script_writes_results(tmp_path):
    proc = reproduce(tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = tmp_path / "runs"
    for v in VARIANTS + WEIGHT_VARIANTS:
        assert (runs / f"lenet300-{v}" / "final.json").is_file(), v
    commands = (runs / "commands.sh").read_text().splitlines()
    n = len(VARIANTS) + len(WEIGHT_VARIANTS)
    assert len(commands) == n
    assert any("--method lottery --rounds 10" in c for c in commands)
    assert any("--method supermask --rescale dwr" in c for c in commands)
    assert any("--method edge_popup --density 0.5" in c for c in commands)
    assert any("--method aslp --signed-constant" in c for c in commands)
    md = (tmp_path / "results.md").read_text()
    assert "## LeNet-300-100" in md and "## Conv-4 (28×28)" in md
    assert "## Methods that train weights: LeNet-300-100, target density 0.1" in md
    assert all(c in md for c in commands)
    table = [ln for ln in md.splitlines() if ln.startswith("| lenet300-")]
    assert len(table) == n + len(LEARNED)  # the learned ones again under both final rules
    both = md[md.index("**Learned densities under both final rules**"):]
    rows = [ln.split(" | ") for ln in both.splitlines() if ln.startswith("| lenet300-")]
    assert [r[0][2:] for r in rows] == [f"lenet300-{v}" for v in LEARNED]
    assert all(r[2] == "constrained" and r[5] == "0.1000" for r in rows)
    assert "ASLP ≥ Edge-Popup and Supermask" in md and "Smart Rescale speeds convergence" in md
    assert md.count("**holds**") + md.count("**does not hold**") + \
        md.count("**no difference**") >= 4  # 3 ordering checks + 1 convergence check

    again = reproduce(tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("skip ") == n


def test_partial_rerun_keeps_the_sections_it_did_not_run(tmp_path):
    """ONLY= trains some runs; write_results keeps the sections none of whose runs is there from
    the results file already written, with their commands."""
    dest = tmp_path / "results.md"
    proc = reproduce(tmp_path, ONLY="lenet300-aslp lenet300-reparam")
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir() if p.is_dir())
    assert runs == ["lenet300-aslp", "lenet300-reparam"]
    md = dest.read_text()
    assert "| lenet300-aslp |" in md and "| lenet300-reparam |" in md
    # A previous file with a Conv-4 section and its command: kept, said so, command kept.
    conv = ("sparseprune train --method aslp --model conv4 --epochs 4 --dataset fashion-mnist "
            "--out runs/repro/conv4-aslp")
    end = md.index("```", md.index("```") + 3)  # the end of the Commands block
    md = md[:end] + conv + "\n" + md[end:]
    reading = "## Reading (written by hand after the runs above)\n\n- ASLP wins.\n"
    dest.write_text(md.replace("## Conv-4 (28×28)\n\n(no finished runs)",
                               "## Conv-4 (28×28)\n\n| conv4-aslp | 55.61 |") + reading)
    spec = importlib.util.spec_from_file_location("write_results",
                                                  ROOT / "docs" / "write_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write(tmp_path / "runs", dest)
    md = dest.read_text()
    assert "| conv4-aslp | 55.61 |" in md and "(Kept from the previous `results.md`" in md
    assert conv in md and md.count("sparseprune train ") == 3
    assert "| lenet300-aslp |" in md
    module.write(tmp_path / "runs", dest)  # again: kept once more, noted once
    md = dest.read_text()
    assert md.count("(Kept from the previous") == 1
    assert md.endswith(reading) and md.count("## Reading") == 1  # the hand-written reading stays
