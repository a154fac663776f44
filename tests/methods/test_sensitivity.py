"""Sensitivity-driven regularisation: the "sensitivity" method, S (output_sensitivity) and the
gated decay (decay_, sensitivity_step)."""

import copy

import pytest
import torch
from torch import nn

import sparseprune as sp
from sparseprune import sensitivity as sens
from sparseprune.nn import MaskedLinear

from helpers import sensitivity_batch, sensitivity_net, small_sensitivity_base as small_net

COMBOS = [(v, o) for v in ("unspecific", "specific") for o in ("softmax", "logits")]


def reference_sensitivity(model, x, labels, variant, output):
    """Per-output gradients of the batch-mean output on a plain copy with masked weights."""
    plain = sp.finalize(copy.deepcopy(model))
    weights = [plain[0].weight, plain[3].weight]
    masks = [model[0].mask, model[3].mask]  # a pruned weight has no effect: S = 0
    y = plain(x)
    y = y.softmax(1) if output == "softmax" else y
    if variant == "specific":
        target = sum(y[i, labels[i]] for i in range(len(x))) / len(x)
        return [g.abs() * m for g, m in zip(torch.autograd.grad(target, weights), masks)]
    total = [torch.zeros_like(w) for w in weights]
    for k in range(y.shape[1]):
        for t, g in zip(total, torch.autograd.grad(y[:, k].mean(), weights, retain_graph=True)):
            t += g.abs()
    return [t / y.shape[1] * m for t, m in zip(total, masks)]


def test_registered_with_validated_options_and_repr():
    assert "sensitivity" in sp.methods.available()
    model = sp.convert(small_net(), "sensitivity")
    assert isinstance(model[0].method, sp.methods.fixed.FixedMask)
    assert model[0].mask.all() and sp.mask_parameters(model) == {}
    assert "method=sensitivity()" in repr(model[0])
    layer = MaskedLinear(3, 2, method="sensitivity", strength=1e-3, output="logits")
    assert "method=sensitivity(strength=0.001, output='logits')" in repr(layer)
    for options, error, pattern in [
            (dict(strength=-1e-3), ValueError, "strength must be a finite number >= 0, got -0.001"),
            (dict(strength=float("nan")), ValueError, "strength must be a finite number"),
            (dict(strength="big"), TypeError, "strength must be a number, got str"),
            (dict(variant="both"), ValueError, "variant must be one of .* got 'both'"),
            (dict(output="probs"), ValueError, "output must be one of .* got 'probs'")]:
        with pytest.raises(error, match=pattern):
            sp.convert(small_net(), "sensitivity", **options)


@pytest.mark.parametrize("variant,output", COMBOS)
def test_sensitivity_equals_explicit_per_output_gradients(variant, output):
    model = sensitivity_net(variant, output)
    x, y = sensitivity_batch()
    got = sens.output_sensitivity(model, x, y)
    expected = reference_sensitivity(model, x, y, variant, output)
    assert list(got) == ["0", "3"]
    for name, e in zip(got, expected):
        torch.testing.assert_close(got[name], e)
        assert (got[name][~model.get_submodule(name).mask] == 0).all()  # pruned: S = 0


@pytest.mark.parametrize("variant,output", COMBOS)
def test_sensitivity_equals_finite_differences(variant, output):
    model = sensitivity_net(variant, output).double()
    x, y = sensitivity_batch()
    x = x.double()
    got = sens.output_sensitivity(model, x, y)
    plain = sp.finalize(copy.deepcopy(model))

    def outputs():  # the per-class quantities whose derivatives S averages
        with torch.no_grad():
            out = plain(x)
            out = out.softmax(1) if output == "softmax" else out
            if variant == "specific":
                return out.gather(1, y[:, None]).mean()[None]
            return out.mean(0)

    h = 1e-6
    for name in ("0", "3"):
        w, mask = plain.get_submodule(name).weight, model.get_submodule(name).mask
        fd = torch.zeros_like(w)
        for j in mask.flatten().nonzero().flatten().tolist():  # kept weights only
            flat = w.data.view(-1)
            flat[j] += h
            up = outputs()
            flat[j] -= 2 * h
            down = outputs()
            flat[j] += h
            fd.view(-1)[j] = ((up - down) / (2 * h)).abs().mean()
        torch.testing.assert_close(got[name], fd, rtol=1e-6, atol=1e-9)


