"""Masked layers and the public entry points: convert, finalize, sparsity_report, methods."""

import copy
import io

import pytest
import torch
from torch import nn

import sparseprune as sp
from sparseprune.nn import MaskedConv2d, MaskedLinear


def small_net():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding="same"), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"), nn.ReLU(),
                         nn.Flatten(), nn.Linear(6 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 3))


def randomize_scores(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in sp.masked_layers(model):
            layer.scores.copy_(torch.randn(layer.scores.shape, generator=g))
            if layer.scale is not None:
                layer.scale.fill_(1.5)
    return model


def test_methods_available():
    assert "aslp" in sp.methods.available()


def test_convert_swaps_layers_and_keeps_parameters():
    model = small_net()
    weights = [m.weight for m in model if isinstance(m, (nn.Linear, nn.Conv2d))]
    sp.convert(model, "aslp", rescale="smart")
    masked = [m for m in model if isinstance(m, (MaskedLinear, MaskedConv2d))]
    assert len(masked) == 4
    assert all(m.weight is w for m, w in zip(masked, weights))  # same Parameter objects
    assert all(not m.weight.requires_grad and m.scores.requires_grad for m in masked)
    assert isinstance(model[0], nn.Conv2d)  # still usable where a Conv2d is expected
    assert "method=aslp(rescale='smart')" in repr(model[0])


def test_convert_include_exclude():
    model = small_net()
    sp.convert(model, "aslp", include=["6", "8"])
    assert [type(m).__name__ for m in model if isinstance(m, (nn.Linear, nn.Conv2d))] == \
        ["Conv2d", "Conv2d", "MaskedLinear", "MaskedLinear"]
    model = small_net()
    sp.convert(model, "aslp", exclude=lambda name, m: isinstance(m, nn.Conv2d))
    assert isinstance(model[0], nn.Conv2d) and not isinstance(model[0], MaskedConv2d)
    assert isinstance(model[6], MaskedLinear)
    model = small_net()
    sp.convert(model, "aslp", include="[0-3]")
    assert isinstance(model[3], MaskedConv2d) and not isinstance(model[6], MaskedLinear)


def test_convert_single_layer_returns_the_masked_layer():
    layer = sp.convert(nn.Linear(5, 3), "aslp")
    assert isinstance(layer, MaskedLinear)


def test_training_step_updates_only_scores():
    model = sp.convert(small_net(), "aslp", rescale="smart")
    frozen = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0, momentum=0.9)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(8, 1, 8, 8)), torch.randint(0, 3, (8,))).backward()
        opt.step()
    for name, p in model.named_parameters():
        if name in frozen:
            assert torch.equal(p, frozen[name]), name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_eval_mode_is_deterministic_and_equals_finalize():
    model = randomize_scores(sp.convert(small_net(), "aslp", rescale="smart")).eval()
    x = torch.randn(5, 1, 8, 8)
    out = model(x)
    assert torch.equal(out, model(x))
    dense = sp.finalize(copy.deepcopy(model))
    assert not any(isinstance(m, (MaskedLinear, MaskedConv2d)) for m in dense.modules())
    assert not dense.training
    torch.testing.assert_close(dense(x), out, rtol=1e-6, atol=1e-6)
    # Pruned weights are exactly zero, kept ones carry the Smart Rescale factor.
    for masked, plain in zip(model.modules(), dense.modules()):
        if isinstance(masked, (MaskedLinear, MaskedConv2d)):
            keep = masked.scores >= 0
            assert torch.equal(plain.weight[~keep], torch.zeros_like(plain.weight[~keep]))
            torch.testing.assert_close(plain.weight[keep], masked.weight[keep] * 1.5)


def test_training_mode_samples_and_sample_in_eval():
    model = randomize_scores(sp.convert(small_net(), "aslp"))
    x = torch.randn(5, 1, 8, 8)
    assert not torch.equal(model(x), model(x))  # a fresh mask every forward
    model.eval()
    assert torch.equal(model(x), model(x))
    sampled = randomize_scores(sp.convert(small_net(), "aslp", sample_in_eval=True)).eval()
    assert not torch.equal(sampled(x), sampled(x))


