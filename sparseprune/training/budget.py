"""Budgets: drive a model's learned density to a target.

Two forms, for every method whose density is learned (``density_role == "learned"``: aslp,
supermask, reparam, hard_concrete):

- :class:`Budget` (the default of the CLI's ``--density``): a constraint that holds during
  training, so that the network trained is the one :func:`sparseprune.finalize` keeps;
- :class:`BudgetLoss`: Dupont et al.'s fixed-weight penalty ``strength * ((C - C_target) /
  C_initial)^2`` (ICIP 2021; docs/METHODS.md 4.2), C the layers' differentiable expected kept
  count (``budget_mass``). It steers the *expected* density only, and how close it gets depends on
  ``strength`` against the task's gradients, the optimizer and the learning rate: the density
  under each method's own final rule then misses the target (docs/results.md: ASLP 0.067,
  reparam 0.142, hard-concrete 0.418 at a target of 0.1), and ``finalize(density=...)`` keeps
  weights the network never trained with or drops some it used.

Design of :class:`Budget` (issue 16):

1. *What is constrained: the own rule.* C is the number of weights each method's own final rule
   keeps (``MaskMethod.rule_mass``: ``final_mask(layer).sum()`` as the value, the gradient of a
   differentiable surrogate, straight-through: the expected mass ``budget_mass`` by default,
   reparam a surrogate whose gradient still reaches weights far out of the pit). The density
   held is the one ``finalize`` without a density keeps, not an expectation that can sit at the
   target while the rule keeps 2 % (every score at ``logit(0.1)``).
2. *How: Lagrange multipliers, updated by dual ascent,* for the equality ``C = d_t * N`` (global
   scope; ``C_l = d_t * N_l`` per layer, one multiplier each, with ``scope="local"``) and, with
   ``min_layer_density``, one non-negative multiplier per layer for ``C_l >= m * N_l``. The term
   is ``(lambda + dual_gain * v) * v`` with ``v`` the relative violation, and after each training
   call ``lambda += dual_lr * v``: a proportional-integral controller. The integral finds the
   price the task needs (no strength to tune); the proportional part answers at once, which
   matters with Adam (its steps hardly depend on the size of a dominant gradient) and damps the
   overshoot an integral alone gives against a plant that reacts late (momentum; gates that
   start far from their threshold). ``v = (C / N - d_t) / max(C / N, d_t)``: 10 % off is the same
   signal at a target of 0.1 as at 0.02, and a density far above a small target (every weight
   kept at the first step) gives at most 1, not a 50x shock. A local constraint is its layer's
   own (its term is not weighted by the layer's size): a small layer whose weights the task holds
   on to, like the output layer, gets the price it needs.
3. *When: a density schedule.* With ``total_steps``, the target ``d_t`` follows Zhu & Gupta's
   cubic ramp ("To prune, or not to prune", 2017) from the initial expected density ``d_0`` to
   ``density`` over the first ``warmup`` share of the steps (0.8 by default),
   ``d_t = density + (d_0 - density) (1 - t / T_w)^3``, then stays there. The constraint moves
   slowly enough to be tracked, and the ramp's last steps are its flattest.
4. *Commit.* Stochastic masks (aslp, supermask, hard_concrete) and the reparametrisation's soft
   h train a network that differs from the deterministic one kept. After the ramp, one more
   multiplier per layer holds ``MaskMethod.disagreement`` (the expected share of its weights
   whose training-time mask differs from :meth:`Budget.commit_masks`: exactly
   ``round(density * N)`` weights, shared among the layers in proportion to what their own
   rules keep) under an allowance that falls cubically from its value at the end of the ramp
   to 0 at the last step. While a layer is above its allowance its multiplier grows, pushing
   kept weights' keep probability to 1 and the others' to 0: the own rule converges to the
   exact count, kept weights come to outrank pruned ones across layers (so the top-k of
   ``finalize(density=...)`` changes no decision), the expected density meets the rule's and
   the sampled masks the deterministic one. Without ``total_steps`` there is no schedule (the
   target applies from the first step) and no commit phase.

The budget counts its own calls in training mode (``budget.training`` and gradients enabled): one
per optimizer step. Its state (multipliers, step, initial density, schedule length) is in its
``state_dict``, so a checkpoint resumes it exactly.
"""

