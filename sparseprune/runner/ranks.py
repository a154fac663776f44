"""The runner on several processes: ``torchrun --nproc-per-node N -m sparseprune train ...``.

torchrun sets ``RANK``, ``WORLD_SIZE`` and the rendezvous; :func:`join` starts the process group
(gloo on CPU, NCCL on CUDA) with a bounded timeout, so a rank whose peer died stops with an error
instead of waiting forever. Each global batch (``--batch-size``, the single-process batch) is cut
into one contiguous share per rank (:meth:`Ranks.share`): every rank draws the same seeded order
and augmentation, so the global batches, and therefore the run, equal the single-process run's.
(``DistributedSampler`` interleaves and pads the order instead, so a run through it would not
equal the one-process run.) Rank 0 alone logs, shows progress and writes the run's files.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor

from .config import ConfigError

TIMEOUT_ENV = "SPARSEPRUNE_DIST_TIMEOUT"  # seconds a collective waits for its peers
DEFAULT_TIMEOUT = 120.0


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def share(self, n: int) -> slice:
        """This rank's contiguous share of a global batch of ``n`` samples (sizes differ by at
        most one; a rank may get none of a short last batch)."""
        return slice(self.rank * n // self.world, (self.rank + 1) * n // self.world)

    def all_sum(self, *values: float) -> list[float]:
        """The sums over all ranks of ``values`` (one collective; float64)."""
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def timeout_seconds() -> float:
    text = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT))
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{TIMEOUT_ENV} must be a number of seconds, got {text!r}") from None
    if not value > 0:
        raise ConfigError(f"{TIMEOUT_ENV} must be > 0 seconds, got {text!r}")
    return value


def join() -> Ranks:
    """Join the job torchrun launched (``WORLD_SIZE`` > 1), or a one-process Ranks."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    if not dist.is_available():
        raise ConfigError(f"WORLD_SIZE={world} but this torch has no torch.distributed")
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_seconds()))
    return Ranks(dist.get_rank(), dist.get_world_size())


def leave() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def lost_peer(exc: BaseException, ranks: Ranks, directory) -> Optional[str]:
    """The message for a collective that failed because another rank died or hung, else None."""
    if not ranks.distributed:
        return None
    backend_error = getattr(dist, "DistBackendError", RuntimeError)
    text = str(exc)
    if not isinstance(exc, backend_error) and not any(
            s in text for s in ("Connection closed by peer", "Timed out", "timed out",
                                "Connection reset", "Broken pipe", "NCCL")):
        return None
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return (f"rank {ranks.rank} of {ranks.world}: another rank stopped or stopped responding "
            f"({first[:200]}); the last complete checkpoint is in {directory}: continue with "
            f"`torchrun --nproc-per-node {ranks.world} -m sparseprune train --resume {directory}`")


def loss_for_rank(per_sample_sum: Tensor, global_n: int, ranks: Ranks) -> Tensor:
    """This rank's loss such that DDP's gradient average is the global batch's mean loss:
    ``sum over its samples / global_n * world`` (DDP divides by ``world``)."""
    return per_sample_sum * (ranks.world / global_n)
