"""Which plain modules have masked twins, in one place (used by ``convert`` and the report).

Covered: ``nn.Linear`` and its subclasses that keep ``nn.Linear.forward`` (e.g. the ``out_proj``
of ``nn.MultiheadAttention``), ``nn.Conv1d``, ``nn.Conv2d``, Hugging Face's ``Conv1D`` (GPT-2's
linear layers), the packed input projection of ``nn.MultiheadAttention``, and, opt-in,
``nn.Embedding``. Every other module's 2-D+ weights stay dense: :func:`uncovered_weights` lists
them so that ``convert`` can say so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

from torch import Tensor, nn

from .attention import MaskedMultiheadAttention
from .conv import MaskedConv1d, MaskedConv2d
from .embedding import MaskedEmbedding
from .masked import MaskedHFConv1D, MaskedLayer, MaskedLinear


def _is_hf_conv1d(m: nn.Module) -> bool:
    # Matched by name: transformers is not a dependency.
    return type(m).__name__ == "Conv1D" and hasattr(m, "nf") and getattr(m, "weight", None) \
        is not None and m.weight.dim() == 2


def _tokens(out: Any) -> int:
    """Output positions of a token-wise layer: the product of the non-batch, non-feature sizes."""
    out = out[0] if isinstance(out, tuple) else out
    return math.prod(out.shape[1:-1]) if out.dim() > 1 else 1


@dataclass(frozen=True)
class Kind:
    """One covered module type: which plain modules it takes, its masked twin, and how many
    output positions per sample a forward output means (for FLOPs)."""

    name: str
    matches: Callable[[nn.Module], bool]
    masked: type
    positions: Callable[[Any], int]
    opt_in: bool = False  # converted only when asked for (convert(..., embeddings=True))

    def weight(self, module: nn.Module) -> Tensor:
        """The prunable weight of a plain or masked module of this kind."""
        return module.in_proj_weight if self.masked is MaskedMultiheadAttention else module.weight


KINDS = (
    Kind("linear", lambda m: isinstance(m, nn.Linear) and type(m).forward is nn.Linear.forward,
         MaskedLinear, _tokens),
    Kind("conv2d", lambda m: type(m) is nn.Conv2d, MaskedConv2d,
         lambda out: math.prod(out.shape[-2:]) if out.dim() == 4 else math.prod(out.shape[1:])),
    Kind("conv1d", lambda m: type(m) is nn.Conv1d, MaskedConv1d, lambda out: out.shape[-1]),
    Kind("hf_conv1d", _is_hf_conv1d, MaskedHFConv1D, _tokens),
    Kind("attention", lambda m: type(m) is nn.MultiheadAttention and m._qkv_same_embed_dim,
         MaskedMultiheadAttention,
         lambda out: out[0].shape[0] if out[0].dim() == 2 else max(out[0].shape[:2])),
    Kind("embedding", lambda m: type(m) is nn.Embedding, MaskedEmbedding, lambda out: 0,
         opt_in=True),
)


def kind_of(module: nn.Module) -> Optional[Kind]:
    """The covered kind of a plain or masked module (None if not covered)."""
    for kind in KINDS:
        if isinstance(module, kind.masked) or (not isinstance(module, MaskedLayer)
                                               and kind.matches(module)):
            return kind
    return None


def uncovered_weights(model: nn.Module, covered: set[int]) -> list[str]:
    """Qualified names of the 2-D+ floating parameters of ``model`` whose ``id`` is not in
    ``covered``."""
    return [name for name, p in model.named_parameters()
            if p.dim() >= 2 and p.is_floating_point() and id(p) not in covered]
