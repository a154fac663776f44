"""prune_oneshot on a real pretrained transformer (MiniLM-L6, offline): Wanda 2:4 on a few
sentences of the fortunes corpus, then finalize, to_sparse and save / load."""

import copy
import warnings

import pytest
import torch

import sparseprune as sp
from sparseprune.runner import minilm
from sparseprune.runner.data import text
from sparseprune.select import is_nm

try:
    SENTENCES = text.sentences()
except FileNotFoundError:  # pragma: no cover - CI installs it
    SENTENCES = None

pytestmark = [
    pytest.mark.skipif(minilm.available() is not None, reason=str(minilm.available())),
    pytest.mark.skipif(SENTENCES is None, reason="fortunes corpus not installed"),
]


def test_wanda_2_4_on_minilm_then_finalize_to_sparse_save(tmp_path):
    torch.set_num_threads(1)
    teacher, tokenizer = minilm.load()
    train, held = text.split(SENTENCES)
    calibration = list(minilm.batches(tokenizer, train[:8], batch_size=4))
    with warnings.catch_warnings():  # convert: the embeddings stay dense (not linear layers)
        warnings.simplefilter("ignore", UserWarning)
        student, report = sp.prune_oneshot(minilm.student(teacher), "wanda", pattern="2:4",
                                           data=calibration, include=minilm.ENCODER,
                                           progress=False, return_report=True)
    layers = sp.masked_layers(student)
    assert len(layers) == 36 and report.stages == 6  # encoder.layer.0 .. 5
    assert all(is_nm(layer.mask, 2, 4) for _, layer in layers)
    tokens = int(sum(b["attention_mask"].sum() for b in calibration))
    assert all(r.tokens == tokens for r in report.layers)  # padding not counted
    encoder, pooler = 10_616_832, 384 * 384  # the pooler stays dense
    assert sp.sparsity_report(student).density == pytest.approx(
        (0.5 * encoder + pooler) / (encoder + pooler), rel=1e-12)
    cosine = minilm.teacher_cosine(student, teacher, tokenizer, held[:16])
    assert 0.3 < cosine < 0.999

    batch = minilm.encode(tokenizer, held[:4])
    student.eval()
    with torch.no_grad():
        expected = minilm.embed(student, batch)
        sp.finalize(student)
        torch.testing.assert_close(minilm.embed(student, batch), expected)
        sp.to_sparse(student, include=minilm.ENCODER)
        torch.testing.assert_close(minilm.embed(student, batch), expected, rtol=1e-4, atol=1e-5)
    sp.save(student, tmp_path / "minilm.safetensors")
    loaded = sp.load(tmp_path / "minilm.safetensors", copy.deepcopy(teacher))
    with torch.no_grad():
        torch.testing.assert_close(minilm.embed(loaded.eval(), batch), expected, rtol=1e-4,
                                   atol=1e-5)
