"""Budget losses: drive a model's learned density to a target.

:class:`BudgetLoss` is Dupont et al.'s budget term ``((C - C_target) / C_initial)^2`` (ICIP 2021;
docs/METHODS.md 4.2) generalised to every method with a learned density: C is the sum over the
masked layers of their methods' differentiable expected kept count (``budget_mass``):

- ``"reparam"``: the sum of ``h_t(w)`` (computed by the same fused pass as ``w_hat``);
- ``"aslp"``, ``"supermask"``: the expected number of kept weights, ``sum(sigmoid(scores))``;
- ``"hard_concrete"``: ``sum_j P(z_j != 0)`` times the weights each gate covers;

``C_target = density * N`` with N the number of maskable weights, and ``C_initial`` the value of C
when the loss is built (before the first step), a constant. Total loss: ``task + budget()`` (the
loss's ``strength`` is the paper's lambda, default 1); call it after the model's forward and before
the backward of the step, then finalize with :func:`sparseprune.finalize` (``density=...`` keeps
exactly ``round(density * N)`` weights) and compare with :func:`final_densities`.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .. import _validate, methods
from ..convert import final_masks, kept_count, masked_layers
from ..methods.hard_concrete import HardConcrete, prob_and_group_norms

__all__ = ["BudgetLoss", "final_densities", "l0_penalty"]


def _budget_layers(model: nn.Module) -> list:
    layers = masked_layers(model)
    if not layers:
        raise ValueError("BudgetLoss: the model has no masked layers; call sparseprune.convert first")
    for name, layer in layers:
        pattern = layer.method.pattern
        if pattern is not None:  # density_role says "option": name the pattern, the real reason
            raise TypeError(f"BudgetLoss: layer {name!r} has an N:M pattern "
                            f"({pattern[0]}:{pattern[1]}), which fixes its density at "
                            f"{pattern[0] / pattern[1]:g}; a budget loss does not apply")
        if layer.method.density_role != "learned":
            learned = [m for m in methods.available() if methods.get(m).density_role == "learned"]
            raise TypeError(f"BudgetLoss: layer {name!r} uses method {layer.method.name!r}, whose "
                            f"density is not learned; budget losses apply to layers of "
                            f"{', '.join(learned)}")
    return layers


class BudgetLoss(nn.Module):
    """``strength * ((C - C_target) / C_initial)^2`` over the masked layers of ``model``.

    Args:
        model: a model with masked layers (``sparseprune.convert``) whose methods learn their
            density (``density_role == "learned"``: aslp, supermask, reparam, hard_concrete).
        density: the target fraction of weights kept, in (0, 1].
        scope: ``"global"``: one term over all layers together (C = sum of the layers' masses,
            N = all their weights); ``"local"``: the mean over layers of each layer's own term
            ``((C_l - density * N_l) / C_l,initial)^2``.
        min_layer_density: a per-layer floor in [0, 1]: adds the mean over layers of the hinge
            ``(max(0, min_layer_density * N_l - C_l) / C_l,initial)^2``, so that no layer
            collapses below it while the global budget is met.
        strength: the multiplier lambda (>= 0) of the whole term.

    ``C_initial`` (per layer, ``initial`` buffer) is measured at construction; :meth:`reset`
    measures it again. The layer masses a step's forward computed are reused when the weights
    have not changed since.
    """

    def __init__(self, model: nn.Module, density: float, *, scope: str = "global",
                 min_layer_density: float = 0.0, strength: float = 1.0):
        super().__init__()
        self.density = _validate.density(density)
        self.scope = _validate.scope(scope)
        self.min_layer_density = _validate.number_in("min_layer_density", min_layer_density, 0.0,
                                                     1.0)
        self.strength = _validate.finite_number("strength", strength, minimum=0.0)
        # Plain list: the model's modules must not become this loss's submodules / parameters.
        self._layers = _budget_layers(model)
        self.names = [name for name, _ in self._layers]
        self.register_buffer("numels", torch.tensor([layer.weight.numel()
                                                     for _, layer in self._layers],
                                                    dtype=torch.float64), persistent=False)
        self.register_buffer("initial", torch.zeros(len(self._layers), dtype=torch.float64))
        self.reset()

    @torch.no_grad()
    def reset(self) -> None:
        """Measure ``C_initial`` again from the current parameters."""
        masses = torch.stack([m.detach().double().cpu() for m in self.masses()])
        bad = [name for name, m in zip(self.names, masses.tolist()) if not m > 0]
        if bad:
            raise ValueError(f"BudgetLoss: the initial mass of layer(s) {', '.join(bad)} is not "
                             "> 0 (nothing is kept to normalise by)")
        self.initial.copy_(masses)

    def masses(self) -> list[Tensor]:
        """Each layer's current differentiable mass C_l (expected kept weights)."""
        return [layer.method.budget_mass(layer) for _, layer in self._layers]

    def forward(self) -> Tensor:
        masses = self.masses()
        device = masses[0].device
        c = torch.stack([m.double() for m in masses])
        numels, initial = self.numels.to(device), self.initial.to(device)
        if self.scope == "global":
            term = ((c.sum() - self.density * numels.sum()) / initial.sum()).square()
        else:
            term = ((c - self.density * numels) / initial).square().mean()
        if self.min_layer_density > 0:
            hinge = torch.relu(self.min_layer_density * numels - c) / initial
            term = term + hinge.square().mean()
        return (self.strength * term).to(masses[0].dtype)

    @torch.no_grad()
    def expected_density(self) -> float:
        """C / N now: the density the budget term sees."""
        return float(sum(m.double().cpu() for m in self.masses()) / self.numels.sum())

    def extra_repr(self) -> str:
        return (f"density={self.density}, scope={self.scope!r}, layers={len(self.names)}, "
                f"min_layer_density={self.min_layer_density}, strength={self.strength}")


