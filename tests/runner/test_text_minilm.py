"""The real-data harness of the transformer work: the fortunes corpus and MiniLM-L6 offline."""

from __future__ import annotations

import pytest
import torch

import sparseprune as sp
from sparseprune.runner import minilm
from sparseprune.runner.data import text

try:
    SENTENCES = text.sentences()
except FileNotFoundError as exc:  # pragma: no cover - CI installs it
    SENTENCES, WHY = None, str(exc)
needs_corpus = pytest.mark.skipif(SENTENCES is None, reason="fortunes corpus not installed")
needs_minilm = pytest.mark.skipif(minilm.available() is not None, reason=str(minilm.available()))


@needs_corpus
def test_corpus_is_deterministic_clean_english():
    assert len(SENTENCES) > 20_000 and SENTENCES == text.sentences()
    assert all(5 <= len(s.split()) <= 60 and s[-1] in ".!?\"')" for s in SENTENCES[:2000])
    train, held = text.split(SENTENCES)
    assert 0.07 < len(held) / len(SENTENCES) < 0.13 and not set(train) & set(held)
    assert text.split(SENTENCES[:500])[1] == [s for s in held if s in set(SENTENCES[:500])]


def test_missing_corpus_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install -y fortunes"):
        text.sentences(root=tmp_path / "none")


@needs_corpus
@needs_minilm
def test_minilm_embeddings_and_teacher_cosine():
    teacher, tokenizer = minilm.load()
    student = sp.convert(minilm.student(teacher), "fixed", include=minilm.ENCODER)
    held = text.split(SENTENCES)[1][:32]
    assert minilm.teacher_cosine(student, teacher, tokenizer, held) == pytest.approx(1.0, abs=1e-5)
    sp.set_masks(student, {n: torch.rand(l.weight.shape) < 0.5 for n, l in sp.masked_layers(student)})
    assert minilm.teacher_cosine(student, teacher, tokenizer, held) < 0.99
    batch = minilm.encode(tokenizer, held[:4])
    with torch.no_grad():
        emb = minilm.embed(teacher, batch)
    assert emb.shape == (4, 384) and torch.allclose(emb.norm(dim=1), torch.ones(4))
    loss = minilm.distillation_loss(student, emb, batch)
    loss.backward()
    assert 0 < float(loss) < 1 and all(p.grad is None for p in teacher.parameters())
