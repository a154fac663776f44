"""DDP (gloo, 2 ranks on CPU): ranks seeded differently train exactly like one process at the same
global batch (the same masks at every step, bit for bit; the same parameters up to summation
order), and per-rank noise gives each rank masks of its own."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import sparseprune as sp
from harness import save_result, spawn
from models import mlp, train

STEPS = 5
SHAPE = (12,)


def _ddp_worker(rank, world, out, independent):
    model = mlp(seed=rank)  # rank 1's own init and streams: DDP must replace them with rank 0's
    ddp = DDP(model)
    if independent:
        sp.distributed.per_rank_noise(model)
    sp.distributed.check_streams(model)
    masks, losses = train(model, STEPS, SHAPE, rank, world, wrapped=ddp)
    save_result(out, rank, {"masks": masks, "state": model.state_dict(), "losses": losses})


def test_ddp_equals_one_process_at_the_same_global_batch(tmp_path):
    ranks = spawn(_ddp_worker, tmp_path, False)
    model = mlp(seed=0)
    masks, _ = train(model, STEPS, SHAPE)
    assert len(masks) == STEPS
    for step, expected in enumerate(masks):
        for r in ranks:
            for name, mask in expected.items():
                assert torch.equal(r["masks"][step][name], mask), (step, name)
    for key, value in model.state_dict().items():
        for r in ranks:
            if value.is_floating_point():
                torch.testing.assert_close(r["state"][key], value, rtol=1e-5, atol=1e-6)
            else:  # the streams: [seed, STEPS] everywhere
                assert torch.equal(r["state"][key], value), key


def test_per_rank_noise_gives_each_rank_its_own_masks(tmp_path):
    r0, r1 = spawn(_ddp_worker, tmp_path, True)
    differ = [name for name in r0["masks"][0]
              if not torch.equal(r0["masks"][0][name], r1["masks"][0][name])]
    assert differ == list(r0["masks"][0])
    for key, value in r0["state"].items():  # the shared streams and the parameters stay in step
        torch.testing.assert_close(r1["state"][key], value, rtol=0, atol=0)


def _streams_worker(rank, world, out):
    model = mlp(seed=rank)
    with pytest.raises(RuntimeError, match=r"different noise streams on different ranks"):
        sp.distributed.check_streams(model)
    sp.distributed.broadcast_model(model)
    sp.distributed.check_streams(model)
    save_result(out, rank, {"state": model.state_dict()})


def test_check_streams_is_loud_and_broadcast_model_aligns_the_ranks(tmp_path):
    r0, r1 = spawn(_streams_worker, tmp_path)
    for key, value in r0["state"].items():
        assert torch.equal(r1["state"][key], value), key


class _Bypass(nn.Module):
    """A parent that computes with its child's weight directly, as fast paths do."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(12, 4)

    def forward(self, x):
        return nn.functional.linear(x, self.inner.weight, self.inner.bias)


def _bypass_worker(rank, world, out):
    torch.manual_seed(0)
    good = DDP(mlp(seed=0))
    sp.distributed.check_masks_applied(good, torch.randn(2, 12))
    bad = DDP(sp.convert(_Bypass(), "aslp"))
    with pytest.raises(sp.distributed.MaskNotAppliedError, match=r"'inner': its forward did not run"):
        sp.distributed.check_masks_applied(bad, torch.randn(2, 12))
    save_result(out, rank, {"streams": sp.distributed.streams(good.module)})


def test_check_masks_applied_fails_when_a_mask_is_bypassed_under_ddp(tmp_path):
    r0, r1 = spawn(_bypass_worker, tmp_path)
    for value in r0["streams"].values():
        assert value[1] == 0  # the check leaves the streams where they were
