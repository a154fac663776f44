"""Sensitivity-driven regularisation (Tartaglione, Lepsøy, Fiandrotti, Francini, NeurIPS 2018;
docs/METHODS.md 6): the layer method ``"sensitivity"`` and the training procedure for models
converted with it (public as ``sparseprune.sensitivity``).

Each training step, after the optimizer step, :func:`sensitivity_step` decays every weight in
proportion to its insensitivity: ``w -= strength * w * max(0, 1 - S)``, with S the sensitivity of
the network's outputs to that weight (:func:`output_sensitivity`). When the validation loss
reaches a plateau (:class:`Plateau`), :func:`search_threshold` finds the largest magnitude
threshold the validation loss tolerates and :func:`threshold_` prunes the weights below it::

    import sparseprune as sp
    from sparseprune import sensitivity as sens

    sp.convert(model, "sensitivity", strength=1e-4)   # variant="unspecific", output="softmax"
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    plateau = sens.Plateau(patience=20)
    for epoch in range(epochs):
        model.train()
        for x, y in train_loader:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            sens.sensitivity_step(model, x, y)     # insensitive weights decay toward 0
        if plateau.update(val_loss(model)):        # val_loss(model) -> float, in eval mode
            T = sens.search_threshold(model, val_loss, tolerance=0.05)
            sens.threshold_(model, T, optimizer=opt)
    print(sp.sparsity_report(model))
    sp.finalize(model)                             # plain layers, pruned weights exactly 0

Documented choices (the paper could not be read; METHODS 6 labels what is confirmed):

- S is taken of ``ybar``, the batch mean of the outputs (softmax probabilities or logits: the
  layer option ``output``), with respect to the effective weight ``weight * mask``.
  ``"unspecific"``: ``S = (1/C) sum_k |d ybar_k / d w|`` (C backward passes);
  ``"specific"``: ``S = |d mean_i(y_i[label_i]) / d w|`` (one), each sample's true class.
- The decay is LOBSTER's form: after the optimizer step, not scaled by the learning rate, on
  the weights of sensitivity layers only (not biases).
- The threshold rule is the LOBSTER procedure (plateau, then bisection against a relative
  validation-loss tolerance); the 2018 paper's own rule for T is unconfirmed.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Callable, Iterator, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from .. import _validate as V
from .base import Recipe, TrainingHooks, layers_using, register
from .fixed import FixedMask

if TYPE_CHECKING:  # pragma: no cover
    from ..nn.masked import MaskedLayer

__all__ = ["Sensitivity", "output_sensitivity", "decay_", "sensitivity_step", "threshold_",
           "search_threshold", "Plateau"]

VARIANTS = ("unspecific", "specific")
OUTPUTS = ("softmax", "logits")


@register
class Sensitivity(FixedMask):
    """Trained weights behind a fixed boolean ``mask`` buffer (exactly as ``"fixed"``: the forward
    computes with ``torch.where(mask, weight, 0)``, pruned weights are exactly 0 and get a zero
    gradient). The mask only shrinks, when :func:`sparseprune.sensitivity.threshold_` prunes the
    weights whose magnitude fell below a threshold.

    The options say how :mod:`sparseprune.sensitivity` treats the layer:

    Options:
        strength: lambda >= 0, the decay factor of :func:`~sparseprune.sensitivity.sensitivity_step`,
            ``w -= strength * w * max(0, 1 - S)`` once per training step, not multiplied by the
            learning rate (LOBSTER's form, METHODS 6.2). Default 1e-4, the lambda of LOBSTER's
            LeNet-5 / MNIST example (SGD lr 0.1, batch 100; METHODS 6.4); the 2018 paper's
            values are unconfirmed.
        variant: ``"unspecific"``: S averaged over all C outputs; ``"specific"``: S of the
            ground-truth class output only (needs the labels). Our reading of the paper's two
            names, which is unconfirmed (METHODS 6.3): label results with the variant.
        output: ``"softmax"`` (default): S of the post-softmax probabilities, the more likely
            reading (METHODS 6.1, unconfirmed); ``"logits"``: of the model's raw outputs.
            Measured on a trained LeNet-300-100 (batch 100): post-softmax S is at most ~4e-3
            (median ~1e-4), so ``max(0, 1 - S)`` is ~1 and the decay acts almost uniformly;
            logits give S ~100 times larger (a few weights reach S >= 1 with "specific").

        plateau_patience, threshold_tolerance: the LOBSTER schedule the experiment runner
            follows (METHODS 6.4): when the validation loss has not improved for
            ``plateau_patience`` epochs (LOBSTER's pwe, 20), prune below the largest threshold
            whose validation loss stays within ``1 + threshold_tolerance`` of the unpruned one
            (LOBSTER's twt, 0.05). In a loop of your own, pass them to
            :class:`~sparseprune.sensitivity.Plateau` and
            :func:`~sparseprune.sensitivity.search_threshold`.

    All sensitivity layers of a model must share ``variant`` and ``output`` (one forward serves
    them all); ``strength`` may differ per layer. Final mask and ranking scores: as ``"fixed"``.
    """

    name = "sensitivity"
    parameter_names = ()  # the weights are the only trained tensors, as for "fixed"
    standalone = True     # unlike "fixed", it prunes on its own
    recipe = Recipe({"weights": 0.1}, source="METHODS.md 6.4 (LOBSTER's example: SGD lr 0.1)")

    def __init__(self, strength: float = 1e-4, variant: str = "unspecific",
                 output: str = "softmax", plateau_patience: int = 20,
                 threshold_tolerance: float = 0.05) -> None:
        self.strength = V.finite_number("strength", strength, minimum=0.0)
        self.plateau_patience = V.positive_int("plateau_patience", plateau_patience)
        self.threshold_tolerance = V.finite_number("threshold_tolerance", threshold_tolerance,
                                                   minimum=0.0)
        self.variant = V.choice("variant", variant, VARIANTS)
        self.output = V.choice("output", output, OUTPUTS)

    @classmethod
    def training_hooks(cls, layers: Sequence["MaskedLayer"], *,
                       epochs_per_round: int) -> TrainingHooks:
        first = layers[0].method
        return _Procedure(first.plateau_patience, first.threshold_tolerance)


def _layers(model: nn.Module) -> list[tuple[str, "MaskedLayer"]]:
    """The model's sensitivity layers; they must agree on variant and output."""
    layers = layers_using(model, Sensitivity)
    if not layers:
        raise ValueError("the model has no 'sensitivity' layers; convert it first with "
                         "sparseprune.convert(model, 'sensitivity')")
    (first, a), settings = layers[0], lambda m: f"variant={m.variant!r}, output={m.output!r}"
    for name, b in layers[1:]:
        if settings(a.method) != settings(b.method):
            raise ValueError(f"sensitivity layers must share variant and output (one forward "
                             f"serves them all): {first!r} has {settings(a.method)}, {name!r} "
                             f"has {settings(b.method)}")
    return layers


@contextlib.contextmanager
def _running_stats_kept(model: nn.Module) -> Iterator[None]:
    """The extra forward must not count as a batch in the norm layers' running statistics."""
    norms = [m for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._NormBase) and m.training]
    saved = [[b.clone() for b in m.buffers(recurse=False)] for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, buffers in zip(norms, saved):
                for b, s in zip(m.buffers(recurse=False), buffers):
                    b.copy_(s)


def _check_labels(labels: Optional[Tensor], out: Tensor) -> Tensor:
    if labels is None:
        raise ValueError("labels are required for variant='specific' (the ground-truth class "
                         "of each sample), got None")
    if not isinstance(labels, Tensor) or labels.dtype not in (torch.int64, torch.int32):
        got = f"dtype {labels.dtype}" if isinstance(labels, Tensor) else type(labels).__name__
        raise TypeError(f"labels must be an int64 or int32 Tensor, got {got}")
    if labels.shape != out.shape[:1]:
        raise ValueError(f"labels must have shape [{out.shape[0]}] (one per sample), "
                         f"got {list(labels.shape)}")
    if labels.numel() and not (0 <= int(labels.min()) and int(labels.max()) < out.shape[1]):
        raise ValueError(f"labels must be class indices in [0, {out.shape[1]}), got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    return labels.to(device=out.device, dtype=torch.int64)


def output_sensitivity(model: nn.Module, inputs: Tensor,
                       labels: Optional[Tensor] = None) -> dict[str, Tensor]:
    """S(y, w) for the weight of every sensitivity layer, by layer name (the weight's shape).

    One forward of ``inputs`` in the model's current mode (norm layers' running statistics are
    restored afterwards). ``model(inputs)`` must return ``[batch, C]`` logits. ``labels`` (class
    indices, ``[batch]``) are needed for ``variant="specific"`` and ignored otherwise. Gradients
    are taken with :func:`torch.autograd.grad`, so no ``.grad`` is modified; pruned weights get
    S = 0 (the forward multiplies them by the mask).
    """
    layers = _layers(model)
    method, weights = layers[0][1].method, [layer.weight for _, layer in layers]
    for (name, _), w in zip(layers, weights):
        if not w.requires_grad:
            raise ValueError(f"the weight of layer {name!r} does not require grad; the "
                             "sensitivity is a derivative with respect to it")
    # Restored only after the backward passes, which check that the buffers are unchanged.
    with _running_stats_kept(model), torch.enable_grad():
        out = model(inputs)
        if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] == 0:
            got = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"model(inputs) must return [batch, C] logits with batch >= 1, "
                             f"got {got}")
        y = out.softmax(dim=1) if method.output == "softmax" else out
        if method.variant == "specific":
            target = y.gather(1, _check_labels(labels, out)[:, None]).mean()
            grads = torch.autograd.grad(target, weights, allow_unused=True,
                                        materialize_grads=True)
            s = [g.abs() for g in grads]
        else:
            s = _unspecific(y.mean(dim=0), weights)
    return {name: t for (name, _), t in zip(layers, s)}


def _unspecific(ybar: Tensor, weights: list[Tensor]) -> list[Tensor]:
    """``(1/C) sum_k |d ybar_k / d w|`` per weight tensor, by C backward passes through the
    retained graph: as fast as one batched vector-Jacobian product (``is_grads_batched`` over the
    C one-hot rows) or faster (batch 100, one thread: LeNet-300 55 vs 55 ms, LeNet-5 584 vs
    711 ms, Conv4 13.1 vs 13.1 s, LeNet-300 with C = 100 575 vs 710 ms), with one gradient in
    memory instead of C and no vmap support needed from the model's ops."""
    classes = ybar.numel()
    total = [torch.zeros_like(w) for w in weights]
    for k in range(classes):
        grads = torch.autograd.grad(ybar[k], weights, retain_graph=k + 1 < classes,
                                    allow_unused=True, materialize_grads=True)
        for t, g in zip(total, grads):
            t.add_(g.abs())
    return [t.div_(classes) for t in total]


@torch.no_grad()
def decay_(model: nn.Module, sensitivity: Mapping[str, Tensor]) -> None:
    """``w -= strength * w * max(0, 1 - S)`` on every sensitivity layer, with S from
    ``sensitivity`` (by layer name, as :func:`output_sensitivity` returns it); pruned weights
    are set to 0 again. Weights with S >= 1 are left exactly as they were."""
    layers = _layers(model)
    for name, layer in layers:  # all checks first: a bad call changes nothing
        s = sensitivity.get(name) if isinstance(sensitivity, Mapping) else None
        if not isinstance(s, Tensor) or s.shape != layer.weight.shape:
            got = list(s.shape) if isinstance(s, Tensor) else type(s).__name__
            raise ValueError(f"sensitivity[{name!r}] must be a Tensor of the weight's shape "
                             f"{list(layer.weight.shape)}, got {got}")
    for name, layer in layers:
        w = layer.weight
        insensitivity = (1 - sensitivity[name].to(w.dtype)).clamp_(min=0)
        w.addcmul_(w, insensitivity, value=-layer.method.strength)
        # The optimizer may have moved pruned weights (momentum from before they were pruned).
        w.masked_fill_(~layer.mask, 0)


def sensitivity_step(model: nn.Module, inputs: Tensor, labels: Optional[Tensor] = None) -> None:
    """The sensitivity term of one training step, applied after ``optimizer.step()``:
    :func:`decay_` with S from :func:`output_sensitivity` of this batch at the updated weights.
    Nothing is computed when every layer's strength is 0."""
    if all(layer.method.strength == 0 for _, layer in _layers(model)):
        return
    decay_(model, output_sensitivity(model, inputs, labels))


@torch.no_grad()
def _prune_below(layers: list[tuple[str, "MaskedLayer"]], threshold: float) -> dict[str, Tensor]:
    """Mask and zero the kept weights with ``|w| < threshold``; returns them by layer name."""
    newly = {}
    for name, layer in layers:
        newly[name] = layer.mask & (layer.weight.abs() < threshold)
        layer.mask.masked_fill_(newly[name], False)
        layer.weight.masked_fill_(newly[name], 0)
    return newly


@torch.no_grad()
def threshold_(model: nn.Module, threshold: float, *,
               optimizer: Optional[torch.optim.Optimizer] = None) -> dict[str, int]:
    """Prune every weight of the sensitivity layers with ``|w| < threshold``: mask it and set
    it (and its ``.grad`` entry) to 0. Masks only shrink: pruned weights never come back.

    With ``optimizer``, its per-weight state tensors (momentum, Adam moments) are zeroed at the
    newly pruned entries, so that the next steps leave those weights at 0. Returns the number
    of weights newly pruned, by layer name."""
    threshold = V.finite_number("threshold", threshold, minimum=0.0)
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer or None, "
                        f"got {type(optimizer).__name__}")
    layers = _layers(model)
    newly = _prune_below(layers, threshold)
    for name, layer in layers:
        layer.method.set_mask(layer)  # zeroes the .grad entries of pruned weights too
        state = optimizer.state.get(layer.weight, {}) if optimizer is not None else {}
        for value in state.values():
            if isinstance(value, Tensor) and value.shape == layer.weight.shape:
                value.masked_fill_(newly[name], 0)
    return {name: int(mask.sum()) for name, mask in newly.items()}


def _loss(value) -> float:
    value = value.item() if isinstance(value, Tensor) and value.numel() == 1 else value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"evaluate(model) must return the validation loss as a number, "
                        f"got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"evaluate(model) must return a finite loss >= 0, got {value!r}")
    return float(value)


def search_threshold(model: nn.Module, evaluate: Callable[[nn.Module], float], *,
                     tolerance: float = 0.05, iterations: int = 16) -> float:
    """The LOBSTER procedure's threshold search: the largest T, by bisection of [0, max |w|]
    (over the kept weights of the sensitivity layers), whose pruning as :func:`threshold_` keeps
    the validation loss ``evaluate(model)`` <= (1 + tolerance) times its value before pruning.

    Guarantee (for a deterministic ``evaluate``): the returned T was measured within the
    tolerance, and T + max|w| / 2**iterations was measured outside it, unless T = max|w| (every
    weight but the largest can go). The loss need not be monotone in T, so T is the edge found by
    the bisection, not necessarily the largest feasible T. Candidates pruning the same weights
    are evaluated once. The model (its whole ``state_dict``) is restored after every candidate;
    ``.grad`` and optimizer state are not touched. Apply the result with :func:`threshold_`.
    """
    layers = _layers(model)
    tolerance = V.finite_number("tolerance", tolerance, minimum=0.0)
    V.positive_int("iterations", iterations)
    V.callable_("evaluate", evaluate, "model -> loss")
    kept = [layer.weight.detach().abs()[layer.mask] for _, layer in layers]
    top = max((float(k.max()) for k in kept if k.numel()), default=0.0)
    snapshot = {k: v.clone() for k, v in model.state_dict().items()}
    losses: dict[int, float] = {}  # number of weights a candidate prunes -> its loss

    def loss_at(t: float) -> float:
        count = sum(int((k < t).sum()) for k in kept)  # the comparison _prune_below makes
        if count not in losses:
            try:
                _prune_below(layers, t)
                losses[count] = _loss(evaluate(model))
            finally:
                model.load_state_dict(snapshot)
        return losses[count]

    bound = (1 + tolerance) * loss_at(0.0)
    if top == 0.0 or loss_at(top) <= bound:
        return top
    lo, hi = 0.0, top  # invariant: lo within the tolerance, hi outside it
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if loss_at(mid) <= bound:
            lo = mid
        else:
            hi = mid
    return lo


class Plateau:
    """LOBSTER's trigger for thresholding: :meth:`update` returns True when the validation loss
    has not improved on its best for ``patience`` consecutive updates, then starts afresh (the
    loss rises after pruning, so the best is forgotten). An improvement is a strictly lower loss.
    """

    def __init__(self, patience: int) -> None:
        self.patience = V.positive_int("patience", patience)
        self.best = math.inf
        self.bad_updates = 0

    def update(self, loss: float) -> bool:
        """Record one validation loss; True on a plateau."""
        loss = float(loss)
        if loss < self.best:
            self.best, self.bad_updates = loss, 0
            return False
        self.bad_updates += 1
        if self.bad_updates < self.patience:
            return False
        self.best, self.bad_updates = math.inf, 0
        return True


class _Procedure(TrainingHooks):
    """The LOBSTER procedure: the gated decay after every step; on a validation-loss plateau, the
    threshold search and pruning."""

    needs_validation = True

    def __init__(self, patience: int, tolerance: float):
        self.plateau, self.tolerance = Plateau(patience), tolerance

    def after_step(self, model: nn.Module, inputs: Tensor, labels: Tensor) -> None:
        sensitivity_step(model, inputs, labels)

    def end_of_epoch(self, model, epoch, optimizer, val_loss, evaluate) -> Optional[str]:
        if val_loss is None or not self.plateau.update(val_loss):
            return None
        threshold = search_threshold(model, evaluate, tolerance=self.tolerance)
        pruned = sum(threshold_(model, threshold, optimizer=optimizer).values())
        kept = sum(int(layer.mask.sum()) for _, layer in _layers(model))
        total = sum(layer.mask.numel() for _, layer in _layers(model))
        return (f"validation loss plateau: pruned {pruned} weights below |w| < {threshold:.4g}, "
                f"density of the sensitivity layers {kept / total:.4f}")

    def state_dict(self) -> dict:
        return {"plateau_best": self.plateau.best, "plateau_bad": self.plateau.bad_updates}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.plateau.best, self.plateau.bad_updates = state["plateau_best"], state["plateau_bad"]
