"""sparseprune.prune_oneshot: Wanda's and magnitude's masks against their formulas, N:M compliance
on every layer kind, calibration data forms and padding, sequential vs one pass, the report, and
bad input."""

import copy
import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparseprune as sp
from sparseprune.select import is_nm


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def oneshot(model, method, **kw):
    kw.setdefault("progress", False)
    return sp.prune_oneshot(model, method, **kw)


def masks_of(model):
    return {name: layer.mask.clone() for name, layer in sp.masked_layers(model)}


def row_top_k(scores, k):
    """Independent oracle: per row, the k largest, ties to the lower index (sorted by (-s, j))."""
    keep = torch.zeros(scores.shape, dtype=torch.bool)
    for r, row in enumerate(scores.tolist()):
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))
        keep[r, order[:k]] = True
    return keep


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.up, self.down = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x):
        return x + self.down(torch.relu(self.up(x)))


class Stack(nn.Module):
    """An input layer, a ModuleList of blocks (found automatically), a head."""

    def __init__(self, d=16, depth=3, classes=4):
        super().__init__()
        self.inp = nn.Linear(8, d)
        self.blocks = nn.ModuleList(Block(d) for _ in range(depth))
        self.head = nn.Linear(d, classes)

    def forward(self, x, scale=None):
        x = self.inp(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x if scale is None else x * scale)


def tokens(n=4, seed=0, batch=3, seq=5, features=8):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, seq, features, generator=g) for _ in range(n)]


# ------------------------------------------------------------------------- Wanda, magnitude

def test_wanda_masks_equal_the_formula_per_row_with_ties_to_the_lower_index():
    layer = nn.Linear(12, 6, bias=False)
    with torch.no_grad():  # few distinct |w| and two equal-norm columns: many ties
        layer.weight.copy_(torch.randint(-2, 3, (6, 12)).float())
    x = torch.randn(40, 12)
    x[:, 5] = x[:, 4]  # columns 4 and 5 have the same norm
    data = [x[:15], x[15:]]
    w = layer.weight.detach().clone()
    model = oneshot(nn.Sequential(layer), "wanda", density=0.5, data=data)
    score = w.abs().double() * x.double().norm(dim=0)
    expected = row_top_k(score, 6)
    got = model[0].mask
    assert torch.equal(got, expected)
    assert (got.sum(1) == 6).all()  # every row keeps exactly its share
    assert torch.equal(model[0].weight.detach(), w * expected)  # no weight update


def test_magnitude_per_layer_and_per_row():
    layer = nn.Linear(10, 5)
    w = layer.weight.detach().clone()
    model = oneshot(nn.Sequential(copy.deepcopy(layer)), "magnitude", density=0.3)  # no data
    assert int(model[0].mask.sum()) == 15
    assert model[0].mask[w.abs() > w.abs().flatten().sort().values[-16]].all()
    rows = oneshot(nn.Sequential(copy.deepcopy(layer)), "magnitude", density=0.3, group="row")
    assert torch.equal(rows[0].mask, row_top_k(w.abs(), 3))


def test_wanda_on_a_convolution_uses_the_receptive_field_norms():
    conv = nn.Conv2d(3, 5, 3, padding=1, stride=2)
    x = torch.randn(4, 3, 9, 9) * torch.tensor([1.0, 5.0, 0.2]).view(1, 3, 1, 1)
    w = conv.weight.detach().clone()
    model = oneshot(nn.Sequential(conv), "wanda", density=0.25, data=[x])
    cols = F.unfold(x, 3, padding=1, stride=2)  # [N, C*kh*kw, L], (c, kh, kw) order
    norms = cols.double().square().sum((0, 2)).sqrt().view(1, 3, 3, 3)
    score = (w.abs().double() * norms).reshape(5, -1)
    assert torch.equal(model[0].mask.reshape(5, -1), row_top_k(score, round(0.25 * 27)))


# ------------------------------------------------------------------------- N:M, layer kinds

