"""Masked layers: ``nn.Linear`` / ``nn.Conv2d`` whose weight is masked by a pruning method.

The layer owns the weight and bias (and the geometry); its :class:`~sparseprune.methods.MaskMethod`
owns the mask parameters (``scores``, ``scale``, ...) registered on the layer, so ``state_dict``
keys are ``weight``, ``bias``, ``scores``, ``scale``. Forward asks the method, which calls back
:meth:`MaskedLayer.fused` (the fused masked op) or :meth:`MaskedLayer.dense` (an explicit weight).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import functional as SF
from ..methods import MaskMethod, create


class MaskedLayer:
    """What the masked layers share; mixed into the ``nn.Linear`` / ``nn.Conv2d`` subclasses."""

    method: MaskMethod
    weight: nn.Parameter
    bias: Optional[nn.Parameter]

    def set_method(self, method: str | MaskMethod, **options: Any) -> None:
        """Attach a pruning method (a name plus options, or an instance)."""
        if isinstance(method, MaskMethod):
            if options:
                raise ValueError("pass options to the method's constructor, not with an instance")
            self.method = method
        else:
            self.method = create(method, **options)
        self.method.attach(self)

    def forward(self, input: Tensor) -> Tensor:
        return self.method.forward(self, input)

    # Each layer type also defines:
    #   fused(input, method, **kwargs): the output with the weight masked by the fused op of
    #       `method` (the training path);
    #   dense(input, weight): the output with an explicit, already masked weight;
    #   to_dense(weight): a plain nn.Linear / nn.Conv2d twin carrying `weight`.

    def _method_repr(self) -> str:
        return f"method={self.method!r}" if hasattr(self, "method") else "method=None"


def _with_parameters(dense: nn.Module, weight: Tensor, bias: Optional[Tensor]) -> nn.Module:
    dense.weight = nn.Parameter(weight.detach().clone())
    if bias is not None:
        dense.bias = nn.Parameter(bias.detach().clone())
    return dense


class MaskedLinear(MaskedLayer, nn.Linear):
    """``nn.Linear`` with a learned mask. Extra arguments are the method and its options::

        layer = MaskedLinear(784, 300, method="aslp", rescale="smart")
    """

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
        return layer

    def to_dense(self, weight: Tensor) -> nn.Linear:
        """A plain ``nn.Linear`` with this geometry, the given weight and a copy of the bias."""
        dense = nn.Linear(self.in_features, self.out_features, self.bias is not None,
                          device="meta")
        return _with_parameters(dense, weight, self.bias).train(self.training)

    def fused(self, input: Tensor, method: str, **kwargs: Any) -> Tensor:
        return SF.masked_linear(input, self.weight, self.scores, self.bias, method=method, **kwargs)

    def dense(self, input: Tensor, weight: Tensor) -> Tensor:
        return F.linear(input, weight, self.bias)

    def extra_repr(self) -> str:
        return f"{nn.Linear.extra_repr(self)}, {self._method_repr()}"


class MaskedConv2d(MaskedLayer, nn.Conv2d):
    """``nn.Conv2d`` with a learned mask. Extra arguments are the method and its options::

        layer = MaskedConv2d(3, 64, 3, padding="same", method="aslp")
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device=None, dtype=None, *, method: str | MaskMethod | None = "aslp",
                 **options: Any):
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation,
                           groups, bias, padding_mode, device, dtype)
        if method is not None:
            self.set_method(method, **options)

    @classmethod
    def from_dense(cls, conv: nn.Conv2d, method: str | MaskMethod = "aslp",
                   **options: Any) -> "MaskedConv2d":
        """A masked layer carrying ``conv``'s own weight and bias Parameters."""
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                    conv.padding, conv.dilation, conv.groups, conv.bias is not None,
                    conv.padding_mode, device="meta", method=None)
        layer.weight, layer.bias = conv.weight, conv.bias
        layer.set_method(method, **options)
        return layer

    def to_dense(self, weight: Tensor) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` with this geometry, the given weight and a copy of the bias."""
        dense = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                          self.padding, self.dilation, self.groups, self.bias is not None,
                          self.padding_mode, device="meta")
        return _with_parameters(dense, weight, self.bias).train(self.training)

    def _padded(self, input: Tensor) -> tuple[Tensor, Any]:
        if self.padding_mode == "zeros":
            return input, self.padding
        return F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode), 0

    def fused(self, input: Tensor, method: str, **kwargs: Any) -> Tensor:
        input, padding = self._padded(input)
        return SF.masked_conv2d(input, self.weight, self.scores, self.bias, self.stride, padding,
                                self.dilation, self.groups, method=method, **kwargs)

    def dense(self, input: Tensor, weight: Tensor) -> Tensor:
        return self._conv_forward(input, weight, self.bias)

    def extra_repr(self) -> str:
        return f"{nn.Conv2d.extra_repr(self)}, {self._method_repr()}"
