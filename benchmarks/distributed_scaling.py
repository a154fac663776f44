"""Step time of the runner on 1 process and on N torchrun ranks at the same global batch (DDP, and
FSDP2 with ``--fsdp``): ``python benchmarks/distributed_scaling.py [--ranks 2] [--batch-size 256]``.

Each configuration runs ``sparseprune train`` (ASLP with Smart Rescale on lenet300, synthetic
data, one torch thread per process, ``--steps-per-epoch`` steps) and reads the median step time
from its final.json. The machine's load average is printed with the numbers: on a shared machine
they are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run(out: pathlib.Path, ranks: int, batch: int, steps: int, extra: list[str]) -> dict:
    args = ["train", "--method", "aslp", "--rescale", "smart", "--model", "lenet300",
            "--dataset", "synthetic", "--batch-size", str(batch), "--epochs", "1",
            "--steps-per-epoch", str(steps), "--val-fraction", "0", "--threads", "1",
            "--no-progress", "--out", str(out), *extra]
    launcher = [sys.executable, "-m", "sparseprune"] if ranks == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
        str(ranks), "-m", "sparseprune"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    subprocess.run(launcher + args, cwd=ROOT, env=env, check=True, capture_output=True)
    return json.loads((out / "final.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        configs = (("1 process", 1, []), (f"{args.ranks} ranks DDP", args.ranks, []),
                   (f"{args.ranks} ranks FSDP2", args.ranks, ["--fsdp"]))
        for label, ranks, extra in configs:
            load_before = os.getloadavg()[0]
            final = run(pathlib.Path(tmp) / label.replace(" ", "_"), ranks, args.batch_size,
                        args.steps, extra)
            rows.append((label, final["step_seconds_median"] * 1e3, load_before,
                         os.getloadavg()[0]))
    base = rows[0][1]
    print(f"global batch {args.batch_size}, lenet300, ASLP + Smart Rescale, 1 thread per process,"
          f" {os.cpu_count()} CPUs")
    print("| run | ms per step (median) | vs 1 process | load average before / after |")
    print("|---|---:|---:|---|")
    for label, ms, before, after in rows:
        print(f"| {label} | {ms:.1f} | {base / ms:.2f}x | {before:.1f} / {after:.1f} |")


if __name__ == "__main__":
    main()