class Conv1D(nn.Module):
    """Hugging Face's GPT-2 Conv1D (matched by its class name): y = x W + b, W [in, out]."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.1)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        return x @ self.weight + self.bias


class Kinds(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv2d = nn.Conv2d(4, 8, 3, padding="same")
        self.conv1d = nn.Conv1d(8, 8, 3, padding=1, padding_mode="reflect")
        self.hf = Conv1D(16, 8)
        self.attn = nn.TransformerEncoderLayer(16, 2, dim_feedforward=24, dropout=0.0,
                                               batch_first=True)
        self.linear = nn.Linear(16, 4)

    def forward(self, x):                             # x [N, 4, 6, 6]
        h = self.conv2d(x).flatten(2)                 # [N, 8, 36]
        h = self.conv1d(h).transpose(1, 2)            # [N, 36, 8]
        h = self.attn(self.hf(h))                     # [N, 36, 16]
        return self.linear(h.mean(1))


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_nm_compliance_on_every_layer_kind(method):
    model = Kinds()
    data = [torch.randn(3, 4, 6, 6) for _ in range(2)]
    pruned, report = oneshot(model, method, pattern="2:4", data=data, return_report=True)
    layers = dict(sp.masked_layers(pruned))
    assert set(layers) == {"conv2d", "conv1d", "hf", "attn.self_attn", "attn.self_attn.out_proj",
                           "attn.linear1", "attn.linear2", "linear"}
    for name, layer in layers.items():
        mask = layer.mask if name != "hf" else layer.mask.t()  # groups run along the inputs
        assert is_nm(mask, 2, 4), name
        assert not layer.weight.detach()[~layer.mask].any(), name
    assert [r.name for r in report.layers][3:6] == ["attn.self_attn[q]", "attn.self_attn[k]",
                                                    "attn.self_attn[v]"]
    assert all(r.tokens > 0 for r in report.layers) and report.density == 0.5
    pruned(data[0])  # still runs


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.mha = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x):
        return self.mha(x, x, x, need_weights=False)[0]


@pytest.mark.parametrize("kind", ["linear", "conv2d", "conv1d", "hf", "out_proj"])
def test_reported_error_equals_the_direct_output_error(kind):
    """The report's error (from the Gram matrix) is ||(W - W_hat) X|| / ||W X|| computed from
    the layer's outputs: checks the input rows (im2col order, transposed weights, the
    attention output that out_proj receives)."""
    torch.manual_seed(1)
    model = {"linear": nn.Linear(8, 6), "conv2d": nn.Conv2d(4, 6, 3, stride=2),
             "conv1d": nn.Conv1d(4, 6, 3, dilation=2), "hf": Conv1D(6, 8),
             "out_proj": Attention()}[kind]
    shape = {"conv2d": (2, 4, 9, 9), "conv1d": (2, 4, 11)}.get(kind, (2, 5, 8))
    data = [torch.randn(shape) for _ in range(2)]
    target = model.mha.out_proj if kind == "out_proj" else model
    with torch.no_grad():
        target.bias.zero_()  # outputs are then W X (the attention's other weights stay dense)
    dense = copy.deepcopy(model)
    pruned, report = oneshot(model, "sparsegpt", density=0.5, data=data, return_report=True,
                             include="mha.out_proj" if kind == "out_proj" else None)
    with torch.no_grad():
        out_dense = torch.cat([dense(x).flatten() for x in data])
        out_pruned = torch.cat([pruned(x).flatten() for x in data])
    direct = float((out_dense - out_pruned).norm() / out_dense.norm())
    (layer_result,) = report.layers
    assert 0.01 < direct < 1
    assert layer_result.error == pytest.approx(direct, rel=1e-4)


# ------------------------------------------------------------------------- data forms, padding

def test_every_calibration_data_form_gives_the_same_masks():
    base = Stack()
    xs = tokens()
    forms = {
        "tensors": xs,
        "tuples": [(x,) for x in xs],
        "lists": [[x, None] for x in xs],
        "dicts": [{"x": x} for x in xs],
        "generator": (x for x in xs),
    }
    results = {k: masks_of(oneshot(copy.deepcopy(base), "wanda", density=0.5, data=v))
               for k, v in forms.items()}
    first = results["tensors"]
    for k, masks in results.items():
        assert masks.keys() == first.keys() and all(torch.equal(masks[n], first[n])
                                                    for n in first), k
    single = masks_of(oneshot(copy.deepcopy(base), "wanda", density=0.5,
                              data=torch.cat(xs)))  # one tensor: one batch
    assert all(torch.equal(single[n], first[n]) for n in first)
    limited = masks_of(oneshot(copy.deepcopy(base), "wanda", density=0.5, data=xs + [xs[0] * 50],
                               batches=len(xs)))  # the extra batch is not read
    assert all(torch.equal(limited[n], first[n]) for n in first)


def test_padding_tokens_are_not_counted():
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)

        def forward(self, x, attention_mask=None):
            return self.b(torch.relu(self.a(x)))

    base = Tokens()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 6, 8, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]])
    x[mask == 0] = 1e3 * torch.randn(6, 8, generator=g)  # padding: garbage, large
    padded = masks_of(oneshot(copy.deepcopy(base), "sparsegpt", pattern="2:4",
                              data=[{"x": x, "attention_mask": mask}]))
    real = masks_of(oneshot(copy.deepcopy(base), "sparsegpt", pattern="2:4",
                            data=[x[mask.bool()]]))  # only the 6 real tokens
    polluted = masks_of(oneshot(copy.deepcopy(base), "sparsegpt", pattern="2:4", data=[x]))
    assert all(torch.equal(padded[n], real[n]) for n in real)
    assert any(not torch.equal(polluted[n], real[n]) for n in real)


def test_a_transformer_encoder_with_padding_nested_or_not():
    """nn.TransformerEncoder turns a padded batch into nested tensors (no padding tokens); with
    enable_nested_tensor=False its layers see the padded batch and the padding mask. Both count
    the same tokens and prune the same weights."""
    class Encoder(nn.Module):
        def __init__(self, nested):
            super().__init__()
            layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
            self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=nested)

        def forward(self, x, attention_mask):
            return self.enc(x, src_key_padding_mask=~attention_mask.bool())

    torch.manual_seed(0)
    nested = Encoder(True)
    padded = Encoder(False)
    padded.load_state_dict(nested.state_dict())
    x = torch.randn(3, 7, 16)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5])
    data = [{"x": x, "attention_mask": mask}]
    with warnings.catch_warnings():  # torch: "nested tensors ... prototype" (once per process)
        warnings.simplefilter("ignore", UserWarning)
        a, ra = oneshot(nested, "sparsegpt", pattern="2:4", data=data, return_report=True)
    b, rb = oneshot(padded, "sparsegpt", pattern="2:4", data=data, return_report=True)
    assert [r.tokens for r in ra.layers] == [int(mask.sum())] * len(ra.layers)
    assert [r.tokens for r in rb.layers] == [int(mask.sum())] * len(rb.layers)
    ma, mb = masks_of(a), masks_of(b)
    assert all(torch.equal(ma[n], mb[n]) for n in ma)
    for ea, eb in zip(ra.layers, rb.layers):
        assert ea.error == pytest.approx(eb.error, rel=1e-3)


# ------------------------------------------------------------------------- sequential

def test_sequential_differs_from_one_pass_only_after_the_first_stage():
    base = Stack(depth=3)
    data = tokens(6)
    seq, rs = oneshot(copy.deepcopy(base), "wanda", density=0.3, data=data, return_report=True)
    one, ro = oneshot(copy.deepcopy(base), "wanda", density=0.3, data=data, sequential=False,
                      return_report=True)
    assert [r.stage for r in rs.layers] == ["inp", "blocks.0", "blocks.0", "blocks.1", "blocks.1",
                                            "blocks.2", "blocks.2", "head"]
    assert rs.stages == 5 and ro.stages == 1
    seq, one = masks_of(seq), masks_of(one)
    # the first stage sees the dense model either way; every later one sees pruned inputs
    assert torch.equal(seq["inp"], one["inp"])
    assert all(not torch.equal(seq[n], one[n]) for n in ("blocks.0.up", "blocks.2.up", "head"))
    # pruning the blocks only: block 0 is the first stage
    seq = masks_of(oneshot(copy.deepcopy(base), "wanda", density=0.3, data=data,
                           include="blocks.*"))
    one = masks_of(oneshot(copy.deepcopy(base), "wanda", density=0.3, data=data,
                           include="blocks.*", sequential=False))
    assert torch.equal(seq["blocks.0.up"], one["blocks.0.up"])
    assert torch.equal(seq["blocks.0.down"], one["blocks.0.down"])  # dense within the block
    assert not torch.equal(seq["blocks.1.up"], one["blocks.1.up"])
    # magnitude masks do not depend on the data: the same either way
    m1 = masks_of(oneshot(copy.deepcopy(base), "magnitude", density=0.3, data=data))
    m2 = masks_of(oneshot(copy.deepcopy(base), "magnitude", density=0.3, data=data,
                          sequential=False))
    assert all(torch.equal(m1[n], m2[n]) for n in m1)


def test_explicit_blocks_and_training_flags():
    base = Stack(depth=2).train()
    data = tokens(3)
    auto = masks_of(oneshot(copy.deepcopy(base), "sparsegpt", density=0.5, data=data))
    by_glob = oneshot(copy.deepcopy(base), "sparsegpt", density=0.5, data=data, blocks="blocks.*")
    assert all(torch.equal(masks_of(by_glob)[n], auto[n]) for n in auto)
    assert all(m.training for m in by_glob.modules())  # restored after calibration in eval
    copy_ = copy.deepcopy(base)
    by_module = oneshot(copy_, "sparsegpt", density=0.5, data=data,
                        blocks=[copy_.blocks[0], "blocks.1"])
    assert all(torch.equal(masks_of(by_module)[n], auto[n]) for n in auto)


class Unchained(Stack):
    """The same computation, but the blocks do not feed each other directly."""

    def __init__(self, how, **kw):
        super().__init__(**kw)
        self.how = how

    def forward(self, x):
        x = self.inp(x)
        for i, block in enumerate(self.blocks):
            if self.how == "twice" and i == 1:
                block(x)
            x = block(x) if self.how != "flag" else block.down(torch.relu(block.up(x))) + x
            if self.how == "copy":
                x = x.clone()
            elif self.how == "in-place":
                x.mul_(1.0)
        return self.head(x)


@pytest.mark.parametrize("how", [None, "copy", "in-place", "twice"])
def test_chained_blocks_run_alone_and_give_the_same_masks(how):
    """Blocks that feed each other directly are run alone on the kept inputs of the block
    before (about 2 block forwards per block); otherwise the whole model runs per stage. The
    masks are the same either way."""
    base = Stack(depth=3)
    model = copy.deepcopy(base) if how is None else Unchained(how, depth=3)
    model.load_state_dict(base.state_dict(), strict=False)
    calls = [0, 0, 0]
    for i, block in enumerate(model.blocks):
        block.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    data = tokens(2)
    pruned = masks_of(oneshot(model, "sparsegpt", density=0.5, data=data, include="blocks.*"))
    if how is None:  # a full forward, then per block: stats (not block 0), outputs (not the last)
        assert calls == [2 + 2, 2 + 2 + 2, 2 + 2]
    elif how != "twice":  # per stage a forward stopped after the stage's block (1st: to the end)
        assert calls == [2 + 2 + 2, 2 + 2 + 2, 2 + 2]
    reference = masks_of(oneshot(copy.deepcopy(base), "sparsegpt", density=0.5, data=data,
                                 include="blocks.*"))
    assert all(torch.equal(pruned[n], reference[n]) for n in reference)


# ------------------------------------------------------------------------- result, API

def test_report_and_the_fixed_layers_work_with_the_rest_of_the_library(tmp_path):
    model, report = oneshot(Stack(), "sparsegpt", density=0.5, data=tokens(), return_report=True)
    assert isinstance(model, Stack) and len(report.layers) == 8
    assert all(0 < r.error < 1 and r.damp == 0.01 for r in report.layers)
    text = str(report)
    assert "blocks.1.down" in text and "sparsegpt, density 0.5, sequential" in text
    json.dumps(report.to_dict())
    assert sp.sparsity_report(model).density == 0.5
    x = tokens(1)[0]
    with torch.no_grad():
        expected = model(x)
        sp.finalize(model)
        torch.testing.assert_close(model(x), expected)
        sp.save(model, tmp_path / "m.safetensors")
        again = sp.load(tmp_path / "m.safetensors", Stack())
        torch.testing.assert_close(again(x), expected)


def test_the_report_marks_only_the_layers_whose_cholesky_needed_more_dampening():
    model, report = oneshot(Stack(), "sparsegpt", density=0.5, data=tokens(), percdamp=0.05,
                            return_report=True)
    assert report.percdamp == 0.05 and all(r.damp == 0.05 for r in report.layers)
    assert "(damp" not in str(report)
    report.layers[1].damp = 0.5  # as after one retry
    marked = [line for line in str(report).splitlines() if "(damp 0.5)" in line]
    assert len(marked) == 1 and marked[0].startswith(report.layers[1].name)


def test_a_model_that_is_one_layer_is_named_model():
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    model, report = oneshot(nn.Linear(8, 4), "wanda", density=0.5, data=x, return_report=True)
    ((name, layer),) = sp.masked_layers(model)
    assert name == "" and int(layer.mask.sum()) == 16
    assert [r.name for r in report.layers] == ["(model)"] and "(model) " in str(report)
    with pytest.raises(ValueError, match=r"^\(model\): .*M=4"):
        oneshot(nn.Linear(6, 4), "wanda", pattern="2:4", data=torch.randn(16, 6))


# ------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("kw, match", [
    (dict(), "exactly one of density"),
    (dict(density=0.5, pattern="2:4"), "exactly one of density"),
    (dict(density=1.5), r"density must be a number in \(0, 1\]"),
    (dict(pattern="4:2"), "pattern must be 'N:M'"),
    (dict(density=0.5, data=[]), "data yielded no calibration batch"),
    (dict(density=0.5, data=None), "method 'wanda' needs data="),
    (dict(density=0.5, data=[object()]), "must be a tensor"),
    (dict(density=0.5, group="block"), "group must be one of"),
    (dict(density=0.5, blocksize=64), "blocksize and percdamp apply to sparsegpt"),
])
def test_bad_arguments(kw, match):
    kw.setdefault("data", tokens(1))
    with pytest.raises((ValueError, TypeError), match=match):
        oneshot(Stack(), "wanda", **kw)


def test_bad_method_options():
    with pytest.raises(ValueError, match=r"method must be one of \('magnitude', 'wanda', "):
        oneshot(Stack(), "obs", density=0.5, data=tokens(1))
    with pytest.raises(ValueError, match="group applies to an unstructured density"):
        oneshot(Stack(), "sparsegpt", density=0.5, data=tokens(1), group="row")
    with pytest.raises(ValueError, match="blocksize must be a multiple of M=8"):
        oneshot(Stack(), "sparsegpt", pattern="2:8", data=tokens(1), blocksize=12)
    oneshot(Stack(), "wanda", pattern="4:8", data=tokens(1))  # 8, 16 and 32 inputs: fine
    with pytest.raises(ValueError, match="inp: an N:M pattern with M=6"):
        oneshot(Stack(), "wanda", pattern="2:6", data=tokens(1))


def test_a_layer_the_data_never_reaches_is_named_and_nothing_changes():
    model = Stack()
    model.unused = nn.Linear(16, 16)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=r"layer\(s\) 'unused' received no calibration input"):
        oneshot(model, "sparsegpt", density=0.5, data=tokens(2))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not sp.masked_layers(model)
    oneshot(model, "sparsegpt", density=0.5, data=tokens(2), exclude="unused")  # works
