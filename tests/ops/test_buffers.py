"""Weight-sized CPU buffers come from a pool of reused huge-page blocks (Note [Large CPU buffers],
csrc/host/buffers.cpp): results must not depend on what a reused block held before, and the
tensors handed to users must behave as ordinary CPU tensors."""

import torch

import sparseprune as sp
from sparseprune import ops
from sparseprune.ops.rng import rng_state

SHAPE = (1024, 1100)  # 4.3 MiB of float32: above the pool's 4 MiB minimum


def _step(layer, x, method, rng, **options):
    w, s = layer
    s = s.detach().requires_grad_()
    out = ops.masked_linear(x, w, s, None, None, method, options.get("rescale", "none"), 1.0,
                            options.get("density", 1.0), rng)
    out.square().mean().backward()
    return out.detach(), s.grad


def test_reused_blocks_give_the_same_results():
    w, s, x = torch.randn(SHAPE), torch.randn(SHAPE), torch.randn(8, SHAPE[1])
    for method, options in (("aslp", {}), ("supermask", {"rescale": "dwr"}),
                            ("edge_popup", {"density": 0.3})):
        first = _step((w, s), x, method, rng_state(4, 5), **options)
        # Dirty the pool with other values of the same size, then repeat the step.
        for _ in range(3):
            ops.masked_weight(torch.full(SHAPE, 7.0), s, None, "aslp", "none", 1.0, 1.0,
                              rng_state(9, 9))
        again = _step((w, s), x, method, rng_state(4, 5), **options)
        for a, b in zip(first, again):
            assert torch.equal(a, b), method
        # The fused layer equals F.linear with the fused masked weight.
        expect = torch.nn.functional.linear(
            x, ops.masked_weight(w, s, None, method, options.get("rescale", "none"), 1.0,
                                 options.get("density", 1.0), rng_state(4, 5)))
        torch.testing.assert_close(first[0], expect, rtol=1e-5, atol=1e-5)


def test_pooled_outputs_are_ordinary_tensors():
    w, s = torch.randn(SHAPE), torch.randn(SHAPE, requires_grad=True)
    out = sp.functional.aslp_weight(w, s, generator=torch.Generator().manual_seed(0))
    out.sum().backward()
    for t in (out, s.grad):
        assert t.is_contiguous() and t.device.type == "cpu" and t.shape == SHAPE
        kept = t.detach().clone()
        grown = t.detach().resize_(2 * t.numel())  # the storage grows through the allocator
        assert torch.equal(grown[: kept.numel()].view(SHAPE), kept)
    s.grad = None
    del out