from __future__ import annotations

import warnings
from typing import Optional

import torch
from torch import Tensor, nn

from .. import _validate, methods
from ..convert import final_masks, kept_count, masked_layers
from ..methods import MaskMethod
from ..methods.hard_concrete import HardConcrete, prob_and_group_norms
from ..select import keep_counts, top_k_masks

__all__ = ["Budget", "BudgetLoss", "final_densities", "l0_penalty", "cubic_schedule"]


def _budget_layers(model: nn.Module, who: str = "BudgetLoss") -> list:
    layers = masked_layers(model)
    if not layers:
        raise ValueError(f"{who}: the model has no masked layers; call sparseprune.convert first")
    for name, layer in layers:
        pattern = layer.method.pattern
        if pattern is not None:  # density_role says "option": name the pattern, the real reason
            raise TypeError(f"BudgetLoss: layer {name!r} has an N:M pattern "
                            f"({pattern[0]}:{pattern[1]}), which fixes its density at "
                            f"{pattern[0] / pattern[1]:g}; a budget loss does not apply")
        if layer.method.density_role != "learned":
            learned = [m for m in methods.available() if methods.get(m).density_role == "learned"]
            raise TypeError(f"{who}: layer {name!r} uses method {layer.method.name!r}, whose "
                            f"density is not learned; budgets apply to layers of "
                            f"{', '.join(learned)}")
    return layers


def cubic_schedule(initial: float, final: float, progress: float) -> float:
    """Zhu & Gupta's cubic ramp: ``final + (initial - final) * (1 - progress)^3`` for progress
    in [0, 1] (clipped), exactly ``final`` from progress 1 on."""
    p = min(max(float(progress), 0.0), 1.0)
    if p >= 1.0:
        return float(final)
    return float(final) + (float(initial) - float(final)) * (1.0 - p) ** 3


def _share_out(total: int, weights: list[int], floors: list[int], caps: list[int]) -> list[int]:
    """``total`` split in proportion to ``weights`` by largest remainders, each part between its
    floor and its cap (floors first; what they take comes out of the others' shares)."""
    counts = list(floors)
    free = [i for i in range(len(weights)) if counts[i] < caps[i]]
    left = total - sum(counts)
    while left > 0 and free:
        w = sum(weights[i] for i in free) or len(free)
        share = {i: left * (weights[i] if sum(weights[j] for j in free) else 1) / w for i in free}
        step = {i: min(int(share[i]), caps[i] - counts[i]) for i in free}
        rest = left - sum(step.values())
        for i in sorted(free, key=lambda i: (-(share[i] - int(share[i])), i)):
            if rest <= 0:
                break
            if counts[i] + step[i] < caps[i]:
                step[i] += 1
                rest -= 1
        for i in free:
            counts[i] += step[i]
        left = total - sum(counts)
        free = [i for i in free if counts[i] < caps[i]]
    return counts


def _relative(density: Tensor, target: Tensor) -> Tensor:
    """The relative violation ``(density - target) / max(density, target)``: the relative error
    ``(density - target) / target`` near the target, bounded by 1 on both sides, so that a
    density far above a small target (all weights kept at the first step, a target of 0.02)
    does not send a 50x shock through the multiplier."""
    return (density - target) / torch.maximum(density.detach(), target)


