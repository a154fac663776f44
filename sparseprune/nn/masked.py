"""Masked layers: layers whose weight is masked by a pruning method.

The layer owns the weight and bias (and the geometry); its :class:`~sparseprune.methods.MaskMethod`
owns the mask parameters (``scores``, ``scale``, ...) registered on the layer, so ``state_dict``
keys are the plain layer's (``weight``, ``bias``) plus ``scores``, ``scale``, ... Forward asks the
method, which calls back :meth:`MaskedLayer.fused` (one fused masked op, where the layer type has
one) or :meth:`MaskedLayer.dense` (the layer's computation with an explicit, already masked
weight, e.g. ``method.weight(layer)``).

A method that samples noise gets a stream of its own on the layer: the buffer ``rng`` holds
``[seed, step]``; the seed is drawn from torch's default generator when the method is attached
(``torch.manual_seed`` before ``convert`` reproduces a run), each sampling forward uses
``[seed, step]`` and advances ``step``. So a deep copy samples what the original would, DDP ranks
(which broadcast buffers) sample the same masks whatever their own seeds, and checkpoints resume
the stream.

Layer types: :class:`MaskedLinear` (here, with :class:`MaskedHFConv1D`, the transposed linear of
Hugging Face GPT-2), convolutions in :mod:`.conv`, attention in :mod:`.attention`, embeddings in
:mod:`.embedding`; which plain module becomes which is :mod:`.coverage`.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import Any, ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import functional as SF
from ..methods import MaskMethod, create
from ..ops.rng import new_stream


def _no_fast_path(module: nn.Module, args: Any) -> None:
    """A forward pre-hook that does nothing. nn.TransformerEncoderLayer's inference fast path reads
    the weights of its linear and attention layers directly, which would bypass the masks; a
    registered hook is its documented opt-out."""


class MaskedLayer(metaclass=ABCMeta):
    """What the masked layers share; mixed into subclasses of the plain layer types."""

    # ABCMeta rather than ABC: ABC's empty __slots__ gives the mixin a layout that FSDP2's class
    # swap (fully_shard on a masked layer makes it an FSDP<cls> subclass) refuses.

    method: MaskMethod
    weight: nn.Parameter
    bias: Optional[nn.Parameter]
    # Whether fused() runs one fused masked op (masked weight and GEMM/convolution together).
    fusable: ClassVar[bool] = False
    # XORed into the stream's seed at each draw (per-rank noise); 0: the shared stream itself.
    stream_key: int = 0
    # The weight dimension that runs along the layer's input (N:M groups follow it): 1 for
    # (out, in, ...) weights, 0 for Hugging Face's transposed Conv1D, None where the weight has
    # no input dimension (embeddings).
    input_dim: ClassVar[Optional[int]] = 1

    def set_method(self, method: str | MaskMethod, **options: Any) -> None:
        """Attach a pruning method (a name plus options, or an instance)."""
        if isinstance(method, MaskMethod):
            if options:
                raise ValueError("pass options to the method's constructor, not with an instance")
            self.method = method
        else:
            self.method = create(method, **options)
        self.method.attach(self)
        if self.method.stochastic:
            self.register_buffer("rng", new_stream(device=self.weight.device), persistent=True)
        if not getattr(self, "_fast_path_hook", None):
            self._fast_path_hook = self.register_forward_pre_hook(_no_fast_path)

    def forward(self, input: Tensor) -> Tensor:
        return self.method.forward(self, input)

    @torch.no_grad()
    def next_rng(self) -> Tensor:
        """This forward's ``[seed, offset]`` (a CPU int64 tensor) from the layer's stream, which it
        advances."""
        if torch.compiler.is_compiling():
            return self._next_rng_traced()
        rng = self.rng
        if rng.device.type == "cpu":
            pair = rng.numpy()  # the buffer's memory: two Python ints instead of six tensor ops
            seed, step = int(pair[0]), int(pair[1])
            pair[1] = step + 1
        else:
            # The buffer follows the module to the GPU, but reading it there would wait for the
            # GPU at every layer (a host sync per forward): read it once, then keep a host copy
            # of the pair, valid while the buffer is the same tensor at the same version (a load,
            # a DDP broadcast or a move changes one of them and the next call reads it again).
            known = self.__dict__.get("_rng_host")
            if known is not None and known[0] is rng and known[1] == rng._version:
                seed, step = known[2], known[3]
            else:
                seed, step = rng.tolist()
            rng[1] += 1  # on the device, queued like the layer's kernels
            self.__dict__["_rng_host"] = (rng, rng._version, seed, step + 1)
        return torch.tensor((seed ^ self.stream_key, step), dtype=torch.int64)

    def _next_rng_traced(self) -> Tensor:
        # Tensor ops only, out of place then one copy: under torch.compile a clone followed by an
        # in-place update of the buffer handed the advanced pair to backward.
        rng = self.rng + 0
        self.rng.copy_(torch.stack((rng[0], rng[1] + 1)))
        if self.stream_key:
            rng = torch.stack((rng[0] ^ self.stream_key, rng[1]))
        return rng if rng.device.type == "cpu" else rng.cpu()

    def fused(self, input: Tensor, method: str, **options: Any) -> Tensor:
        """The output with the weight masked by ``method``'s fused op (:func:`sparseprune.functional.
        masked_weight` options). Layer types without a fused op mask the weight, then compute."""
        return self.dense(input, SF.masked_weight(self.weight, self.scores, method=method,
                                                  **options))

    @abstractmethod
    def dense(self, input: Tensor, weight: Tensor) -> Tensor:
        """The layer's output computed with ``weight`` in place of its own."""

    @abstractmethod
    def to_dense(self, weight: Tensor) -> nn.Module:
        """A plain twin of this layer carrying ``weight`` (and copies of its other parameters)."""

    def _method_repr(self) -> str:
        return f"method={self.method!r}" if hasattr(self, "method") else "method=None"


def with_parameters(dense: nn.Module, weight: Tensor, bias: Optional[Tensor]) -> nn.Module:
    """``dense`` (built on the meta device) carrying copies of ``weight`` and ``bias``."""
    dense.weight = nn.Parameter(weight.detach().clone())
    if bias is not None:
        dense.bias = nn.Parameter(bias.detach().clone())
    return dense


class MaskedLinear(MaskedLayer, nn.Linear):
    """``nn.Linear`` with a learned mask. Extra arguments are the method and its options::

        layer = MaskedLinear(784, 300, method="aslp", rescale="smart")
    """

    fusable = True

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None,
                 dtype=None, *, method: str | MaskMethod | None = "aslp", **options: Any):
        nn.Linear.__init__(self, in_features, out_features, bias, device, dtype)
        if method is not None:
            self.set_method(method, **options)

    @classmethod
    def from_dense(cls, linear: nn.Linear, method: str | MaskMethod = "aslp",
                   **options: Any) -> "MaskedLinear":
        """A masked layer carrying ``linear``'s own weight and bias Parameters."""
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None,
                    device="meta", method=None)
        layer.weight, layer.bias = linear.weight, linear.bias
        layer.set_method(method, **options)
        return layer.train(linear.training)

    def to_dense(self, weight: Tensor) -> nn.Linear:
        """A plain ``nn.Linear`` with this geometry, the given weight and a copy of the bias."""
        dense = nn.Linear(self.in_features, self.out_features, self.bias is not None,
                          device="meta")
        return with_parameters(dense, weight, self.bias).train(self.training)

    def fused(self, input: Tensor, method: str, **options: Any) -> Tensor:
        return SF.masked_linear(input, self.weight, self.scores, self.bias, method=method,
                                **options)

    def dense(self, input: Tensor, weight: Tensor) -> Tensor:
        return F.linear(input, weight, self.bias)

    def extra_repr(self) -> str:
        return f"{nn.Linear.extra_repr(self)}, {self._method_repr()}"


class MaskedHFConv1D(MaskedLayer, nn.Module):
    """Hugging Face's ``Conv1D`` (every linear map of GPT-2): a linear layer whose weight is stored
    transposed, ``(in_features, out_features)``, computing ``x @ weight + bias``. The scores have
    the weight's (stored) shape; the fused op runs on the transposed views."""

    fusable = True
    input_dim = 0

    def __init__(self, plain: nn.Module, method: str | MaskMethod = "aslp", **options: Any):
        nn.Module.__init__(self)
        self.nf, self.nx = plain.nf, plain.weight.shape[0]
        self.weight, self.bias = plain.weight, plain.bias
        self._plain_type = type(plain)
        self.set_method(method, **options)
        self.train(plain.training)

    @classmethod
    def from_dense(cls, plain: nn.Module, method: str | MaskMethod = "aslp",
                   **options: Any) -> "MaskedHFConv1D":
        return cls(plain, method, **options)

    def to_dense(self, weight: Tensor) -> nn.Module:
        dense = self._plain_type(self.nf, self.nx)
        return with_parameters(dense, weight, self.bias).to(weight.device).train(self.training)

    def fused(self, input: Tensor, method: str, **options: Any) -> Tensor:
        return SF.masked_linear(input, self.weight.t(), self.scores.t(), self.bias, method=method,
                                **options)

    def dense(self, input: Tensor, weight: Tensor) -> Tensor:
        out = input.reshape(-1, self.nx) @ weight
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*input.shape[:-1], self.nf)

    def extra_repr(self) -> str:
        return f"nf={self.nf}, nx={self.nx}, {self._method_repr()}"
