"""Dtype casts after convert and torch.autocast work for every method; each masked layer of a
sampling method keeps its own noise stream (seeded at convert, advanced per sampling forward,
saved in the state dict)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import sparseprune as sp

METHODS = [("aslp", {}), ("aslp", {"rescale": "smart"}), ("supermask", {"rescale": "dwr"}),
           ("edge_popup", {}), ("fixed", {}), ("reparam", {}), ("hard_concrete", {}),
           ("lottery", {}), ("magnitude", {}), ("sensitivity", {})]


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 8), nn.ReLU(), nn.Linear(8, 3))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("method,options", METHODS)
def test_casting_after_convert(method, options, dtype):
    model = sp.convert(_net(), method, **options).to(dtype)
    x = torch.randn(4, 2, 6, 6, dtype=dtype)
    out = model(x)
    assert out.dtype == dtype
    out.float().square().sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and g.dtype == dtype for g in grads)
    with torch.no_grad():
        assert model.eval()(x).dtype == dtype


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("method,options", METHODS)
def test_autocast(method, options, dtype):
    model = sp.convert(_net(), method, **options)
    x = torch.randn(4, 2, 6, 6)
    with torch.autocast("cpu", dtype=dtype):
        out = model(x)
    assert out.dtype == dtype  # the last layer ran in the autocast dtype
    out.float().square().sum().backward()
    for p in model.parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.dtype == p.dtype == torch.float32


def test_stream_is_seeded_at_convert_and_lives_in_the_state_dict():
    torch.manual_seed(5)
    a = sp.convert(_net(), "aslp")
    torch.manual_seed(5)
    b = sp.convert(_net(), "aslp")
    seeds = [layer.rng[0].item() for _, layer in sp.masked_layers(a)]
    assert len(set(seeds)) == 3  # one stream per layer
    assert all(layer.rng[1] == 0 for _, layer in sp.masked_layers(a))
    assert "3.rng" in a.state_dict() and "rng" not in sp.convert(nn.Linear(2, 2), "fixed").state_dict()
    x = torch.randn(4, 2, 6, 6)
    torch.randn(100)  # the global generator no longer matters after convert
    assert torch.equal(a(x), b(x))
    assert all(layer.rng[1] == 1 for _, layer in sp.masked_layers(a))
    twin = copy.deepcopy(a)  # samples what the original samples next
    assert torch.equal(twin(x), a(x))
    a.eval()
    a(x)
    assert all(layer.rng[1] == 2 for _, layer in sp.masked_layers(a))  # eval: no sample


def test_state_dict_resumes_the_stream():
    torch.manual_seed(0)
    model = sp.convert(_net(), "hard_concrete")
    x = torch.randn(4, 2, 6, 6)
    model(x)
    state = copy.deepcopy(model.state_dict())
    expected = model(x)
    torch.manual_seed(123)
    fresh = sp.convert(_net(), "hard_concrete")
    fresh.load_state_dict(state)
    assert torch.equal(fresh(x), expected)


def test_functional_api_keeps_its_generator():
    weight, scores = torch.randn(5, 6), torch.randn(5, 6)
    a = sp.functional.aslp_weight(weight, scores, generator=torch.Generator().manual_seed(1))
    b = sp.functional.aslp_weight(weight, scores, rng=sp.rng.next_rng(
        torch.Generator().manual_seed(1)))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="either generator .* or rng"):
        sp.functional.aslp_weight(weight, scores, generator=torch.Generator(),
                                  rng=sp.rng.rng_state(1, 2))
