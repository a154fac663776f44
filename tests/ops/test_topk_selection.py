"""Edge-Popup's selection on large layers (Note [Sampled top-k selection] in csrc/host/topk.cpp):
one pass over the scores when a sample brackets the threshold, the radix steps when it does not.
Either way the masks equal the reference's bit for bit (ties kept in index order), on every ISA,
and topk_threshold returns the k-th largest |s|."""

import pytest
import torch

from sparseprune import ops, reference

from conftest import run_on_each_isa

NUMEL = 1 << 19  # above the sampled path's 2^18 minimum


def _scores(kind: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    if kind == "randn":
        return torch.randn(NUMEL, generator=g)
    if kind == "few_values":  # massive ties: the band overflows or holds mostly the threshold
        return torch.randint(-6, 7, (NUMEL,), generator=g).float()
    if kind == "all_equal":
        return torch.full((NUMEL,), -0.25)
    if kind == "sorted":  # magnitudes in index order: the band's keys sit in one task's tiles
        return torch.linspace(0, 1, NUMEL)
    if kind == "sorted_desc":
        return torch.linspace(1, 0, NUMEL)
    if kind == "periodic":  # a period that could alias with a plain stride sample
        return torch.arange(NUMEL).remainder(256).float().sub(100)
    if kind == "outliers":  # mostly zeros, a few large ones
        s = torch.zeros(NUMEL)
        s[torch.randperm(NUMEL, generator=g)[:1000]] = torch.randn(1000, generator=g)
        return s
    if kind == "ties_at_threshold":  # continuous values plus a block of one repeated value
        s = torch.randn(NUMEL, generator=g)
        s[torch.randperm(NUMEL, generator=g)[:5000]] = 0.6744898  # near the median of |randn|
        return s
    raise ValueError(kind)


KINDS = ["randn", "few_values", "all_equal", "sorted", "sorted_desc", "periodic", "outliers",
         "ties_at_threshold"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("density", [0.002, 0.3, 0.5, 0.97])
def test_large_layer_mask_matches_reference(kind, density):
    s = _scores(kind).reshape(512, -1)
    w = torch.randn(s.shape)
    expect = reference.edge_popup_weight(w, s, density=density)
    got = run_on_each_isa(
        lambda: ops.masked_weight(w, s, None, "edge_popup", "none", 1.0, density,
                                  torch.zeros(2, dtype=torch.int64)))
    for isa, out in got.items():
        assert torch.equal(out, expect), isa
    k = round(density * s.numel())
    threshold = torch.ops.sparseprune.topk_threshold(s, density)
    assert threshold.dtype == torch.float32 and threshold.dim() == 0
    assert threshold.item() == s.abs().flatten().topk(k).values.min().item()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_large_layer_other_dtypes(dtype):
    s = _scores("randn").reshape(512, -1).to(dtype)
    w = torch.randn(s.shape, dtype=dtype)
    g = torch.randn(s.shape, dtype=dtype)
    expect = reference.edge_popup_weight(w, s, density=0.4)

    def run():
        ws, ss = w.clone().requires_grad_(), s.clone().requires_grad_()
        out = ops.masked_weight(ws, ss, None, "edge_popup", "none", 1.0, 0.4,
                                torch.zeros(2, dtype=torch.int64))
        out.backward(g)
        return out, ws.grad, ss.grad

    results = run_on_each_isa(run)
    first = next(iter(results.values()))
    wr, sr = w.clone().requires_grad_(), s.clone().requires_grad_()
    reference.edge_popup_weight(wr, sr, density=0.4).backward(g)
    assert torch.equal(first[0], expect)
    assert torch.equal(first[1], wr.grad)  # g * mask: exact
    torch.testing.assert_close(first[2], sr.grad)
    for out in results.values():
        for a, b in zip(first, out):
            assert torch.equal(a, b)


def test_topk_threshold_small_and_edges():
    s = torch.tensor([[0.5, -2.0, 1.0], [-1.0, 0.0, 3.0]])
    assert torch.ops.sparseprune.topk_threshold(s, 0.5).item() == 1.0  # 3, -2, then 1 / -1 tie
    assert torch.ops.sparseprune.topk_threshold(s, 1.0).item() == 0.0  # everything kept
    assert torch.ops.sparseprune.topk_threshold(torch.empty(0), 0.5).item() == 0.0
    with pytest.raises(ValueError, match="topk_threshold: density"):
        torch.ops.sparseprune.topk_threshold(s, 0.0)


def test_topk_threshold_opcheck():
    s = _scores("randn").reshape(512, -1)
    torch.library.opcheck(torch.ops.sparseprune.topk_threshold.default, (s, 0.5))
    torch.library.opcheck(torch.ops.sparseprune.topk_threshold.default, (s[:3, :5].clone(), 0.4))
