"""The shared exact top-k selection (sparseprune.select): kept counts, ties, floors, no revival."""

import math

import pytest
import torch

from sparseprune.select import keep_counts, select_top, top_k_masks


def tied_scores(gen, sizes):
    return [torch.randint(0, 4, (n,), generator=gen).float() for n in sizes]  # many ties


def dead_at_minus_inf(scores, alive, density, scope, min_layer_density):
    """The definition of "no revival": dead entries can never beat a live one."""
    filled = [s.masked_fill(~a, -math.inf) for s, a in zip(scores, alive)]
    total, per_layer = keep_counts([s.numel() for s in scores], density, scope, min_layer_density)
    if scope == "local":
        return [top_k_masks([s], k)[0] for s, k in zip(filled, per_layer)]
    for s, floor in zip(filled, per_layer):
        if floor:
            s.masked_fill_(top_k_masks([s], floor)[0], math.inf)
    return top_k_masks(filled, total)


@pytest.mark.parametrize("scope", ["global", "local"])
@pytest.mark.parametrize("min_layer_density", [0.0, 0.05])
def test_alive_selection_is_top_k_with_the_dead_ranked_last(scope, min_layer_density):
    gen = torch.Generator().manual_seed(0)
    sizes = [37, 5, 120]
    alive = None
    for density in (0.8, 0.5, 0.3, 0.1):
        scores = tied_scores(gen, sizes)
        before = [s.clone() for s in scores]
        masks = select_top(scores, density, scope=scope, min_layer_density=min_layer_density,
                           alive=alive)
        if alive is not None:
            expected = dead_at_minus_inf(scores, alive, density, scope, min_layer_density)
            assert all(torch.equal(m, e) for m, e in zip(masks, expected))
            assert all(not bool((m & ~a).any()) for m, a in zip(masks, alive))
        assert all(torch.equal(s, b) for s, b in zip(scores, before))  # inputs untouched
        total, per_layer = keep_counts(sizes, density, scope, min_layer_density)
        assert sum(int(m.sum()) for m in masks) == total
        if scope == "local":
            assert [int(m.sum()) for m in masks] == per_layer
        else:
            assert all(int(m.sum()) >= f for m, f in zip(masks, per_layer))
        alive = masks


def test_global_ties_break_by_layer_then_index():
    masks = select_top([torch.zeros(3), torch.zeros(4)], 4 / 7)
    assert [m.tolist() for m in masks] == [[True] * 3, [True, False, False, False]]


def test_floors_do_not_write_to_the_scores():
    scores = [torch.tensor([3.0, 2.0, 1.0]), torch.tensor([0.5, 0.25])]
    before = [s.clone() for s in scores]
    assert [m.tolist() for m in select_top(scores, 0.6)] == [[True] * 3, [False] * 2]
    masks = select_top(scores, 0.6, min_layer_density=0.3)  # each layer reserves its best one
    assert [m.tolist() for m in masks] == [[True, True, False], [True, False]]
    assert all(torch.equal(s, b) for s, b in zip(scores, before))


def test_bad_scope_and_floors():
    with pytest.raises(ValueError, match=r"scope must be one of \('global', 'local'\), got 'x'"):
        select_top([torch.zeros(3)], 0.5, scope="x")
    with pytest.raises(ValueError, match="min_layer_density=0.9 keeps at least"):
        select_top([torch.zeros(10), torch.zeros(10)], 0.1, min_layer_density=0.9)


# ---- N:M patterns ------------------------------------------------------------------------

import itertools  # noqa: E402

from sparseprune import _validate  # noqa: E402
from sparseprune.select import (is_nm, nm_candidates, nm_groups, nm_ungroup,  # noqa: E402
                                top_n_of_m)


@pytest.mark.parametrize("shape", [(6, 8), (3, 8, 3, 3), (5, 4, 1, 2)])
def test_nm_groups_are_consecutive_inputs_and_invert(shape):
    t = torch.arange(math.prod(shape), dtype=torch.float32).reshape(shape)
    groups = nm_groups(t, 4)
    assert groups.shape == (t.numel() // 4, 4)
    if len(shape) == 2:
        assert torch.equal(groups[0], t[0, :4])
    else:  # 4 consecutive input channels at one kernel tap
        assert torch.equal(groups[0], t[0, :4, 0, 0])
    assert torch.equal(nm_ungroup(groups, shape), t)


@pytest.mark.parametrize("n,m", [(1, 4), (2, 4), (4, 8), (3, 5)])
def test_top_n_of_m_keeps_the_largest_and_ties_go_to_the_lower_index(n, m):
    scores = torch.randn(7, 3 * m)
    mask = top_n_of_m(scores, n, m)
    assert is_nm(mask, n, m) and mask.shape == scores.shape
    for g, k in zip(nm_groups(scores, m), nm_groups(mask, m)):
        assert g[k].min() >= g[~k].max()
    tied = top_n_of_m(torch.zeros(2, m), n, m)
    assert tied[:, :n].all() and not tied[:, n:].any()


def test_nm_candidates_in_combinations_order():
    p = nm_candidates(2, 4)
    assert p.tolist() == [[1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 1], [0, 1, 1, 0], [0, 1, 0, 1],
                          [0, 0, 1, 1]]
    assert nm_candidates(3, 8).shape == (len(list(itertools.combinations(range(8), 3))), 8)


def test_nm_bad_input():
    with pytest.raises(ValueError, match=r"fc: an N:M pattern with M=4 needs the input size to be "
                                         r"a multiple of 4, got weight shape \[3, 6\].*exclude="):
        top_n_of_m(torch.randn(3, 6), 2, 4, layer="fc")
    for bad in ["2:2", "4:3", "0:4", "2:9", "2:3:1", "a:b", 24, None]:
        with pytest.raises(ValueError, match="pattern must be 'N:M' with 1 <= N < M <= 8"):
            _validate.pattern(bad)
    assert _validate.pattern("2:4") == (2, 4) and not is_nm(torch.ones(2, 6, dtype=torch.bool), 2, 4)
