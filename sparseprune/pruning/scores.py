"""Saliency scores of the pruning-at-initialisation methods (docs/METHODS.md section 9).

Every scorer sees the dense model, never modifies it, and evaluates it at other weights through
``torch.func.functional_call``: the prunable weights are replaced by leaf tensors (the weights
themselves for one-shot scores, ``theta * mask`` for the sparse points of the iterative ones),
so gradients are taken with respect to the *effective* weights. Gradients accumulate into those
leaves only (``backward(inputs=...)``): the model's own ``.grad`` fields are left alone.

Memory: besides the model, the gradient (whose storage becomes the scores) and the autograd
graph of one batch, a scorer holds at most one extra weight-sized copy at a time: none for SNIP,
random and magnitude; Iter-SNIP's and FORCE's effective weights ``theta * mask`` (updated in
place from step to step); SynFlow's float64 ``|theta|`` (so copy and gradient take twice the
bytes of float32 weights; the other parameters and buffers get a float64 ``|.|`` too); GraSP's
stop-gradient ``g``, plus, while the Hessian-vector product runs, the differentiable gradient in
its graph. tests/test_prune_at_init.py measures these peaks.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Callable, ClassVar, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .batches import Batch, BatchStream

GRASP_TEMPERATURE = 200.0
GRASP_SAMPLES_PER_CLASS = 10


class Context:
    """What a scorer needs: the model, its prunable layers and the scoring data."""

    def __init__(self, model: nn.Module, names: Sequence[str], weights: Sequence[Tensor], *,
                 loss_fn: Callable[[Tensor, Tensor], Tensor],
                 stream: Optional[BatchStream] = None, batches: int = 1,
                 samples_per_class: Optional[int] = None,
                 generator: Optional[torch.Generator] = None,
                 input_shape: Optional[tuple[int, ...]] = None):
        self.model, self.names, self.weights = model, list(names), list(weights)
        self.keys = [f"{n}.weight" if n else "weight" for n in self.names]
        self.loss_fn, self.stream, self.batches = loss_fn, stream, batches
        self.samples_per_class, self.generator = samples_per_class, generator
        self.input_shape = input_shape
        self.temperature = 1.0  # GraSP divides the outputs by 200
        self._num_classes: Optional[int] = None

    def num_classes(self) -> int:
        """The model's output width, from one example of the first batch."""
        if self._num_classes is None:
            x = self.stream.peek()[0][:1]
            with torch.no_grad():
                self._num_classes = int(self.model(x).shape[-1])
        return self._num_classes

    def batch(self) -> Batch:
        """The next scoring batch: class-balanced when ``samples_per_class`` is set."""
        if self.samples_per_class:
            return self.stream.balanced(self.samples_per_class, self.num_classes())
        return self.stream.next()

    def forward(self, leaves: Sequence[Tensor], x: Tensor,
                others: Optional[dict[str, Tensor]] = None) -> Tensor:
        """The model's output with the prunable weights replaced by ``leaves``."""
        params = dict(others or {})
        params.update(zip(self.keys, leaves))
        return functional_call(self.model, params, (x,))

    def loss(self, leaves: Sequence[Tensor], x: Tensor, y: Tensor, scale: float = 1.0) -> Tensor:
        """``loss_fn(output / temperature, y) * scale`` with the prunable weights = ``leaves``."""
        out = self.forward(leaves, x)
        return self.loss_fn(out / self.temperature if self.temperature != 1 else out, y) * scale

    def loss_gradients(self, leaves: Sequence[Tensor], batch_list: Sequence[Batch]) -> list[Tensor]:
        """The gradient of the mean loss over ``batch_list`` with respect to ``leaves``."""
        for leaf in leaves:
            leaf.grad = None
        for x, y in batch_list:
            self.loss(leaves, x, y, 1.0 / len(batch_list)).backward(inputs=list(leaves))
        grads = []
        for leaf in leaves:
            grads.append(leaf.grad if leaf.grad is not None else torch.zeros_like(leaf))
            leaf.grad = None
        return grads