def test_hand_computed_sensitivity_of_a_linear_layer():
    # Logits of one linear layer: d ybar_k / d W[k, j] = mean_i x[i, j], and no other output
    # depends on W[k, j]. Unspecific: S = |mean_i x_ij| / C. Specific: |sum_{i: y_i=k} x_ij| / B.
    layer = MaskedLinear(4, 3, method="sensitivity", output="logits")
    x, labels = torch.randn(6, 4), torch.tensor([0, 2, 2, 1, 0, 0])
    s = sens.output_sensitivity(layer, x)[""]
    torch.testing.assert_close(s, (x.mean(0).abs() / 3).expand(3, 4))
    layer.method.variant = "specific"
    s = sens.output_sensitivity(layer, x, labels)[""]
    expected = torch.stack([x[labels == k].sum(0).abs() / 6 for k in range(3)])
    torch.testing.assert_close(s, expected)


def test_grads_and_running_statistics_are_left_alone():
    model = sp.convert(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(),
                                     nn.Linear(8, 3)), "sensitivity")
    model[0].weight.grad = torch.randn_like(model[0].weight)
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    x, y = torch.randn(4, 1, 4, 4), torch.randint(3, (4,))
    sens.output_sensitivity(model, x, y)
    sens.sensitivity_step(model, x, y)
    for n, p in model.named_parameters():
        assert (p.grad is None) if grads[n] is None else torch.equal(p.grad, grads[n]), n
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())


def test_decay_equals_its_formula_and_keeps_pruned_weights_at_zero():
    model = sensitivity_net(strength=0.3)
    before = {n: l.weight.detach().clone() for n, l in sp.masked_layers(model)}
    s = {n: 2 * torch.rand_like(w) for n, w in before.items()}  # both sides of S = 1
    with torch.no_grad():
        model[0].weight[~model[0].mask] = 5.0  # as a momentum step could leave them
    sens.decay_(model, s)
    for n, layer in sp.masked_layers(model):
        expected = before[n] - 0.3 * before[n] * torch.clamp(1 - s[n], min=0)
        torch.testing.assert_close(layer.weight.detach(), expected * layer.mask)
        assert torch.equal(layer.weight[s[n] >= 1], before[n][s[n] >= 1])  # exactly


def test_weights_with_sensitivity_at_least_one_are_untouched_exactly():
    # Logits of one linear layer: S = |mean_i x_ij| / C, so columns with a large input mean
    # are sensitive (S >= 1) and the others decay.
    layer = MaskedLinear(4, 3, method="sensitivity", output="logits", strength=0.5)
    x = torch.randn(8, 4) + torch.tensor([9.0, 3.5, 0.0, -7.0])  # S ~ 3, ~1.2, ~0, ~2.3
    s = sens.output_sensitivity(layer, x)[""]
    sensitive = s >= 1
    assert sensitive.any() and not sensitive.all()
    before = layer.weight.detach().clone()
    sens.sensitivity_step(layer, x)
    assert torch.equal(layer.weight[sensitive], before[sensitive])
    assert (layer.weight[~sensitive].abs() < before[~sensitive].abs()).all()


def test_bad_input_names_the_argument():
    model = sensitivity_net("specific")
    x, y = sensitivity_batch()
    with pytest.raises(ValueError, match="labels are required for variant='specific'"):
        sens.sensitivity_step(model, x)
    with pytest.raises(ValueError, match=r"labels must have shape \[5\]"):
        sens.output_sensitivity(model, x, y[:3])
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 3\)"):
        sens.output_sensitivity(model, x, y + 3)
    with pytest.raises(TypeError, match="labels must be an int64 or int32 Tensor, got dtype"):
        sens.output_sensitivity(model, x, y.float())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"sensitivity\['3'\] must be a Tensor of the weight's"):
        sens.decay_(model, {"0": torch.zeros_like(model[0].weight)})
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="no 'sensitivity' layers"):
        sens.sensitivity_step(sp.convert(small_net(), "fixed"), x, y)
    mixed = sp.convert(small_net(), "sensitivity", include="0")
    sp.convert(mixed, "sensitivity", variant="specific")
    with pytest.raises(ValueError, match="must share variant and output.*'3' has variant='spec"):
        sens.output_sensitivity(mixed, x, y)
    model[3].weight.requires_grad_(False)
    with pytest.raises(ValueError, match="weight of layer '3' does not require grad"):
        sens.output_sensitivity(model, x, y)