@torch.no_grad()
def final_densities(model: nn.Module, density: Optional[float] = None, *,
                    scope: str = "global") -> dict:
    """The final densities of the masked layers of ``model`` under both final rules:

    - ``"rule"``: each method's own final mask (reparam: ``h >= 0.5``; aslp/supermask:
      ``scores >= 0``), what :func:`sparseprune.finalize` keeps without a density;
    - ``"exact"`` (with ``density``): the top-k rule of ``finalize(model, density=density,
      scope=scope)``, which keeps exactly ``round(density * N)`` weights;
    - ``"expected"``: C / N for methods with a learned density (else absent).

    Values are fractions of all masked weights; ``"target"`` repeats ``density``.
    """
    layers = masked_layers(model)
    if not layers:
        raise ValueError("final_densities: the model has no masked layers")
    total = sum(layer.weight.numel() for _, layer in layers)
    out: dict = {"target": density}
    out["rule"] = sum(int(m.sum()) for m in final_masks(model).values()) / total
    if density is not None:
        masks = final_masks(model, density=density, scope=scope)
        # What finalize keeps: a weight whose final scale is 0 (a closed hard-concrete gate) is
        # pruned even when the top-k selects it.
        out["exact"] = sum(kept_count(layer, masks[name]) for name, layer in layers) / total
    if all(layer.method.density_role == "learned" for _, layer in layers):
        out["expected"] = float(sum(layer.method.budget_mass(layer).double().cpu()
                                    for _, layer in layers)) / total
    return out


def l0_penalty(model: nn.Module, *, weight_decay: float = 0.0) -> Tensor:
    """Louizos et al.'s expected-L0 regulariser over the hard-concrete layers of ``model``:
    ``sum_l sum_j P(z_j != 0) * (1 + 0.5 * weight_decay * ||theta_j||^2)``, theta_j the weights
    gate j covers (docs/METHODS.md 5.3). The reference code adds ``lambda / N`` times it to the
    cross-entropy (N the training-set size, lambda 1 by default)."""
    weight_decay = _validate.finite_number("weight_decay", weight_decay, minimum=0.0)
    terms = [prob_and_group_norms(layer, weight_decay) for _, layer in masked_layers(model)
             if isinstance(layer.method, HardConcrete)]
    if not terms:
        raise ValueError("l0_penalty: the model has no hard_concrete layers")
    return torch.stack([t.sum() for t in terms]).sum()
