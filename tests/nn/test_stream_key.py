"""``layer.stream_key`` (set per rank by sparseprune.distributed.per_rank_noise) changes the
layer's draws, never its shared stream buffer."""

from __future__ import annotations

import copy

import torch

import sparseprune as sp


def test_stream_key_changes_the_draws_not_the_stream():
    layer = sp.nn.MaskedLinear(8, 8)
    keyed = copy.deepcopy(layer)
    keyed.stream_key = sp.rng.stream_key(1)
    plain, other = layer.next_rng(), keyed.next_rng()
    assert int(plain[1]) == int(other[1]) == 0
    assert int(plain[0]) != int(other[0])
    assert torch.equal(layer.rng, keyed.rng)  # the buffers advanced alike: [seed, 1]
    x = torch.randn(4, 8)
    assert not torch.equal(layer(x), keyed(x))


def test_stream_keys_differ_per_rank_and_are_never_zero():
    keys = [sp.rng.stream_key(rank) for rank in range(256)]
    assert len(set(keys)) == 256 and 0 not in keys
    assert all(-2**63 <= k < 2**63 for k in keys)