def test_manual_seed_reproduces_training():
    def run():
        torch.manual_seed(7)
        model = sp.convert(small_net(), "aslp", rescale="smart")
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=5.0)
        for _ in range(3):
            opt.zero_grad()
            model(torch.randn(4, 1, 8, 8)).square().mean().backward()
            opt.step()
        return model.state_dict()

    a, b = run(), run()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_generator_isolates_layer_randomness():
    weight, scores = torch.randn(20, 10), torch.zeros(20, 10)
    x = torch.randn(3, 10)
    g = torch.Generator().manual_seed(0)
    a = sp.functional.masked_linear(x, weight, scores, generator=g)
    torch.randn(100)  # advancing the global generator changes nothing
    g = torch.Generator().manual_seed(0)
    assert torch.equal(a, sp.functional.masked_linear(x, weight, scores, generator=g))


def test_state_dict_round_trip():
    model = randomize_scores(sp.convert(small_net(), "aslp", rescale="smart"))
    keys = set(model.state_dict())
    assert {"0.weight", "0.bias", "0.scores", "0.scale", "8.scores"} <= keys
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    fresh = sp.convert(small_net(), "aslp", rescale="smart")
    fresh.load_state_dict(torch.load(io.BytesIO(buffer.getvalue())))
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(model.eval()(x), fresh.eval()(x))


def test_whole_model_pickles():
    model = sp.convert(small_net(), "aslp")
    buffer = io.BytesIO()
    torch.save(model, buffer)
    loaded = torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
    assert isinstance(loaded[0], MaskedConv2d) and loaded[0].method.name == "aslp"


def test_signed_constant_and_train_weights():
    model = sp.convert(small_net(), "aslp", signed_constant=True, train_weights=True)
    for m in model.modules():
        if isinstance(m, (MaskedLinear, MaskedConv2d)):
            magnitudes = m.weight.detach().abs().unique()
            assert magnitudes.numel() == 1  # sign(w) * std(w)
            assert m.weight.requires_grad and m.bias.requires_grad


def test_scores_dtype_option():
    layer = sp.convert(nn.Linear(8, 4), "aslp", scores_dtype=torch.bfloat16)
    assert layer.scores.dtype == torch.bfloat16
    layer(torch.randn(2, 8)).sum().backward()
    assert layer.scores.grad.dtype == torch.bfloat16


def test_sparsity_report_counts():
    model = small_net()
    sp.convert(model, "aslp", include=["0", "6"])
    with torch.no_grad():
        model[0].scores.fill_(-1.0)
        model[0].scores[0].fill_(1.0)  # first output channel kept: 9 weights
        model[6].scores.fill_(1.0)
        model[8].weight.zero_()
        model[8].weight[0, :5] = 1.0  # a plain layer counts its nonzeros
    report = sp.sparsity_report(model)
    rows = {r.name: r for r in report.layers}
    assert (rows["0"].kept, rows["0"].total) == (9, 36)
    assert (rows["3"].kept, rows["3"].total) == (216, 216)
    assert (rows["6"].kept, rows["6"].total) == (96 * 16, 96 * 16)
    assert (rows["8"].kept, rows["8"].total) == (5, 48)
    assert report.kept == 9 + 216 + 1536 + 5 and report.total == 36 + 216 + 1536 + 48
    assert report.to_dict()["density"] == pytest.approx(report.kept / report.total)
    text = str(report)
    assert "MaskedConv2d(aslp)" in text and "total" in text and "0.2500" in text


@pytest.mark.parametrize("density", [0.5, 0.1, 0.013, 1.0])
@pytest.mark.parametrize("scope", ["global", "local"])
def test_finalize_with_density_is_exact(density, scope):
    model = randomize_scores(sp.convert(small_net(), "aslp"))
    with torch.no_grad():
        model[6].scores[:4].fill_(0.25)  # ties
    sizes = [m.weight.numel() for m in model.modules() if isinstance(m, (MaskedLinear, MaskedConv2d))]
    sp.finalize(model, density=density, scope=scope)
    counts = [int(torch.count_nonzero(m.weight)) for m in model.modules()
              if isinstance(m, (nn.Linear, nn.Conv2d))]
    if scope == "global":
        assert sum(counts) == round(density * sum(sizes))
    else:
        assert counts == [round(density * n) for n in sizes]


def test_final_masks_ties_are_deterministic():
    layer = sp.convert(nn.Linear(10, 1), "aslp")
    with torch.no_grad():
        layer.scores.fill_(0.0)
    mask = sp.final_masks(layer, density=0.3)[""]
    assert mask.flatten().tolist() == [True] * 3 + [False] * 7


