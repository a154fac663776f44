"""Whole masks from a model sharded by FSDP2 (``torch.distributed.fsdp.fully_shard``).

Between forwards FSDP2 keeps every parameter as a DTensor shard, so code that reads whole masks
outside a forward (final masks, the sparsity report, the final top-k) would see shards; worse, a
count such as ``int((scores >= 0).sum())`` reads the local shard's partial sum without an error.
:func:`gathered` all-gathers the parameters for the duration of a block (FSDP2's own
``unshard``/``reshard``), so that code runs unchanged on the full tensors. It is a collective:
every rank of the mesh must enter it, and each rank holds the full masked parameters inside it.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


def fsdp_modules(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` that ``fully_shard`` wrapped, in module order (none without
    torch.distributed)."""
    if not torch.distributed.is_available():
        return []
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def is_sharded(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is a DTensor (a shard of a distributed tensor)."""
    if not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


@contextlib.contextmanager
def gathered(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, every FSDP2-sharded parameter of ``model`` is whole (plain tensors); on a
    model without ``fully_shard`` modules it does nothing. Parameters still sharded inside the
    block (another sharding, e.g. tensor parallelism) raise ValueError naming the first one."""
    modules = fsdp_modules(model)
    for m in modules:
        m.unshard()
    try:
        for name, p in model.named_parameters():
            if is_sharded(p):
                raise ValueError(f"parameter {name!r} is still sharded ({type(p).__name__}) after "
                                 "FSDP2's unshard: only fully_shard sharding is gathered here")
        yield model
    finally:
        for m in reversed(modules):
            m.reshard()
