"""The "fixed" method: a boolean mask buffer, weight * mask in the forward, set_masks."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparseprune as sp
from sparseprune.nn import MaskedConv2d, MaskedLinear


def small_net():
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(3 * 5 * 5, 4))


def random_masks(model, p=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(layer.weight.shape, generator=g) < p
            for n, layer in sp.masked_layers(model)}


def test_fixed_is_registered_and_starts_with_everything_kept():
    assert "fixed" in sp.methods.available()
    dense = small_net()
    model = sp.convert(copy.deepcopy(dense), "fixed")
    for _, layer in sp.masked_layers(model):
        assert layer.mask.dtype == torch.bool and layer.mask.all()
        assert layer.weight.requires_grad
    assert sp.mask_parameters(model) == {}  # owns no trainable parameters
    assert "method=fixed()" in repr(model[0])
    x = torch.randn(2, 1, 5, 5)
    torch.testing.assert_close(model(x), dense(x))


def test_forward_equals_the_dense_layer_with_masked_weights():
    model = sp.convert(small_net(), "fixed")
    masks = random_masks(model)
    weights = {n: layer.weight.detach().clone() for n, layer in sp.masked_layers(model)}
    sp.set_masks(model, masks)
    x = torch.randn(2, 1, 5, 5)
    h = F.conv2d(x, weights["0"] * masks["0"], model[0].bias, padding=1)
    expected = F.linear(torch.relu(h).flatten(1), weights["3"] * masks["3"], model[3].bias)
    torch.testing.assert_close(model(x), expected)


def test_set_masks_zeroes_pruned_weights_and_their_gradients():
    model = sp.convert(small_net(), "fixed")
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    masks = random_masks(model)
    kept = {n: layer.weight[masks[n]].clone() for n, layer in sp.masked_layers(model)}
    assert sp.set_masks(model, masks) is model
    for n, layer in sp.masked_layers(model):
        assert torch.equal(layer.mask, masks[n]) and layer.mask is not masks[n]  # copied
        assert (layer.weight[~masks[n]] == 0).all() and (layer.weight.grad[~masks[n]] == 0).all()
        assert torch.equal(layer.weight[masks[n]], kept[n])
        assert (layer.weight.grad[masks[n]] == 1).all()


def test_gradient_of_pruned_weights_is_exactly_zero_even_if_upstream_is_not_finite():
    layer = MaskedLinear(3, 2, method="fixed")
    mask = torch.tensor([[True, False, True], [False, True, True]])
    layer.method.set_mask(layer, mask)
    out = layer(torch.tensor([[1.0, float("inf"), 2.0]]))
    out.sum().backward()
    assert (layer.weight.grad[~mask] == 0).all()


def test_set_mask_none_rezeroes_after_rewinding_weights():
    layer = MaskedConv2d(2, 3, 3, method="fixed")
    mask = torch.rand(layer.weight.shape) < 0.3
    layer.method.set_mask(layer, mask)
    with torch.no_grad():
        layer.weight.normal_()  # e.g. rewound to the initial values
    layer.method.set_mask(layer)
    assert (layer.weight[~mask] == 0).all() and torch.equal(layer.mask, mask)


def test_finalize_and_report_use_the_buffer():
    model = sp.convert(small_net(), "fixed")
    masks = random_masks(model, p=0.4)
    sp.set_masks(model, masks)
    report = sp.sparsity_report(model)
    assert report.kept == sum(int(m.sum()) for m in masks.values())
    x = torch.randn(2, 1, 5, 5)
    expected = model(x)
    dense = sp.finalize(model)
    assert type(dense[0]) is nn.Conv2d and type(dense[3]) is nn.Linear
    torch.testing.assert_close(dense(x), expected)


def test_finalize_with_a_density_prunes_by_magnitude_within_the_mask():
    layer = MaskedLinear(4, 1, bias=False, method="fixed")
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.1, -5.0, 3.0, -0.2]]))
    layer.method.set_mask(layer, torch.tensor([[True, False, True, True]]))
    masks = sp.final_masks(layer, density=0.5)
    assert masks[""].tolist() == [[False, False, True, True]]  # 3.0 and -0.2; -5.0 was pruned


def test_set_masks_bad_input_changes_nothing():
    model = sp.convert(small_net(), "fixed")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    good = random_masks(model)
    cases = [
        ({"0": good["0"], "7": good["3"]}, ValueError, "names layer '7', which is not a masked layer"),
        ({"0": good["0"], "3": good["3"].float()}, TypeError, r"masks\['3'\] must be a bool Tensor, got dtype torch.float32"),
        ({"3": good["3"][:, :5]}, ValueError, r"masks\['3'\] must have the weight's shape \[4, 75\], got \[4, 5\]"),
        ({"3": [True]}, TypeError, r"masks\['3'\] must be a bool Tensor, got list"),
        ([good["0"]], TypeError, "masks must be a mapping of layer name -> bool Tensor, got list"),
    ]
    for masks, error, pattern in cases:
        with pytest.raises(error, match=pattern):
            sp.set_masks(model, masks)
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    aslp = sp.convert(small_net(), "aslp")
    with pytest.raises(ValueError, match="layer '0' uses method 'aslp'; only 'fixed' layers"):
        sp.set_masks(aslp, {"0": good["0"]})
    with pytest.raises(ValueError, match="unknown option"):
        sp.convert(small_net(), "fixed", density=0.5)