def _normalise_by_sum(scores: list[Tensor], absolute_sum: bool) -> list[Tensor]:
    """Divide by ``sum(scores)`` (SNIP) or ``|sum(scores)| + 1e-10`` (GraSP), in place; a
    positive constant, so masks do not change. All-zero SNIP scores are left as they are."""
    total = sum(float(s.sum(dtype=torch.float64)) for s in scores)
    denom = abs(total) + 1e-10 if absolute_sum else total
    if denom > 0 and math.isfinite(denom):
        for s in scores:
            s.div_(denom)
    return scores


class Scorer(ABC):
    """A method's scores for the current masks (None: the dense network, all weights kept).

    ``keep`` says which scores win ("largest", or "smallest" for GraSP); ``iterative`` scorers
    follow a density schedule; ``revives`` says whether a pruned weight can come back."""

    name: ClassVar[str] = ""
    needs_data: ClassVar[bool] = True
    iterative: ClassVar[bool] = False
    default_iterations: ClassVar[int] = 1
    revives: ClassVar[bool] = False
    keep: ClassVar[str] = "largest"

    def __init__(self, ctx: Context):
        self.ctx = ctx

    @abstractmethod
    def __call__(self, masks: Optional[list[Tensor]]) -> list[Tensor]:
        """The scores of every prunable weight, one tensor per layer."""


class SNIP(Scorer):
    """``|theta * dL/dtheta|`` at the dense point, normalised by its sum (Lee et al. 2019; the
    gradient averaged over ``batches`` minibatches, one by default as in SNIP's code)."""

    name = "snip"

    def __call__(self, masks: Optional[list[Tensor]]) -> list[Tensor]:
        leaves = [w.detach().requires_grad_() for w in self.ctx.weights]  # no copy
        grads = self.ctx.loss_gradients(leaves, [self.ctx.batch() for _ in range(self.ctx.batches)])
        scores = [g.mul_(w.detach()).abs_() for g, w in zip(grads, self.ctx.weights)]
        return _normalise_by_sum(scores, absolute_sum=False)


class GraSP(Scorer):
    """``S = -theta * (H g)`` with ``g`` the gradient of the cross-entropy of ``logits / 200``
    over class-balanced batches (``samples_per_class`` examples of every class, default 10) and
    ``H g = d(g^T sg(g)) / dtheta``, normalised by ``|sum S| + 1e-10``; the *highest* scores are
    removed (Wang et al. 2020). ``g`` and ``Hg`` average over the same ``batches`` batches. The
    reference's re-drawn Xavier weights of the scoring copy are not reproduced: the network's own
    weights are scored."""

    name = "grasp"
    keep = "smallest"

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        ctx.temperature = GRASP_TEMPERATURE

    def __call__(self, masks: Optional[list[Tensor]]) -> list[Tensor]:
        ctx = self.ctx
        leaves = [w.detach().requires_grad_() for w in ctx.weights]
        batch_list = [ctx.batch() for _ in range(ctx.batches)]
        g = ctx.loss_gradients(leaves, batch_list)  # the stop-gradient copy
        for x, y in batch_list:
            loss = ctx.loss(leaves, x, y, 1.0 / len(batch_list))
            grad_f = torch.autograd.grad(loss, leaves, create_graph=True)
            z = sum((gi * fi).sum() for gi, fi in zip(g, grad_f))
            z.backward(inputs=leaves)  # accumulates H g into leaf.grad
            del loss, grad_f, z
        del g
        scores = []
        for leaf, w in zip(leaves, ctx.weights):
            hg = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
            leaf.grad = None
            scores.append(hg.mul_(w.detach()).neg_())
        return _normalise_by_sum(scores, absolute_sum=True)


