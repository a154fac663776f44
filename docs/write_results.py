"""Writes docs/results.md from the runs of docs/reproduce.sh: the exact commands, one table per
model (``sparseprune compare``), and the seed papers' claims checked against the numbers.

    python docs/write_results.py RUNS_DIR docs/results.md

RUNS_DIR holds the run directories and ``commands.sh`` (the commands reproduce.sh ran, in
order). Only numbers read from the runs' final.json / metrics.csv appear; the "what it means"
prose under each claim is left to a person.

A section none of whose runs is in RUNS_DIR (e.g. ``MODELS=lenet300`` left Conv-4 out) is kept
from the DEST file already there, with its commands and a note saying so: a partial re-run
updates what it re-ran and nothing else.
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import platform
import re
import sys
from typing import Optional

from sparseprune.runner import compare
from sparseprune.runner.metrics import describe, first_epoch_reaching, load_runs, read_metrics

MODELS = {"lenet300": "LeNet-300-100", "conv4": "Conv-4 (28×28)"}
# run-name suffixes reproduce.sh uses, in table order
VARIANTS = ("aslp", "aslp-sr", "aslp-sc", "supermask", "supermask-dwr", "edge-popup")
# LeNet-300-100 runs of the methods that train weights (and of the mask methods with a budget),
# target density 0.1
WEIGHT_VARIANTS = ("aslp-budget", "supermask-budget", "reparam", "hard-concrete", "magnitude",
                   "lottery", "sensitivity")
WEIGHTS_TITLE = "Methods that train weights: LeNet-300-100, target density 0.1"
WEIGHTS = "lenet300-weights"  # the kept-section key of the weight-training table
READING = "Reading"  # the hand-written section's title starts so; kept as it is


def _pp(x: float) -> str:
    return f"{100 * x:.2f} %"


def _runs(out: pathlib.Path, model: str, variants=VARIANTS) -> dict[str, tuple]:
    found = {}
    for variant in variants:
        d = out / f"{model}-{variant}"
        if (d / "final.json").is_file():
            found[variant] = load_runs([d])[0]
    return found


def _ordering(runs: dict[str, tuple]) -> list[str]:
    """Claim 1: ASLP >= Edge-Popup and Supermask, in test accuracy of the final subnetwork."""
    lines = []
    aslp = [v for v in ("aslp", "aslp-sr", "aslp-sc") if v in runs]
    others = [v for v in ("supermask", "supermask-dwr", "edge-popup") if v in runs]
    if not aslp or not others:
        return ["- not measured (runs missing)"]
    best = max(aslp, key=lambda v: runs[v][2]["test_acc"])
    a = runs[best][2]
    for v in others:
        o = runs[v][2]
        diff = a["test_acc"] - o["test_acc"]
        verdict = "holds" if diff >= 0 else "does not hold"
        lines.append(f"- best ASLP variant ({describe(runs[best][1])}: {_pp(a['test_acc'])} at "
                     f"density {a['sparsity']['density']:.3f}) vs {describe(runs[v][1])} "
                     f"({_pp(o['test_acc'])} at density {o['sparsity']['density']:.3f}): "
                     f"**{verdict}** ({100 * diff:+.2f} pp)")
    plain = runs.get("aslp")
    if plain is not None and best != "aslp":
        worse = [describe(runs[v][1]) for v in others
                 if plain[2]["test_acc"] < runs[v][2]["test_acc"]]
        lines.append(f"- plain ASLP ({_pp(plain[2]['test_acc'])}) "
                     + (f"is below {', '.join(worse)}" if worse else "beats all of them"))
    return lines


def _convergence(runs: dict[str, tuple]) -> list[str]:
    """Claim 2: Smart Rescale speeds convergence (ASLP vs ASLP+SR): the first epoch whose
    validation accuracy reaches 98 % of the lower of the two runs' best validation accuracies."""
    if "aslp" not in runs or "aslp-sr" not in runs:
        return ["- not measured (runs missing)"]
    hist = {v: read_metrics(runs[v][0]) for v in ("aslp", "aslp-sr")}
    bests = [max((h["val_acc"] for h in hist[v] if h.get("val_acc") is not None), default=None)
             for v in hist]
    if None in bests:
        return ["- not measured (no validation accuracy recorded)"]
    target = 0.98 * min(bests)
    reach = {v: first_epoch_reaching(hist[v], target) for v in hist}
    text = {v: f"epoch {reach[v]}" if reach[v] is not None else "never" for v in hist}
    a, s = reach["aslp"], reach["aslp-sr"]
    if a is None or s is None:
        verdict = "holds" if a is None and s is not None else "does not hold"
    else:
        verdict = "holds" if s < a else ("no difference" if s == a else "does not hold")
    return [f"- val accuracy {_pp(target)} (98 % of the lower best) reached by ASLP at "
            f"{text['aslp']}, by ASLP+SR at {text['aslp-sr']}: **{verdict}**",
            f"- final test accuracy: ASLP {_pp(runs['aslp'][2]['test_acc'])}, ASLP+SR "
            f"{_pp(runs['aslp-sr'][2]['test_acc'])}"]


