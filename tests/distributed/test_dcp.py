"""Sharded checkpoints (torch.distributed.checkpoint) of an FSDP2 transformer: saving after k
steps, loading into a freshly built and sharded model and training on gives the uninterrupted
run's result exactly (weights, scores, masks' streams, optimizer state, method state); the same
checkpoint loads into one unsharded process (DCP reshards)."""

from __future__ import annotations

import torch

import sparseprune as sp
from harness import save_result, spawn
from models import optimizer, train, transformer
from test_fsdp import SHAPE, shard

BEFORE, AFTER = 2, 2


def _resume_worker(rank, world, out):
    model = shard(transformer(seed=0))
    opt = optimizer(model)
    train(model, BEFORE, SHAPE, rank, world, opt=opt)
    sp.training.dcp.save(out / "ckpt", model, opt, extra={"step": BEFORE})
    masks, _ = train(model, AFTER, SHAPE, rank, world, opt=opt, start=BEFORE)
    uninterrupted = sp.distributed.full_state_dict(model)

    resumed = shard(transformer(seed=1))  # another init: everything must come from the file
    opt2 = optimizer(resumed)
    for _, layer in sp.masked_layers(resumed):
        layer.method.temperature = 7.0  # method state must be restored too
    extra = sp.training.dcp.load(out / "ckpt", resumed, opt2)
    masks2, _ = train(resumed, AFTER, SHAPE, rank, world, opt=opt2, start=extra["step"])
    save_result(out, rank, {"uninterrupted": uninterrupted, "masks": masks, "masks2": masks2,
                            "resumed": sp.distributed.full_state_dict(resumed),
                            "temperatures": {layer.method.temperature
                                             for _, layer in sp.masked_layers(resumed)}})


def test_sharded_checkpoint_resumes_exactly(tmp_path):
    ranks = spawn(_resume_worker, tmp_path)
    assert (tmp_path / "ckpt" / ".metadata").is_file() and not (tmp_path / "ckpt.tmp").exists()
    for r in ranks:
        assert r["temperatures"] == {1.0}
        assert len(r["masks2"]) == len(r["masks"]) == AFTER
        for a, b in zip(r["masks"], r["masks2"]):
            for name in a:
                assert torch.equal(a[name], b[name]), name
        for key, value in r["uninterrupted"].items():
            assert torch.equal(r["resumed"][key], value), key

    # One unsharded process continues from the 2-rank checkpoint like the sharded run.
    model = transformer(seed=3)
    opt = optimizer(model)
    extra = sp.training.dcp.load(tmp_path / "ckpt", model, opt)
    masks, _ = train(model, AFTER, SHAPE, opt=opt, start=extra["step"])
    for step, expected in enumerate(ranks[0]["masks"]):
        for name, mask in expected.items():
            assert torch.equal(masks[step][name], mask), (step, name)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, ranks[0]["uninterrupted"][key], rtol=1e-5, atol=1e-6)