def test_converted_model_runs_under_torch_compile():
    model = sp.convert(small_net(), "aslp", rescale="smart")
    compiled = torch.compile(model)
    x = torch.randn(4, 1, 8, 8)
    for _ in range(2):
        out = compiled(x)
        out.sum().backward()
    assert out.shape == (4, 3)
    assert model[0].scores.grad is not None and model[0].scale.grad is not None


def test_mask_parameters_groups_by_name():
    model = sp.convert(small_net(), "aslp", rescale="smart")
    groups = sp.mask_parameters(model)
    assert set(groups) == {"scores", "scale"}
    assert len(groups["scores"]) == 4 and all(p.shape == (1,) for p in groups["scale"])
    plain = sp.mask_parameters(sp.convert(small_net(), "aslp"))
    assert set(plain) == {"scores"}


def test_seed_paper_copy_is_the_same_network_on_the_paper_code_path():
    model = randomize_scores(sp.convert(small_net(), "aslp", rescale="smart"))
    twin = sp.reference.seed_paper_copy(model)
    layers = [m for m in twin.modules() if isinstance(m, sp.reference.SeedPaperLayer)]
    masked = [m for _, m in sp.masked_layers(model)]
    assert len(layers) == len(masked) == 4
    for paper, ours in zip(layers, masked):
        assert torch.equal(paper.layer.weight, ours.weight) and torch.equal(paper.scores, ours.scores)
        assert paper.scale is not None and not paper.layer.weight.requires_grad
    out = twin(torch.randn(3, 1, 8, 8))
    out.sum().backward()
    assert out.shape == (3, 3) and all(m.scores.grad is not None for m in layers)
    with pytest.raises(ValueError, match="scores must have the weight's shape"):
        sp.reference.gumbel_softmax_weight(torch.randn(2, 3), torch.randn(3, 2))


def test_every_method_is_available():
    assert {"aslp", "supermask", "edge_popup", "fixed"} <= set(sp.methods.available())


@pytest.mark.parametrize("method,options", [("supermask", dict(rescale="dwr")),
                                            ("supermask", dict(rescale="smart")),
                                            ("edge_popup", dict(density=0.5)),
                                            ("aslp", dict(rescale="dwr")),
                                            ("fixed", {})])
def test_each_method_trains_and_finalizes_on_any_model(method, options):
    model = sp.convert(small_net(), method, **options)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(4, 1, 8, 8)).square().mean().backward()
        opt.step()
    model.eval()
    x = torch.randn(3, 1, 8, 8)
    dense = sp.finalize(copy.deepcopy(model))
    torch.testing.assert_close(dense(x), model(x), rtol=1e-5, atol=1e-6)
    if method == "edge_popup":  # exactly the kept fraction in every layer
        for m in dense.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                assert int(torch.count_nonzero(m.weight)) == round(0.5 * m.weight.numel())


def test_supermask_dwr_final_scale_is_recomputed_on_the_final_mask():
    layer = sp.convert(nn.Linear(10, 4), "supermask", rescale="dwr")
    with torch.no_grad():
        layer.scores.fill_(-1.0)
        layer.scores[0].fill_(1.0)  # 10 of 40 kept: factor 4
    dense = sp.finalize(copy.deepcopy(layer))
    torch.testing.assert_close(dense.weight[0], layer.weight[0] * 4.0)
    assert torch.count_nonzero(dense.weight[1:]) == 0


def test_sampled_masks_in_eval():
    model = randomize_scores(sp.convert(small_net(), "supermask", rescale="dwr")).eval()
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(model(x), model(x))
    with sp.sampled_masks(model):
        assert not torch.equal(model(x), model(x))
    assert torch.equal(model(x), model(x))  # restored


def test_edge_popup_initialisations():
    layer = sp.convert(nn.Linear(50, 20), "edge_popup", density=0.25,
                       weight_init="signed_constant", scale_fan=True)
    expected = (2.0 / (50 * 0.25)) ** 0.5
    torch.testing.assert_close(layer.weight.abs(), torch.full((20, 50), expected))
    assert layer.scores.abs().max() <= 1 / 50 ** 0.5  # kaiming_uniform(a=sqrt(5))
    normal = sp.convert(nn.Linear(400, 300), "edge_popup", weight_init="kaiming_normal")
    assert abs(normal.weight.std().item() - (2 / 400) ** 0.5) < 0.002