def _sections(text: str) -> dict[str, str]:
    """The ``## `` sections of a Markdown file by title (each with its heading line)."""
    parts = re.split(r"(?m)^(?=## )", text)
    return {part.splitlines()[0][3:].strip(): part.rstrip() + "\n" for part in parts
            if part.startswith("## ")}


def _run_name(command: str) -> str:
    """The run directory's name in a ``sparseprune train ... --out DIR`` command."""
    match = re.search(r"--out \S*?([^/\s]+)(?:\s|$)", command)
    return match.group(1) if match else ""


def _section_runs(section: str) -> set[str]:
    """The run names of a section (a model prefix, or ``WEIGHTS``)."""
    if section == WEIGHTS:
        return {f"lenet300-{v}" for v in WEIGHT_VARIANTS}
    return {f"{section}-{v}" for v in VARIANTS}


def write(out: pathlib.Path, dest: pathlib.Path) -> None:
    commands = (out / "commands.sh").read_text().strip() if (out / "commands.sh").is_file() else ""
    previous = dest.read_text() if dest.is_file() else ""
    old = _sections(previous)
    kept: list[str] = []
    body: list[str] = []

    def keep(section: str, title: str) -> None:
        kept.append(section)
        text = "\n".join(line for line in old[title].splitlines()
                         if not line.startswith("(Kept from the previous"))  # kept before
        body.extend([text.rstrip(), "",
                     f"(Kept from the previous `{dest.name}`: none of this section's runs was in "
                     f"`{out}` when it was regenerated.)", ""])

    for model, title in MODELS.items():
        runs = _runs(out, model)
        if not runs and title in old:
            keep(model, title)
            continue
        body += [f"## {title}", ""]
        if not runs:
            body += ["(no finished runs)", ""]
            continue
        dirs = [runs[v][0] for v in VARIANTS if v in runs]
        plot = out / f"{model}-pareto.png"
        body += [compare(dirs, plot), "",
                 f"Pareto plot: `{plot}` (not committed).", "",
                 "**Seed claim: ASLP ≥ Edge-Popup and Supermask** (test accuracy)", "",
                 *_ordering(runs), "",
                 "**Seed claim: Smart Rescale speeds convergence**", "", *_convergence(runs), ""]
    weights = _weight_methods(out)
    if weights is None and WEIGHTS_TITLE in old:
        keep(WEIGHTS, WEIGHTS_TITLE)
    else:
        body += weights or [f"## {WEIGHTS_TITLE}", "", "(no finished runs)", ""]
    ran = {_run_name(c) for c in commands.splitlines()}
    kept_runs = set().union(*(_section_runs(k) for k in kept)) if kept else set()
    old_commands = [line for line in old.get("Commands", "").splitlines()
                    if line.startswith("sparseprune train ")
                    and _run_name(line) in kept_runs - ran]
    parts = ["# Reproduction: Fashion-MNIST, LeNet-300-100 and Conv-4", "",
             f"Generated by `docs/write_results.py` from `{out}` on "
             f"{datetime.date.today().isoformat()}; machine: {platform.machine()}, "
             f"{os.cpu_count()} CPUs visible, Python {platform.python_version()}."
             + (" Sections kept from the previous file say so; their commands are listed last."
                if kept else ""), "",
             "Every number is the final deterministic subnetwork (`sparseprune.finalize`) of the "
             "best validation epoch, on the 10 000 test images; density counts the kept weights "
             "of every Linear/Conv2d (`sparseprune/report.py`). One seed (0), short epoch "
             "budgets chosen to fit a 2-core CPU: differences of a few tenths of a point are "
             "within seed noise. Supermask is evaluated with its deterministic mask "
             "(`scores >= 0`), not the papers' mean over sampled masks. ms / step is wall "
             "time and grows with other load on the machine.", "",
             "## Commands", "", "```", "bash docs/reproduce.sh        # runs below, then this file",
             "", "\n".join(filter(None, [commands, *old_commands])), "```", ""]
    # The reading is written by hand after the runs; it stays (and is updated by hand).
    reading = [old[t].rstrip() + "\n" for t in old if t.startswith(READING)]
    dest.write_text("\n".join(parts + body + reading))


