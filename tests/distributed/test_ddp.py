"""DDP (gloo, 2 ranks on CPU): ranks seeded differently train exactly like one process at the same
global batch (the same masks at every step, bit for bit; the same parameters up to summation
order); per-rank noise gives each rank masks of its own; the stream check and the mask check are
loud. One spawn serves every test of the module (starting processes is the slow part)."""

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


class _Bypass(nn.Module):
    """A parent that computes with its child's raw weight, as fast paths do."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(12, 4)

    def forward(self, x):
        return nn.functional.linear(x, self.inner.weight, self.inner.bias)


def _worker(rank, world, out):
    result = {}
    # Each rank its own init and streams (seeded by rank): DDP must replace them with rank 0's.
    model = mlp(seed=rank)
    with pytest.raises(RuntimeError, match=r"different noise streams on different ranks"):
        sp.distributed.check_streams(model)
    ddp = DDP(model)
    sp.distributed.check_streams(model)
    sp.distributed.check_masks_applied(ddp, torch.randn(2, 12))
    result["masks"], _ = train(model, STEPS, SHAPE, rank, world, wrapped=ddp)
    result["state"] = model.state_dict()

    independent = mlp(seed=rank)
    ddp = DDP(independent)
    sp.distributed.per_rank_noise(independent)
    result["independent_masks"], _ = train(independent, 2, SHAPE, rank, world, wrapped=ddp)
    result["independent_state"] = independent.state_dict()

    bad = DDP(sp.convert(_Bypass(), "aslp"))
    with pytest.raises(sp.distributed.MaskNotAppliedError,
                       match=r"1 of 1 .*'module.inner': its mask was never applied"):
        sp.distributed.check_masks_applied(bad, torch.randn(2, 12))
    save_result(out, rank, result)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    return spawn(_worker, tmp_path_factory.mktemp("ddp"))


def test_masks_at_every_step_equal_one_process_at_the_same_global_batch(ranks):
    masks, _ = train(mlp(seed=0), STEPS, SHAPE)
    assert len(masks) == STEPS
    for step, expected in enumerate(masks):
        for r in ranks:
            assert list(r["masks"][step]) == list(expected)
            for name, mask in expected.items():
                assert torch.equal(r["masks"][step][name], mask), (step, name)


def test_parameters_after_five_steps_equal_one_process(ranks):
    model = mlp(seed=0)
    train(model, STEPS, SHAPE)
    for key, value in model.state_dict().items():
        for r in ranks:
            if value.is_floating_point():
                torch.testing.assert_close(r["state"][key], value, rtol=1e-5, atol=1e-6)
            else:  # the streams: [seed, STEPS] (check_masks_applied left them where they were)
                assert torch.equal(r["state"][key], value), key
                assert int(value[1]) == STEPS


def test_per_rank_noise_gives_each_rank_its_own_masks(ranks):
    r0, r1 = ranks
    first0, first1 = r0["independent_masks"][0], r1["independent_masks"][0]
    assert all(not torch.equal(first0[name], first1[name]) for name in first0)
    for key, value in r0["independent_state"].items():  # shared streams, parameters in step
        assert torch.equal(r1["independent_state"][key], value), key
