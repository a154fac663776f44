"""Sensitivity-driven regularisation (Tartaglione, Lepsøy, Fiandrotti, Francini, NeurIPS 2018):
the layer side. Formulas and the choices behind them: docs/METHODS.md 6. The training procedure
(sensitivity, gated decay, thresholding, threshold search) is in :mod:`sparseprune.sensitivity`.
"""

from __future__ import annotations

from .. import _args
from .base import register
from .fixed import FixedMask

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

    def __init__(self, strength: float = 1e-4, variant: str = "unspecific",
                 output: str = "softmax", plateau_patience: int = 20,
                 threshold_tolerance: float = 0.05) -> None:
        self.strength = _args.finite_number("strength", strength, minimum=0.0)
        if isinstance(plateau_patience, bool) or not isinstance(plateau_patience, int) \
                or plateau_patience < 1:
            raise ValueError(f"plateau_patience must be a positive int, got {plateau_patience!r}")
        self.plateau_patience = plateau_patience
        self.threshold_tolerance = _args.finite_number("threshold_tolerance",
                                                       threshold_tolerance, minimum=0.0)
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        self.variant = variant
        self.output = output