def _percent(x: Optional[float]) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def _fraction(x: Optional[float]) -> str:
    return "–" if x is None else f"{x:.4f}"


def _budget(strength: Optional[float]) -> str:
    """The budget a run's ``--budget-strength`` chose."""
    if strength is None:
        return "constrained"
    return "none" if strength == 0 else f"penalty, lambda {strength:g}"


def _weight_methods(out: pathlib.Path) -> Optional[list[str]]:
    """The table of the weight-training methods, how close each lands to its target, and the
    learned densities under both final rules; None when none of their runs is there."""
    runs = _runs(out, "lenet300", WEIGHT_VARIANTS)
    if not runs:
        return None
    parts = [f"## {WEIGHTS_TITLE}", "",
             compare([runs[v][0] for v in WEIGHT_VARIANTS if v in runs],
                     out / "lenet300-weights-pareto.png"), ""]
    for v in WEIGHT_VARIANTS:
        if v not in runs:
            continue
        _, config, final = runs[v]
        history = read_metrics(runs[v][0])
        parts.append(f"- {describe(config)}: {_pp(final['test_acc'])} at density "
                     f"{final['sparsity']['density']:.4f} after {len(history)} epochs"
                     + (f" (density imposed by the final top-k: {final['imposed_density']})"
                        if final.get("imposed_density") else ""))
    parts.append("")
    learned = [v for v in WEIGHT_VARIANTS if v in runs and runs[v][2].get("densities")]
    if learned:
        parts += ["**Learned densities under both final rules** (`sparseprune.budget."
                  "final_densities` of the selected epoch): each method's own final rule "
                  "(aslp / supermask `scores >= 0`, reparam `h >= 0.5`, hard_concrete "
                  "`z_hat > 0`; `finalize` without a density) beside the exact top-k "
                  "(`finalize(density=0.1)`, the table above), the expected density of the "
                  "training-time masks, and the share of all weights whose keep / prune decision "
                  "the top-k changes.", "",
                  "| run | method | budget | own rule: density | own rule: test acc (%) | "
                  "top-k: density | top-k: test acc (%) | expected density | decisions the "
                  "top-k changes (%) |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|"]
        for v in learned:
            directory, config, final = runs[v]
            dens = final["densities"]
            parts.append(f"| {directory.name} | {describe(config)} | "
                         f"{_budget(config.budget_strength)} | {_fraction(dens.get('rule'))} | "
                         f"{_percent(dens.get('rule_test_acc'))} | "
                         f"{_fraction(dens.get('exact'))} | {_percent(final['test_acc'])} | "
                         f"{_fraction(dens.get('expected'))} | "
                         f"{_percent(dens.get('changed'))} |")
        parts.append("")
    return parts


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=pathlib.Path, help="directory of the runs (runs/repro)")
    parser.add_argument("dest", type=pathlib.Path, help="Markdown file to write")
    args = parser.parse_args(argv)
    write(args.runs, args.dest)
    print(f"wrote {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
