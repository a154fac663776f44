"""The budget's quick case (issue 16): ASLP on LeNet-300-100, SGD lr 20 (momentum 0.9), batch 128,
3 epochs of a fixed 12 000-image subset of Fashion-MNIST's train split, target density D.

Prints, for the penalty form (BudgetLoss, strength 1) and the constrained form (Budget over the
run's steps), each method's own-rule density after every epoch, the final densities and the test
accuracy of the own-rule subnetwork. The target of the issue: own-rule density within D ± 0.03 at
D = 0.1 for the default budget.

    python benchmarks/budget_quick.py [--density 0.1] [--method aslp]
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import sparseprune as sp
from sparseprune.runner.data import load_dataset, loader
from sparseprune.runner.models import build_model, kaiming_normal_


def accuracy(model: torch.nn.Module, data) -> float:
    model.eval()
    with torch.no_grad():
        hits = sum(int((model(x).argmax(1) == y).sum()) for x, y in loader(data, 1000, shuffle=False))
    model.train()
    return hits / len(data)


def run(form: str, method: str, density: float, train, test, epochs: int = 3, batch: int = 128) -> dict:
    torch.manual_seed(0)
    model = kaiming_normal_(build_model("lenet300", (1, 28, 28), 10))
    sp.convert(model, method)
    steps = epochs * ((len(train) + batch - 1) // batch)
    budget = (sp.budget.Budget(model, density, total_steps=steps) if form == "Budget"
              else sp.budget.BudgetLoss(model, density))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=20, momentum=0.9)
    start = time.perf_counter()
    for epoch in range(epochs):
        for x, y in loader(train, batch, shuffle=True, seed=epoch):
            opt.zero_grad()
            (F.cross_entropy(model(x), y) + budget()).backward()
            opt.step()
        rule = sp.budget.final_densities(model)["rule"]
        print(f"  {form:10s} epoch {epoch + 1}: own-rule density {rule:.4f}", flush=True)
    out = sp.budget.final_densities(model, density)
    sp.finalize(model)
    out["own_rule_test_acc"] = accuracy(model, test)
    out["seconds"] = time.perf_counter() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--method", default="aslp")
    args = parser.parse_args()
    torch.set_num_threads(1)
    splits = load_dataset("fashion-mnist")
    gen = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(splits.train), generator=gen)[:12000]
    train = torch.utils.data.TensorDataset(*(t[idx] for t in splits.train.tensors))
    for form in ("BudgetLoss", "Budget"):
        r = run(form, args.method, args.density, train, splits.test)
        ok = abs(r["rule"] - args.density) <= 0.03
        print(f"{form:10s} {args.method} D={args.density}: own rule {r['rule']:.4f} "
              f"({'within' if ok else 'outside'} D ± 0.03), exact {r['exact']:.4f}, "
              f"top-k changes {100 * r['changed']:.2f} % of decisions, expected {r['expected']:.4f}, "
              f"own-rule test acc {100 * r['own_rule_test_acc']:.2f} %, {r['seconds']:.0f} s",
              flush=True)


if __name__ == "__main__":
    main()
