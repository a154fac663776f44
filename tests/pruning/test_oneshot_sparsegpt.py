"""SparseGPT (sparseprune.pruning.sparsegpt) against a plain transcription of the algorithm of
docs/METHODS.md 15 written here with explicit inverses of the remaining Hessian (no Cholesky, no
lazy block updates); its reconstruction error against Wanda's and magnitude's; the dampening
retry."""

import logging

import pytest
import torch
from torch import nn

import sparseprune as sp
from sparseprune.pruning.sparsegpt import inverse_cholesky, sparsegpt
from sparseprune.select import is_nm


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def top(scores, k):
    """The k largest entries of a 1-D list, ties to the lower index."""
    return sorted(range(len(scores)), key=lambda j: (-scores[j], j))[:k]


def transcription(W, X, *, density=None, nm=None, blocksize=128, percdamp=0.01):
    """OBS column by column: the inverse Hessian of the not-yet-visited columns F = {c..}
    gives the selection score w^2 / [H_F^-1]_00 and the update of the rest of the row."""
    W = W.double().clone()
    H = X.double().t() @ X.double()
    dead = H.diagonal() == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H += percdamp * H.diagonal().mean() * torch.eye(H.shape[0], dtype=H.dtype)
    rows, cols = W.shape
    inverses = [torch.linalg.inv(H[c:, c:]) for c in range(cols)]
    d = torch.tensor([inv[0, 0] for inv in inverses], dtype=W.dtype)
    keep = torch.ones(rows, cols, dtype=torch.bool)
    for start in range(0, cols, blocksize):
        end = min(start + blocksize, cols)
        if density is not None:
            scores = (W[:, start:end].square() / d[start:end]).flatten().tolist()
            k = round(density * rows * end) - round(density * rows * start)
            block = torch.zeros(len(scores), dtype=torch.bool)
            block[top(scores, k)] = True
            keep[:, start:end] = block.view(rows, end - start)
        for c in range(start, end):
            if nm is not None and (c - start) % nm[1] == 0:
                n, m = nm
                for r in range(rows):
                    scores = (W[r, c:c + m].square() / d[c:c + m]).tolist()
                    keep[r, c:c + m] = False
                    keep[r, [c + j for j in top(scores, n)]] = True
            q = torch.where(keep[:, c], W[:, c], 0.0)
            inv = inverses[c]
            W[:, c:] -= torch.outer((W[:, c] - q) / inv[0, 0], inv[0, :])
            W[:, c] = q
    return W, keep


def correlated(n, features, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(features, features, generator=g) / features ** 0.5
    scale = torch.linspace(0.2, 3.0, features)
    return (torch.randn(n, features, generator=g) @ mix + 0.3 * torch.randn(n, features,
                                                                           generator=g)) * scale


@pytest.mark.parametrize("target", [dict(density=0.4), dict(density=0.75), dict(nm=(2, 4)),
                                    dict(nm=(1, 4))])
def test_matches_the_transcription(target):
    g = torch.Generator().manual_seed(1)
    W = torch.randn(6, 24, generator=g, dtype=torch.float64)
    X = correlated(50, 24).double()
    X[:, 7] = 0.0  # a dead input
    expected_w, expected_keep = transcription(W, X, blocksize=8, **target)
    kw = dict(density=target.get("density"), pattern=target.get("nm"))
    got_w, got_keep, damp = sparsegpt(W, X.t() @ X, blocksize=8, **kw)
    assert damp == 0.01 and got_w.dtype == torch.float64
    assert torch.equal(got_keep, expected_keep)
    torch.testing.assert_close(got_w, expected_w, rtol=1e-9, atol=1e-10)
    assert not got_w[~got_keep].any() and not got_w[:, 7].any()
    if "density" in target:
        assert int(got_keep.sum()) == round(target["density"] * W.numel())
    else:
        assert is_nm(got_keep, *target["nm"])


def test_through_prune_oneshot_on_a_linear_layer():
    layer = nn.Linear(32, 10)
    W = layer.weight.detach().clone()
    X = correlated(64, 32, seed=2)
    model = sp.prune_oneshot(nn.Sequential(layer), "sparsegpt", density=0.5, blocksize=16,
                             data=[X[:30], X[30:]], progress=False)
    expected_w, expected_keep = transcription(W, X, density=0.5, blocksize=16)
    assert torch.equal(model[0].mask, expected_keep)
    torch.testing.assert_close(model[0].weight.detach().double(), expected_w, rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("target", [dict(density=0.5), dict(pattern="2:4")])
def test_lower_error_than_wanda_and_magnitude(target):
    X, held = correlated(600, 64, seed=3).split([400, 200])  # held out: the same distribution
    layer = nn.Linear(64, 32).requires_grad_(False)
    errors, held_errors = {}, {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        dense = nn.Sequential(nn.Linear(64, 32))
        dense.load_state_dict(nn.Sequential(layer).state_dict())
        model, report = sp.prune_oneshot(dense, method, data=[X[:200], X[200:]], progress=False,
                                         return_report=True, **target)
        errors[method] = report.layers[0].error
        delta = layer.weight.detach() - model[0].weight.detach()
        held_errors[method] = float((held @ delta.t()).norm() / (held @ layer.weight.t()).norm())
    for e in (errors, held_errors):
        assert e["sparsegpt"] < e["wanda"] < e["magnitude"], e


def test_dampening_is_retried_and_logged(caplog):
    H = torch.diag(torch.tensor([1.0, -0.5], dtype=torch.float64))  # indefinite
    with caplog.at_level(logging.WARNING, logger="sparseprune.pruning"):
        U, damp = inverse_cholesky(H, 0.01, layer="fc")
    assert damp == pytest.approx(10.0)  # 0.01, 0.1, 1 fail; 10 * mean(diag) = 2.5 works
    assert len(caplog.records) == 3 and "fc: Cholesky failed" in caplog.records[0].message
    damped = H + damp * H.diagonal().mean() * torch.eye(2, dtype=H.dtype)
    torch.testing.assert_close(U.t() @ U, torch.linalg.inv(damped))
    with pytest.raises(ValueError, match="fc: the Hessian is not positive definite"):
        inverse_cholesky(torch.diag(torch.tensor([1.0, -100.0])), 0.01, layer="fc")
