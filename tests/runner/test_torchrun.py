"""``torchrun --nproc-per-node 2 -m sparseprune train``: the run equals the single-process run at
the same global batch (final.json, metrics), rank 0 alone writes the run's files; a rank killed
mid-run ends the job with a clear error in bounded time and ``--resume`` finishes it like an
uninterrupted run."""

from __future__ import annotations

import json
import math
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
import torch.distributed as dist

import sparseprune as sp
from sparseprune.runner import sharding
from sparseprune.runner.config import ConfigError, RunConfig
from sparseprune.runner.hooks import TrainingHooks
from sparseprune.runner.models import build_model
from sparseprune.runner.ranks import Ranks

if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("this torch build has no torch.distributed with gloo", allow_module_level=True)

ROOT = pathlib.Path(__file__).resolve().parents[2]
RUN = ["--method", "aslp", "--model", "lenet300", "--dataset", "synthetic", "--batch-size", "64",
       "--steps-per-epoch", "4", "--threads", "1", "--no-progress", "--rescale", "smart"]


def torchrun(*args, timeout=120, wait=True):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1",
               SPARSEPRUNE_DIST_TIMEOUT="30")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "sparseprune", "train", *map(str, args)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def single(tmp_path, name, *args):
    """The same run in one process (a subprocess: --threads must not leak into pytest)."""
    out = tmp_path / name
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "sparseprune", "train", *RUN,
                           *map(str, args), "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "final.json").read_text())


def same_results(a: dict, b: dict) -> None:
    for key in ("test_acc", "masked_model_test_acc", "best_val_acc", "selected_epoch",
                "epochs_run", "imposed_density", "steps"):
        assert a[key] == b[key], key
    assert a["sparsity"]["kept"] == b["sparsity"]["kept"]
    assert math.isclose(a["test_loss"], b["test_loss"], rel_tol=1e-4)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The 2-epoch run in one process, which the torchrun runs must equal."""
    return single(tmp_path_factory.mktemp("one"), "one", "--epochs", "2")


def test_torchrun_equals_one_process(tmp_path, one_process):
    code, out, err = torchrun(*RUN, "--epochs", "2", "--out", tmp_path / "two")
    assert code == 0, err[-3000:]
    assert out.count("epoch   2/2") == 1  # rank 0 alone logs
    assert out.count("test accuracy of the final subnetwork") == 1
    two = json.loads((tmp_path / "two" / "final.json").read_text())
    same_results(two, one_process)


def test_torchrun_fsdp_equals_one_process(tmp_path, one_process):
    code, out, err = torchrun(*RUN, "--epochs", "2", "--fsdp", "--out", tmp_path / "fsdp")
    assert code == 0, err[-3000:]
    assert (tmp_path / "fsdp" / "checkpoint.dcp" / ".metadata").is_file()
    assert not (tmp_path / "fsdp" / "checkpoint.pt").exists()
    fsdp = json.loads((tmp_path / "fsdp" / "final.json").read_text())
    same_results(fsdp, one_process)


def test_fsdp_refuses_what_it_cannot_shard():
    config = RunConfig(method="aslp", model="lenet300", dataset="synthetic", density=0.3,
                       fsdp=True)
    model = sp.convert(build_model("lenet300", (1, 28, 28), 10), "aslp")
    hooks = TrainingHooks(model, config)
    with pytest.raises(ConfigError, match=r"--fsdp with --density 0.3 and --method aslp"):
        sharding.check(config, Ranks(0, 2), hooks)
    with pytest.raises(ConfigError, match=r"--fsdp shards over several processes"):
        sharding.check(config, Ranks(), hooks)
    config.density = None
    sharding.check(config, Ranks(0, 2), TrainingHooks(model, config))


def _workers(parent: int) -> list[int]:
    """The processes whose parent is ``parent`` (torchrun's ranks)."""
    pids = []
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.skipif(not pathlib.Path("/proc").is_dir(), reason="finds the ranks through /proc")
def test_a_killed_rank_ends_the_job_and_resume_finishes_it(tmp_path):
    run_dir, epochs = tmp_path / "killed", 6
    proc = torchrun(*RUN, "--epochs", epochs, "--out", run_dir, wait=False)
    deadline = time.monotonic() + 90
    while not (run_dir / "checkpoint.pt").exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 90 s"
        time.sleep(0.05)
    workers = _workers(proc.pid)
    assert len(workers) == 2, workers
    os.kill(max(workers), signal.SIGKILL)
    killed_at = time.monotonic()
    out, err = proc.communicate(timeout=60)  # bounded: the job must not hang
    assert proc.returncode != 0
    assert time.monotonic() - killed_at < 60
    assert "Signal 9 (SIGKILL)" in err or "another rank stopped" in err, err[-3000:]
    done = json.loads((run_dir / "config.json").read_text())
    assert done["epochs"] == epochs

    code, out, err = torchrun("--resume", run_dir)
    assert code == 0, err[-3000:]
    assert "resuming" in out
    same_results(json.loads((run_dir / "final.json").read_text()),
                 single(tmp_path, "uninterrupted", "--epochs", epochs))
