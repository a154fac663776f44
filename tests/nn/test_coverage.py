"""The layers transformers and audio/vision models use are masked, counted and finalized like
Linear / Conv2d: Conv1d, Linear subclasses, Hugging Face's Conv1D, nn.MultiheadAttention (also
inside nn.TransformerEncoder, whose inference fast path would bypass masks), nn.Embedding
(opt-in); what stays dense is named."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import Tensor, nn

import sparseprune as sp
from sparseprune.nn import (MaskedConv1d, MaskedEmbedding, MaskedHFConv1D, MaskedLinear,
                            MaskedMultiheadAttention)


class Conv1D(nn.Module):
    """Hugging Face's GPT-2 ``Conv1D`` as transformers writes it: weight (nx, nf), x @ w + b."""

    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.1)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x: Tensor) -> Tensor:
        out = torch.addmm(self.bias, x.reshape(-1, x.size(-1)), self.weight)
        return out.view(x.size()[:-1] + (self.nf,))


class Audio(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 6, 3, padding=1, padding_mode="reflect")
        self.conv2 = nn.Conv1d(6, 6, 5, stride=2, dilation=2, groups=2)
        self.proj = Conv1D(5, 6)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.conv2(torch.relu(self.conv(x))))
        return self.proj(h.transpose(1, 2))


def _encoder() -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)


def _randomize(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for _, layer in sp.masked_layers(model):
            layer.scores.normal_()
    return model


@pytest.mark.parametrize("method", ["aslp", "edge_popup", "fixed", "reparam", "hard_concrete"])
def test_conv1d_and_hf_conv1d_train_and_finalize(method):
    model = _randomize(sp.convert(Audio(), method)) if method in ("aslp", "edge_popup") \
        else sp.convert(Audio(), method)
    assert isinstance(model.conv, MaskedConv1d) and isinstance(model.proj, MaskedHFConv1D)
    x = torch.randn(3, 4, 20)
    out = model(x)
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        expected = model(x)
        final = sp.finalize(copy.deepcopy(model))
        assert type(final.conv) is nn.Conv1d and type(final.proj) is Conv1D
        if method != "reparam":  # reparam's eval keeps w * h(w) of the weights h < 1/2 drops
            torch.testing.assert_close(final(x), expected)
    report = sp.sparsity_report(model)
    assert [layer.name for layer in report.layers] == ["conv", "conv2", "proj"]
    assert report.layers[2].shape == (6, 5)


def test_conv1d_fused_equals_masked_weight_then_conv():
    layer = MaskedConv1d(4, 6, 3, padding="same", method="aslp")
    _randomize(layer)
    x = torch.randn(2, 4, 11)
    twin = copy.deepcopy(layer)
    fused = layer(x)
    weight = sp.functional.aslp_weight(twin.weight, twin.scores, rng=twin.next_rng())
    torch.testing.assert_close(fused, nn.functional.conv1d(x, weight, twin.bias, padding="same"))


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_is_masked_in_projection_and_out_proj(batch_first):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=batch_first)
    model = sp.convert(nn.ModuleDict({"attn": mha}), "aslp")
    attn = model["attn"]
    assert isinstance(attn, MaskedMultiheadAttention) and isinstance(attn.out_proj, MaskedLinear)
    assert {"attn.in_proj_weight", "attn.scores", "attn.out_proj.scores"} <= set(model.state_dict())
    _randomize(model)
    q = torch.randn(3, 5, 8)
    out, weights = attn(q, q, q)
    assert out.shape == q.shape and weights is not None
    out.square().sum().backward()
    assert attn.scores.grad.abs().sum() > 0 and attn.out_proj.scores.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        expected, _ = attn(q, q, q)
        final = sp.finalize(copy.deepcopy(model))["attn"]
        assert type(final) is nn.MultiheadAttention and type(final.out_proj) is nn.Linear
        torch.testing.assert_close(final(q, q, q)[0], expected)
        # the kept weights are exactly the masked ones
        kept = attn.method.final_mask(attn)
        assert torch.equal(final.in_proj_weight != 0, kept & (attn.in_proj_weight != 0))


