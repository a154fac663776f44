"""Whole masked models, one training step on CPU and on CUDA from the same state and seed: the
masks are the same bits, so losses, outputs and every gradient agree within GEMM / convolution
rounding. A small conv net for each fused method, and a MiniLM-sized BERT (MiniLM-L6's shape,
random weights: no pretrained weights travel) converted to ASLP. Skipped without a GPU;
the BERT test also without transformers."""

import copy

import pytest
import torch
import torch.nn.functional as TF

import sparseprune as sp

from cuda_helpers import DEVICE, assert_close_rel, exact_fp32, full_or_dry, needs_gpu

pytestmark = needs_gpu

METHODS = {
    "aslp+smart": ("aslp", {"rescale": "smart"}),
    "aslp+dwr": ("aslp", {"rescale": "dwr"}),
    "supermask+dwr": ("supermask", {"rescale": "dwr"}),
    "edge_popup": ("edge_popup", {"density": 0.3}),
    "reparam": ("reparam", {}),
    "hard_concrete": ("hard_concrete", {}),
}


def train_step(model, inputs, loss_fn, seed=5):
    """One forward + backward from the global seed; the output, the loss and the gradients."""
    torch.manual_seed(seed)
    model.zero_grad(set_to_none=True)
    with exact_fp32():
        out = model(*inputs)
        loss = loss_fn(out)
        loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    return out, loss, grads


def compare_step(model, inputs, loss_fn, factor):
    twin = copy.deepcopy(model).to(DEVICE)
    out_c, loss_c, grads_c = train_step(model, inputs, loss_fn)
    out_g, loss_g, grads_g = train_step(twin, [x.to(DEVICE) for x in inputs], loss_fn)
    assert grads_c.keys() == grads_g.keys()
    missing = [n for n, g in grads_c.items() if g is None]
    assert not missing, f"no gradient for {missing}"
    names = ["output", "loss"] + list(grads_c)
    assert_close_rel([out_c, loss_c, *grads_c.values()], [out_g, loss_g, *grads_g.values()],
                     names, torch.float32, factor)


@pytest.mark.parametrize("name", list(METHODS))
def test_small_net_step_matches_cpu(name):
    method, options = METHODS[name]
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 16, 3, stride=2), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(16 * 4 * 4, 10))
    sp.convert(net, method, **options)
    x, y = torch.randn(4, 3, 12, 12), torch.randint(0, 10, (4,))
    compare_step(net, [x], lambda out: TF.cross_entropy(out, y.to(out.device)), factor=10)


def test_masked_layers_train_on_cuda():
    model = sp.convert(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(),
                                           torch.nn.Linear(8 * 6 * 6, 4)), "aslp",
                       rescale="smart").to(DEVICE)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(2, 3, 8, 8, device=DEVICE)).sum().backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
        opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_noise_stream_on_cuda_follows_the_cpu_stream():
    """The layer keeps a host copy of its CUDA stream (no sync per forward): the pairs it draws
    match the CPU layer's through several steps, a state_dict load and a per-rank key."""
    torch.manual_seed(3)
    cpu = sp.convert(torch.nn.Sequential(torch.nn.Linear(6, 4)), "aslp")[0]
    dev = copy.deepcopy(cpu).to(DEVICE)
    for layer in (cpu, dev):
        layer.stream_key = 12345
    assert [cpu.next_rng().tolist() for _ in range(3)] == [dev.next_rng().tolist() for _ in range(3)]
    saved = {k: v.clone() for k, v in cpu.state_dict().items()}
    cpu.next_rng(), dev.next_rng()
    cpu.load_state_dict(saved)
    dev.load_state_dict(saved)  # copies into the CUDA buffer: the host copy must be refreshed
    assert cpu.next_rng().tolist() == dev.next_rng().tolist()
    assert cpu.rng.tolist() == dev.rng.cpu().tolist()
    assert dev.next_rng().device.type == "cpu"


MINILM_L6 = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                 intermediate_size=1536, max_position_embeddings=512)
# The CPU dry run checks the code on a small BERT of the same structure.
BERT = full_or_dry(MINILM_L6, dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=128,
                                   max_position_embeddings=128))


def minilm_sized_bert(seed=0, **overrides):
    """transformers' BertModel with MiniLM-L6's shape and seeded random weights, dropout off
    (its noise is device-specific), eager attention."""
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(**{**BERT, **overrides}, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    return transformers.BertModel(config)


def test_minilm_sized_aslp_step_matches_cpu():
    model = minilm_sized_bert()
    sp.convert(model, "aslp")
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, BERT["vocab_size"], (2, 64), generator=gen)
    mask = torch.ones(2, 64, dtype=torch.long)
    mask[1, 40:] = 0  # padding in the second sequence
    target = torch.randn(2, 64, BERT["hidden_size"], generator=gen)

    def loss_fn(out):
        return (out.last_hidden_state - target.to(out.last_hidden_state.device)).square().mean()

    class Hidden(torch.nn.Module):  # returns the tensor, so compare_step can compare it
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, ids, mask):
            return self.bert(input_ids=ids, attention_mask=mask)

    wrapped = Hidden(model)
    twin = copy.deepcopy(wrapped).to(DEVICE)
    out_c, loss_c, grads_c = train_step(wrapped, [ids, mask], loss_fn)
    out_g, loss_g, grads_g = train_step(twin, [ids.to(DEVICE), mask.to(DEVICE)], loss_fn)
    scores = [n for n in grads_c if n.endswith("scores")]
    # q, k, v, attention out, ffn in, ffn out per layer; the pooler
    assert len(scores) == 6 * BERT["num_hidden_layers"] + 1
    names = ["last hidden state", "loss"] + list(grads_c)
    assert_close_rel([out_c.last_hidden_state, loss_c, *grads_c.values()],
                     [out_g.last_hidden_state, loss_g, *grads_g.values()], names, torch.float32,
                     factor=50)
