"""Spawning gloo process groups on CPU from pytest: ``spawn(fn, tmp_path, *args)`` runs
``fn(rank, world, out, *args)`` in ``world`` fresh processes joined in a process group on a free
local port, one torch thread each; ``fn`` saves what the test compares under ``out`` (a
directory), and a worker's exception fails the test with the worker's traceback."""

from __future__ import annotations

import datetime
import os
import pathlib
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("this torch build has no torch.distributed with gloo", allow_module_level=True)

WORLD = 2
TIMEOUT = datetime.timedelta(seconds=60)  # a collective waiting longer fails instead of hanging


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, fn, world: int, port: int, out: str, args: tuple,
           timeout: datetime.timedelta) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timeout)
    try:
        fn(rank, world, pathlib.Path(out), *args)
    finally:
        dist.destroy_process_group()


def spawn(fn, out: pathlib.Path, *args, world: int = WORLD,
          timeout: datetime.timedelta = TIMEOUT) -> list[dict]:
    """Run ``fn`` on ``world`` ranks; returns each rank's ``out/rank{r}.pt`` (``save_result``)."""
    mp.spawn(_entry, args=(fn, world, free_port(), str(out), args, timeout), nprocs=world,
             join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(world)]


def save_result(out: pathlib.Path, rank: int, result: dict) -> None:
    torch.save(result, out / f"rank{rank}.pt")