def test_transformer_encoder_counts_every_weight_and_eval_never_bypasses_masks():
    torch.manual_seed(0)
    model = _randomize(sp.convert(_encoder(), "aslp"))
    total = 2 * (3 * 16 * 16 + 16 * 16 + 32 * 16 + 16 * 32)
    report = sp.sparsity_report(model)
    assert report.total == total  # attention projections included (they were half of it)
    x = torch.randn(2, 5, 16)
    model.eval()
    with torch.no_grad():  # where nn.TransformerEncoderLayer would take its fast path
        masked = model(x)
        final = sp.finalize(copy.deepcopy(model))
        torch.testing.assert_close(final(x), masked)
    assert sp.sparsity_report(final).kept == report.kept


def test_embeddings_are_opt_in_and_uncovered_weights_are_named():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.fc = nn.Linear(4, 2)
            self.table = nn.Parameter(torch.randn(3, 3))

        def forward(self, idx):
            return self.fc(self.emb(idx)) + self.table.sum()

    with pytest.warns(UserWarning, match=r"2 weight\(s\) .* stay dense .*table, emb.weight"):
        model = sp.convert(Net(), "aslp")
    assert type(model.emb) is nn.Embedding
    assert [layer.name for layer in sp.sparsity_report(model).layers] == ["fc"]
    with pytest.warns(UserWarning, match=r"1 weight\(s\) .*: table\."):
        model = sp.convert(Net(), "aslp", embeddings=True)
    assert isinstance(model.emb, MaskedEmbedding)
    _randomize(model)
    idx = torch.randint(0, 10, (3, 7))
    model(idx).sum().backward()
    assert model.emb.scores.grad.abs().sum() > 0
    assert [layer.name for layer in sp.sparsity_report(model).layers] == ["emb", "fc"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # excluded on purpose: silent
        sp.convert(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), "aslp", exclude="1")


def test_linear_subclasses_are_covered_unless_they_change_forward():
    class Plain(nn.Linear):
        pass

    class Custom(nn.Linear):
        def forward(self, x):
            return super().forward(x) * 2

    with pytest.warns(UserWarning, match="1 weight"):
        model = sp.convert(nn.Sequential(Plain(3, 3), Custom(3, 3)), "aslp")
    assert isinstance(model[0], MaskedLinear) and type(model[1]) is Custom


def test_double_convert_and_torch_prune_name_the_real_cause():
    model = sp.convert(nn.Sequential(nn.Linear(4, 3)), "aslp")
    with pytest.raises(ValueError, match=r"already converted \(1 masked layers, e.g. '0' with "
                                         r"method 'aslp'\)"):
        sp.convert(model, "aslp")
    pruned = nn.Sequential(nn.Linear(6, 5))
    torch.nn.utils.prune.l1_unstructured(pruned[0], "weight", amount=0.4)
    with pytest.raises(ValueError, match=r"layer '0' was pruned with torch.nn.utils.prune .*"
                                         r"prune.remove\(module, 'weight'\)"):
        sp.convert(pruned, "aslp")
    mask = pruned[0].weight_mask.bool().clone()
    expected = pruned(torch.ones(2, 6))
    model = sp.convert(pruned, "fixed")  # imports the mask
    assert torch.equal(model[0].mask, mask) and int(model[0].mask.sum()) == 18
    torch.testing.assert_close(model(torch.ones(2, 6)), expected)


def test_finalize_with_nothing_to_finalize_says_why():
    plain = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(ValueError, match=r"no masked layers to impose density=0.1 .*plain or "
                                         "finalized already"):
        sp.finalize(plain, density=0.1)
    sparse = sp.to_sparse(sp.finalize(sp.convert(nn.Sequential(nn.Linear(64, 64)), "aslp")),
                          format="csr")
    with pytest.raises(ValueError, match="sparse inference layers"):
        sp.finalize(sparse, density=0.5)
    with pytest.warns(UserWarning, match="nothing to do"):
        sp.finalize(plain)
