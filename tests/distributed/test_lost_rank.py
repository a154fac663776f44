"""A rank that stops answering makes its peers' next collective fail within the process group's
timeout (gloo), and the runner turns that into a message saying what happened and how to resume."""

from __future__ import annotations

import datetime
import time

from harness import save_result, spawn
from sparseprune.runner.ranks import Ranks, lost_peer

TIMEOUT = 3  # seconds


def _worker(rank, world, out):
    ranks = Ranks(rank, world)
    if rank == 1:  # never joins the collective; leaves once rank 0 is done (or after 50 s)
        deadline = time.monotonic() + 50
        while not (out / "rank0.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        save_result(out, rank, {})
        return
    try:
        ranks.all_sum(1.0)
    except RuntimeError as exc:
        message = lost_peer(exc, ranks, "runs/x")
        save_result(out, rank, {"message": message, "error": str(exc)[:500]})
        return
    save_result(out, rank, {"message": None, "error": ""})


def test_a_silent_rank_fails_the_collective_within_the_timeout(tmp_path):
    r0, _ = spawn(_worker, tmp_path, timeout=datetime.timedelta(seconds=TIMEOUT))
    assert r0["message"] is not None, r0["error"]
    assert "another rank stopped or stopped responding" in r0["message"]
    assert "--resume runs/x" in r0["message"]
    assert "timed out" in r0["error"].lower()  # the timeout ended it, not the peer leaving