class SynFlow(Scorer):
    """Data-free (Tanaka et al. 2020): every floating parameter and buffer replaced by its
    ``|.|`` in float64 (the model itself is untouched, so its signs need no restoring), one
    all-ones input of shape ``(1, *input_shape)``, ``R = sum(output)``, score
    ``|theta_eff * dR/dtheta_eff|`` with ``theta_eff = |theta| * mask``: 0 for pruned weights, which
    never come back. Computed in float64 because ``R`` overflows float32 on deep networks."""

    name = "synflow"
    needs_data = False
    iterative = True
    default_iterations = 100

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        prunable = set(ctx.keys)
        self.others = {
            k: t.detach().abs().double()
            for k, t in [*ctx.model.named_parameters(), *ctx.model.named_buffers()]
            if k not in prunable and t.is_floating_point()}
        self.abs_weights = [w.detach().abs().double().requires_grad_() for w in ctx.weights]
        device = ctx.weights[0].device
        self.ones = torch.ones((1, *ctx.input_shape), dtype=torch.float64, device=device)

    def __call__(self, masks: Optional[list[Tensor]]) -> list[Tensor]:
        leaves = self.abs_weights
        if masks is not None:
            with torch.no_grad():
                for leaf, m in zip(leaves, masks):
                    leaf.mul_(m)  # masks only shrink, so |theta| * m_t in place is exact
        for leaf in leaves:
            leaf.grad = None
        self.ctx.forward(leaves, self.ones, self.others).sum().backward(inputs=leaves)
        scores = []
        for leaf in leaves:
            grad = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
            leaf.grad = None
            scores.append(grad.mul_(leaf.detach()).abs_())
        return scores


class _SparsePointScorer(Scorer):
    """Gradients at the sparse point ``theta * mask`` (de Jorge et al. 2021), averaged over
    ``batches`` minibatches; the effective weights are one copy, updated in place per step."""

    iterative = True
    default_iterations = 10  # FORCE's code default (num_steps)

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.effective = [w.detach().clone().requires_grad_() for w in ctx.weights]

    def gradients(self, masks: Optional[list[Tensor]]) -> list[Tensor]:
        if masks is not None:
            with torch.no_grad():
                for e, w, m in zip(self.effective, self.ctx.weights, masks):
                    torch.mul(w.detach(), m, out=e)
        batch_list = [self.ctx.batch() for _ in range(self.ctx.batches)]
        return self.ctx.loss_gradients(self.effective, batch_list)


class IterSNIP(_SparsePointScorer):
    """``|(theta * mask) * g|``: the pruned weights score 0 and are excluded from selection, so
    they stay pruned (the reference gives them the global minimum)."""

    name = "iter_snip"

    def __call__(self, masks: Optional[list[Tensor]]) -> list[Tensor]:
        grads = self.gradients(masks)
        return [g.mul_(e.detach()).abs_() for g, e in zip(grads, self.effective)]


class FORCE(_SparsePointScorer):
    """``|theta_0 * g|``: the gradient at the sparse point, the *dense* initial weights; a pruned
    weight whose gradient grows can come back."""

    name = "force"
    revives = True

    def __call__(self, masks: Optional[list[Tensor]]) -> list[Tensor]:
        grads = self.gradients(masks)
        return [g.mul_(w.detach()).abs_() for g, w in zip(grads, self.ctx.weights)]


class Magnitude(Scorer):
    """``|theta|`` (no data)."""

    name = "magnitude"
    needs_data = False

    def __call__(self, masks: Optional[list[Tensor]]) -> list[Tensor]:
        return [w.detach().abs() for w in self.ctx.weights]


class Random(Scorer):
    """iid N(0, 1) scores drawn from ``generator`` (torch's default one when None), layer by
    layer in module order, on the generator's device; the same global/local counting as the
    other methods (global: each layer's density is about ``density``)."""

    name = "random"
    needs_data = False

    def __call__(self, masks: Optional[list[Tensor]]) -> list[Tensor]:
        gen = self.ctx.generator
        device = gen.device if gen is not None else torch.device("cpu")
        return [torch.randn(w.shape, generator=gen, device=device).to(w.device)
                for w in self.ctx.weights]


SCORERS: dict[str, type[Scorer]] = {
    cls.name: cls for cls in (SNIP, GraSP, SynFlow, IterSNIP, FORCE, Random, Magnitude)}
