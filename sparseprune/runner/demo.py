"""``make demo``: ASLP + Smart Rescale masks over a frozen random LeNet-300-100 on Fashion-MNIST,
trained by the experiment runner (the same code as ``sparseprune train``), on the CPU.

Equivalent to ``sparseprune train --method aslp --opt rescale=smart --model lenet300 --dataset
fashion-mnist --epochs 60 --max-minutes 4 --out demo_out/aslp-sr-lenet300-fashion-mnist``, then
prints the run's table and times one training step of the fused kernels against the seed paper's
``F.gumbel_softmax`` code path and the dense network.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import time
from typing import Optional, Sequence

import torch

from . import data as D
from .models import build_model, kaiming_normal_
from . import ConfigError, RunConfig, report
from .finish import finish
from .optim import learning_rates
from .timing import step_times, timing_table
from .training import start

DEFAULT_EPOCHS = 60          # about 1.5 minutes of training on 2 idle CPU cores
DEFAULT_MAX_MINUTES = 4.0    # `make demo` on a clean clone, build included, stays under 10 minutes
APT_PACKAGE = "dataset-fashion-mnist"
RUN_NAME = "aslp-sr-lenet300-fashion-mnist"


def _try_apt_install() -> bool:
    """Install the dataset package once when we are root and have apt-get; True on success."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False
    print(f"Fashion-MNIST not found; running `apt-get install -y -qq {APT_PACKAGE}` ...",
          flush=True)
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", APT_PACKAGE]):
        if subprocess.run(cmd).returncode != 0:
            return False
    return True


def find_data(data_dir: Optional[str]) -> pathlib.Path:
    """Fashion-MNIST's directory; installs the apt package if possible, else exits with status 2."""
    try:
        return D.find_dataset_dir("fashion-mnist", data_dir)
    except FileNotFoundError as first:
        if _try_apt_install():
            try:
                return D.find_dataset_dir("fashion-mnist", data_dir)
            except FileNotFoundError:
                pass
        print(f"error: {first}", file=sys.stderr)
        raise SystemExit(2)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sparseprune.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                        help=f"training epochs (default {DEFAULT_EPOCHS})")
    parser.add_argument("--out", default="demo_out", help="output directory (default demo_out)")
    parser.add_argument("--data-dir", default=None,
                        help="Fashion-MNIST directory (default: $SPARSEPRUNE_DATA, then "
                             "/usr/share/datasets/fashion-mnist)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--max-minutes", type=float, default=DEFAULT_MAX_MINUTES,
                        help="stop training early past this many minutes "
                             f"(default {DEFAULT_MAX_MINUTES:g}; 0 for no limit)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    wall = time.perf_counter()
    directory = find_data(args.data_dir)
    config = RunConfig(method="aslp", options={"rescale": "smart"}, model="lenet300",
                       dataset="fashion-mnist", epochs=args.epochs, seed=args.seed,
                       data_dir=str(directory), max_minutes=args.max_minutes)
    out = pathlib.Path(args.out) / RUN_NAME
    print(f"{torch.get_num_threads()} threads; run directory {out}", flush=True)
    try:
        session = start(config, out, overwrite=True)
        final = finish(session)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2)

    x, y = (t[:config.batch_size] for t in session.splits.train.tensors)
    dense = kaiming_normal_(build_model(config.model, session.splits.input_shape,
                                        session.splits.num_classes))
    lrs = learning_rates(config, ["scores", "scale"])
    times = step_times(session.model, dense, x, y, lrs=lrs)

    print(f"\n=== ASLP + Smart Rescale, LeNet-300-100, Fashion-MNIST ===")
    print(report(out))
    print()
    print(timing_table(times, config.batch_size))
    same = final["test_acc"] == final["masked_model_test_acc"]
    print(f"\nfinal subnetwork == masked model in eval mode: {'yes' if same else 'NO'}")
    print(f"plots:   {(out / 'curves.png').resolve()}")
    print(f"         {(out / 'density.png').resolve()}")
    print(f"         {(out / 'scores.png').resolve()}")
    print(f"results: {(out / 'final.json').resolve()}")
    print(f"wall time: {time.perf_counter() - wall:.0f} s")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
