"""FSDP2 (``fully_shard`` per block and at the root; gloo, 2 ranks on CPU) on a small transformer:
the masks at every step are the unsharded model's, outputs and parameters agree, the final masks
(global top-k) and the sparsity report count the whole masks, finalize says how to finalize a
sharded model, learned 2:4 masks (``pattern="2:4"``) sample exactly the unsharded model's groups,
and a bypassed mask fails loudly. One spawn serves every test of the module."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.distributed.fsdp import fully_shard

import sparseprune as sp
from harness import save_result, spawn
from models import Transformer, batches, train, transformer

STEPS = 3
SHAPE = (5, 16)  # 5 tokens of width 16
DENSITY = 0.3


def shard(model: nn.Module) -> nn.Module:
    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)
    return model


class _Bypass(nn.Module):
    """A parent that computes with its child's raw weight, as fast paths do."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(16, 16)
        self.last = nn.Linear(16, 4)

    def forward(self, x):
        return self.last(nn.functional.linear(x, self.inner.weight, self.inner.bias))


def _fsdp_worker(rank, world, out):
    model = transformer(seed=rank)  # each rank its own init: broadcast_model aligns them
    sp.distributed.broadcast_model(model)
    shard(model)
    probe = batches(1, SHAPE)[0][0]
    sp.distributed.check_masks_applied(model, probe)
    masks, _ = train(model, STEPS, SHAPE, rank, world)
    sp.distributed.check_streams(model)
    result = {"masks": masks, "full": sp.distributed.full_state_dict(model),
              "report": sp.sparsity_report(model).to_dict(),
              "final": sp.final_masks(model, density=DENSITY),
              "own_final": sp.final_masks(model)}
    with torch.no_grad():
        result["eval"] = model.eval()(probe)
    with pytest.raises(ValueError, match=r"sharded by FSDP2.*full_state_dict"):
        sp.finalize(model, density=DENSITY)

    # Edge-Popup: its per-layer top-k runs on the whole scores in the forward and when gathered.
    popup = shard(transformer(seed=0, method="edge_popup", density=0.5))
    train(popup, 1, SHAPE, rank, world)
    result["popup"] = {"full": sp.distributed.full_state_dict(popup),
                       "own_final": sp.final_masks(popup),
                       "final": sp.final_masks(popup, density=DENSITY, scope="local")}

    # Learned 2:4 masks: the noise is keyed by the global group index, the groups stay whole.
    nm = shard(transformer(seed=0, pattern="2:4"))
    masks, _ = train(nm, STEPS, SHAPE, rank, world)
    result["nm"] = {"masks": masks, "full": sp.distributed.full_state_dict(nm),
                    "own_final": sp.final_masks(nm)}

    torch.manual_seed(0)
    bypass = sp.convert(_Bypass(), "aslp")
    fully_shard(bypass.last)  # a masked layer as its own unit (FSDP2 swaps its class)
    fully_shard(bypass)
    with pytest.raises(sp.distributed.MaskNotAppliedError, match=r"1 of 2 .*'inner'"):
        sp.distributed.check_masks_applied(bypass, torch.randn(2, 16))
    save_result(out, rank, result)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    return spawn(_fsdp_worker, tmp_path_factory.mktemp("fsdp"))


def test_fsdp2_masks_and_parameters_equal_the_unsharded_model(ranks):
    model = transformer(seed=0)
    masks, _ = train(model, STEPS, SHAPE)
    names = [name for name, _ in sp.masked_layers(model)]
    assert any("self_attn" == n.rsplit(".", 1)[-1] for n in names)  # attention in-projections too
    for step, expected in enumerate(masks):
        for r in ranks:
            assert list(r["masks"][step]) == names
            for name in names:
                assert torch.equal(r["masks"][step][name], expected[name]), (step, name)
    state = model.state_dict()
    for r in ranks:
        assert set(r["full"]) == set(state)
        for key, value in state.items():
            torch.testing.assert_close(r["full"][key], value, rtol=1e-5, atol=1e-6)


def test_reports_and_final_masks_of_the_sharded_model_count_the_whole_masks(ranks):
    for r in ranks:
        twin = transformer(seed=1)
        twin.load_state_dict(r["full"])
        assert r["report"] == sp.sparsity_report(twin).to_dict()
        assert 0 < r["report"]["kept"] < r["report"]["total"]
        for name, mask in sp.final_masks(twin, density=DENSITY).items():
            assert torch.equal(r["final"][name], mask), name
        kept = sum(int(m.sum()) for m in r["final"].values())
        assert kept == round(DENSITY * r["report"]["total"])
        for name, mask in sp.final_masks(twin).items():
            assert torch.equal(r["own_final"][name], mask), name
        with torch.no_grad():
            torch.testing.assert_close(r["eval"], twin.eval()(batches(1, SHAPE)[0][0]))
        finalized = sp.finalize(twin, density=DENSITY)  # the documented way to finalize
        assert sp.sparsity_report(finalized).kept == kept


def test_edge_popup_top_k_on_sharded_scores(ranks):
    model = transformer(seed=0, method="edge_popup", density=0.5)
    train(model, 1, SHAPE)
    for r in ranks:
        for key, value in model.state_dict().items():
            torch.testing.assert_close(r["popup"]["full"][key], value, rtol=1e-5, atol=1e-6)
        twin = transformer(seed=1, method="edge_popup", density=0.5)
        twin.load_state_dict(r["popup"]["full"])
        for name, mask in sp.final_masks(twin).items():
            assert torch.equal(r["popup"]["own_final"][name], mask), name
            assert int(mask.sum()) == round(0.5 * mask.numel())
        for name, mask in sp.final_masks(twin, density=DENSITY, scope="local").items():
            assert torch.equal(r["popup"]["final"][name], mask), name


def test_learned_2to4_masks_under_fsdp2_equal_the_unsharded_model(ranks):
    model = transformer(seed=0, pattern="2:4")
    masks, _ = train(model, STEPS, SHAPE)
    assert len(masks) == STEPS and all(len(m) == len(sp.masked_layers(model)) for m in masks)
    for r in ranks:
        for step, expected in enumerate(masks):
            assert list(r["nm"]["masks"][step]) == list(expected)
            for name, mask in expected.items():
                assert torch.equal(r["nm"]["masks"][step][name], mask), (step, name)
                groups = mask.reshape(-1, 4).sum(1)
                assert bool((groups == 2).all()), (step, name)  # exactly 2 of every 4 inputs
        for key, value in model.state_dict().items():
            torch.testing.assert_close(r["nm"]["full"][key], value, rtol=1e-5, atol=1e-6)
        for name, mask in sp.final_masks(model).items():
            assert torch.equal(r["nm"]["own_final"][name], mask), name