class Budget(nn.Module):
    """A budget that holds during training: the number of weights each method's own final rule
    keeps is constrained to ``density * N`` with Lagrange multipliers, along a cubic schedule,
    and the masks then commit to the exact top-k (design: this module's docstring).

    Call it once per optimizer step and add what it returns to the loss::

        budget = sp.budget.Budget(model, 0.1, total_steps=epochs * len(loader))
        for x, y in loader:
            opt.zero_grad()
            (F.cross_entropy(model(x), y) + budget()).backward()
            opt.step()
        sp.finalize(model)          # the own rule now keeps ~10 %; or density=0.1 for exactly

    Args:
        model: a model with masked layers whose methods learn their density.
        density: the target fraction of weights kept, in (0, 1].
        scope: ``"global"``: one constraint over all layers together; ``"local"``: one per
            layer, each keeping ``density`` of its own weights.
        min_layer_density: a per-layer floor in [0, 1]: ``C_l >= min_layer_density * N_l`` with
            a multiplier >= 0 per layer (global scope), ``max(density, min_layer_density)`` per
            layer (local scope); the commit target keeps ``ceil(min_layer_density * N_l)`` in
            every layer.
        total_steps: the number of training calls (optimizer steps) of the run; enables the
            schedule and the commit phase. None: the target applies from the first step, no
            commit.
        warmup: the share of ``total_steps`` over which the target ramps from the initial
            expected density to ``density`` (cubic); the commit phase is the rest.
        commit: run the commit phase (needs ``total_steps`` and ``warmup < 1``).
        dual_lr: the dual ascent step (integral gain) of every multiplier.
        dual_gain: the proportional gain of every multiplier.

    The multipliers and the step counter change only in training mode with gradients enabled
    (``budget.eval()`` or ``torch.no_grad()`` to evaluate it without a step).
    """

    def __init__(self, model: nn.Module, density: float, *, scope: str = "global",
                 min_layer_density: float = 0.0, total_steps: Optional[int] = None,
                 warmup: float = 0.8, commit: bool = True, dual_lr: float = 0.002,
                 dual_gain: float = 20.0):
        super().__init__()
        self.density = _validate.density(density)
        self.scope = _validate.scope(scope)
        self.min_layer_density = _validate.number_in("min_layer_density", min_layer_density,
                                                     0.0, 1.0)
        total_steps, self.warmup, self.dual_lr, self.dual_gain = _validate.budget(
            total_steps, warmup, dual_lr, dual_gain)
        self.commit = bool(commit)
        self._layers = _budget_layers(model, "Budget")
        plain = sorted({layer.method.name for _, layer in self._layers
                        if type(layer.method).disagreement is MaskMethod.disagreement})
        if self.commit and plain:
            warnings.warn(f"Budget: method(s) {', '.join(plain)} define no disagreement(); the "
                          "budget runs without a commit phase", stacklevel=2)
            self.commit = False
        self.names = [name for name, _ in self._layers]
        numels = [layer.weight.numel() for _, layer in self._layers]
        if self.scope == "global":
            keep_counts(numels, self.density, "global", self.min_layer_density)  # floors fit
        n = len(numels)
        self.register_buffer("numels", torch.tensor(numels, dtype=torch.float64),
                             persistent=False)
        self.register_buffer("total_steps", torch.tensor(total_steps or 0, dtype=torch.long))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("initial", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("dual", torch.zeros(n if self.scope == "local" else 1,
                                                 dtype=torch.float64))
        self.register_buffer("floor_dual", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("commit_dual", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("commit_start", torch.full((n,), -1.0, dtype=torch.float64))
        self.last: dict = {}  # the last training call's violations, for logs
        self.reset()

    @torch.no_grad()
    def reset(self) -> None:
        """Start again from the current parameters: the schedule's initial density (each layer's
        expected density now), step 0, multipliers 0."""
        masses = torch.stack([layer.method.budget_mass(layer).detach().double().cpu()
                              for _, layer in self._layers])
        self.initial.copy_(masses / self.numels.cpu())
        for buf in (self.step, self.dual, self.floor_dual, self.commit_dual):
            buf.zero_()
        self.commit_start.fill_(-1.0)

    # ------------------------------------------------------------------------- schedule
    def progress(self) -> Optional[float]:
        """``step / total_steps`` in [0, 1], or None without a schedule."""
        total = int(self.total_steps)
        return min(int(self.step) / total, 1.0) if total else None

    def _ramp(self) -> float:
        p = self.progress()
        if p is None or self.warmup == 0:
            return 1.0
        return min(p / self.warmup, 1.0)

    def targets(self) -> Tensor:
        """The scheduled density now, per layer (float64)."""
        r = self._ramp()
        if self.scope == "global":
            d0 = float((self.initial * self.numels.cpu()).sum() / self.numels.sum())
            d = torch.full_like(self.initial, cubic_schedule(d0, self.density, r))
        else:
            d = torch.tensor([cubic_schedule(float(i), self.density, r)
                              for i in self.initial.tolist()], dtype=torch.float64)
            d = d.clamp(min=self.min_layer_density)
        return d

    def target(self) -> float:
        """The scheduled density now (of all the layers' weights together)."""
        d = self.targets()
        return float((d * self.numels.cpu()).sum() / self.numels.sum())

    def settled(self) -> bool:
        """True once the schedule has reached ``density`` (always, without a schedule)."""
        return self._ramp() >= 1.0

    def commit_progress(self) -> Optional[float]:
        """Progress through the commit phase in [0, 1]; None before it, or without one."""
        p = self.progress()
        if p is None or not self.commit or self.warmup >= 1.0 or p < self.warmup:
            return None
        return min((p - self.warmup) / (1.0 - self.warmup), 1.0)

    # ----------------------------------------------------------------------------- terms
    def masses(self) -> list[Tensor]:
        """Each layer's kept count under its own final rule (straight-through, differentiable)."""
        return [layer.method.rule_mass(layer) for _, layer in self._layers]

    @torch.no_grad()
    def commit_counts(self) -> list[int]:
        """How many weights each layer keeps in :meth:`commit_masks`. Local scope:
        ``max(round(density * N_l), ceil(min_layer_density * N_l))``. Global scope: exactly
        ``round(d_t * N)`` in all, shared out in proportion to what each layer's own rule keeps
        now (largest remainders), at least its floor: the own rule's per-layer structure, moved
        to the exact count. A global top-k would instead cut the weakest weights over all
        layers together, which can be a whole layer whose ranking scale differs (reparam ranks
        by ``|t_l w|``, t learned per layer) when the own rule is a few percent over the count."""
        numels = [int(n) for n in self.numels.tolist()]
        if self.scope == "local":
            return keep_counts(numels, self.density, "local", self.min_layer_density)[1]
        total, floors = keep_counts(numels, self.target(), "global", self.min_layer_density)
        rule = [int(layer.method.final_mask(layer).sum()) for _, layer in self._layers]
        return _share_out(total, rule if sum(rule) else numels, floors, numels)

    @torch.no_grad()
    def commit_masks(self) -> list[Tensor]:
        """The masks the commit phase drives the training-time masks to: in each layer the
        :meth:`commit_counts` weights with the largest ranking scores (``finalize(density=...)``'s
        order; ties by position). Once the masks commit to it, kept weights rank above pruned
        ones in every layer and across layers, so the global top-k keeps the same."""
        return [top_k_masks([layer.method.ranking_scores(layer)], k)[0]
                for (_, layer), k in zip(self._layers, self.commit_counts())]

    def disagreements(self) -> Tensor:
        """Per layer, the expected share of its weights whose training-time mask differs from
        :meth:`commit_masks` (differentiable)."""
        keeps = self.commit_masks()
        parts = torch.stack([layer.method.disagreement(layer, keep).double()
                             for (_, layer), keep in zip(self._layers, keeps)])
        return parts / self.numels.to(parts.device)

    def disagreement(self) -> Tensor:
        """The expected share of all the layers' weights whose training-time mask differs from
        :meth:`commit_masks` (differentiable)."""
        u = self.disagreements()
        return (u * self.numels.to(u.device)).sum() / self.numels.sum()

    def forward(self) -> Tensor:
        masses = self.masses()
        dtype, device = masses[0].dtype, masses[0].device
        c = torch.stack([m.double() for m in masses])
        numels = self.numels.to(device)
        share = numels / numels.sum()
        d = self.targets().to(device)
        if self.scope == "global":
            v = _relative(c.sum() / numels.sum(), d[0]).reshape(1)
            weights = torch.ones(1, dtype=torch.float64, device=device)
        else:
            v = _relative(c / numels, d)  # each layer its own constraint, its own price
            weights = torch.ones_like(share)
        dual = self.dual.to(device)
        term = (weights * (dual + self.dual_gain * v.detach()) * v).sum()
        floor = None
        if self.scope == "global" and self.min_layer_density > 0:
            floor = -_relative(c / numels, torch.full_like(c, self.min_layer_density))
            price = self.floor_dual.to(device) + self.dual_gain * floor.detach().clamp(min=0)
            # Priced per weight (a floor pushes up, both ways a small layer's P part would
            # throw its scores past the target under SGD momentum).
            term = term + (share * price * floor).sum()
        commit = None
        r = self.commit_progress()
        if r is not None:
            # One multiplier per layer, so that no layer stays uncommitted behind the others.
            u = self.disagreements().to(device)
            start = self.commit_start.to(device)
            if bool((start < 0).any()):  # the first call of the phase: the allowance starts here
                start = u.detach()
                if self.training and torch.is_grad_enabled():
                    self.commit_start.copy_(start)
            allowed = start * (1.0 - r) ** 3
            commit = (u - allowed) / self.density
            price = self.commit_dual.to(device) + self.dual_gain * commit.detach().clamp(min=0)
            # Each layer's own (not weighted by its size): a commit only pushes weights away
            # from their threshold, so a strong push cannot overshoot, and a small layer whose
            # weights the task holds on to still commits.
            term = term + (price * commit).sum()
        if self.training and torch.is_grad_enabled():
            self._dual_step(v.detach(), None if floor is None else floor.detach(),
                            None if commit is None else commit.detach())
        return term.to(dtype)

    @torch.no_grad()
    def _dual_step(self, v: Tensor, floor: Optional[Tensor], commit: Optional[Tensor]) -> None:
        """Dual ascent: each multiplier moves by ``dual_lr`` times its relative violation
        (inequalities' multipliers stay >= 0); then one step on."""
        self.dual.add_(self.dual_lr * v.to(self.dual.device))
        if floor is not None:
            self.floor_dual.add_(self.dual_lr * floor.to(self.floor_dual.device)).clamp_(min=0)
        if commit is not None:
            self.commit_dual.add_(self.dual_lr * commit.to(self.commit_dual.device)).clamp_(min=0)
        self.step.add_(1)
        self.last = {"violation": v.tolist(),
                     "commit": None if commit is None else commit.tolist()}

    # ------------------------------------------------------------------------- reporting
    @torch.no_grad()
    def rule_density(self) -> float:
        """The density the methods' own final rules keep now."""
        return float(sum(layer.method.final_mask(layer).sum().item()
                         for _, layer in self._layers) / self.numels.sum())

    @torch.no_grad()
    def expected_density(self) -> float:
        """The expected density of the training-time masks now (C / N of ``budget_mass``)."""
        return float(sum(layer.method.budget_mass(layer).double().cpu()
                         for _, layer in self._layers) / self.numels.sum())

    def extra_repr(self) -> str:
        total = int(self.total_steps) or None
        return (f"density={self.density}, scope={self.scope!r}, layers={len(self.names)}, "
                f"min_layer_density={self.min_layer_density}, total_steps={total}, "
                f"warmup={self.warmup}, commit={self.commit}, dual_lr={self.dual_lr}, "
                f"dual_gain={self.dual_gain}")


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
                    scope: str = "global", min_layer_density: float = 0.0) -> dict:
    """The final densities of the masked layers of ``model`` under both final rules:

    - ``"rule"``: each method's own final mask (reparam: ``h >= 0.5``; aslp/supermask:
      ``scores >= 0``; hard_concrete: ``z_hat > 0``), what :func:`sparseprune.finalize` keeps
      without a density;
    - ``"exact"`` (with ``density``): the top-k rule of ``finalize(model, density=density,
      scope=scope, min_layer_density=min_layer_density)``, which keeps exactly
      ``round(density * N)`` weights;
    - ``"changed"`` (with ``density``): the share of the weights whose keep / prune decision
      differs between the two (0: the exact top-k keeps what the own rule keeps);
    - ``"expected"``: C / N for methods with a learned density (else absent): the expected
      density of the training-time masks.

    Values are fractions of all masked weights; ``"target"`` repeats ``density``.
    """
    layers = masked_layers(model)
    if not layers:
        raise ValueError("final_densities: the model has no masked layers")
    total = sum(layer.weight.numel() for _, layer in layers)
    out: dict = {"target": density}
    rule = final_masks(model)
    out["rule"] = sum(int(m.sum()) for m in rule.values()) / total
    if density is not None:
        masks = final_masks(model, density=density, scope=scope,
                            min_layer_density=min_layer_density)
        # What finalize keeps: a weight whose final scale is 0 (a closed hard-concrete gate) is
        # pruned even when the top-k selects it.
        out["exact"] = sum(kept_count(layer, masks[name]) for name, layer in layers) / total
        out["changed"] = sum(int((masks[name] != rule[name]).sum()) for name in rule) / total
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
