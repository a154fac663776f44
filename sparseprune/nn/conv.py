"""Masked convolutions: :class:`MaskedConv2d` and :class:`MaskedConv1d` (which runs the fused 2-D op
on a height-1 view of its input and weight)."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from .. import functional as SF
from ..methods import MaskMethod
from .masked import MaskedLayer, with_parameters

_GEOMETRY = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
             "groups")


def _plain_args(conv: nn.Module) -> list:
    return [getattr(conv, k) for k in _GEOMETRY] + [conv.bias is not None, conv.padding_mode]


class _MaskedConv(MaskedLayer):
    """What both masked convolutions share: construction from and back to the plain layer."""

    fusable = True
    _plain: type

    @classmethod
    def from_dense(cls, conv: nn.Module, method: str | MaskMethod = "aslp", **options: Any):
        """A masked layer carrying ``conv``'s own weight and bias Parameters."""
        layer = cls(*_plain_args(conv), device="meta", method=None)
        layer.weight, layer.bias = conv.weight, conv.bias
        layer.set_method(method, **options)
        return layer.train(conv.training)

    def to_dense(self, weight: Tensor) -> nn.Module:
        """A plain convolution with this geometry, the given weight and a copy of the bias."""
        dense = self._plain(*_plain_args(self), device="meta")
        return with_parameters(dense, weight, self.bias).train(self.training)

    def _padded(self, input: Tensor) -> tuple[Tensor, Any]:
        if self.padding_mode == "zeros":
            return input, self.padding
        return F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode), 0

    def dense(self, input: Tensor, weight: Tensor) -> Tensor:
        return self._conv_forward(input, weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self._plain.extra_repr(self)}, {self._method_repr()}"


class MaskedConv2d(_MaskedConv, nn.Conv2d):
    """``nn.Conv2d`` with a learned mask. Extra arguments are the method and its options::

        layer = MaskedConv2d(3, 64, 3, padding="same", method="aslp")
    """

    _plain = nn.Conv2d

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device=None, dtype=None, *, method: str | MaskMethod | None = "aslp",
                 **options: Any):
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation,
                           groups, bias, padding_mode, device, dtype)
        if method is not None:
            self.set_method(method, **options)

    def fused(self, input: Tensor, method: str, **options: Any) -> Tensor:
        input, padding = self._padded(input)
        return SF.masked_conv2d(input, self.weight, self.scores, self.bias, self.stride, padding,
                                self.dilation, self.groups, method=method, **options)


class MaskedConv1d(_MaskedConv, nn.Conv1d):
    """``nn.Conv1d`` with a learned mask; the fused op is the 2-D one on ``(N, C, 1, L)``."""

    _plain = nn.Conv1d

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device=None, dtype=None, *, method: str | MaskMethod | None = "aslp",
                 **options: Any):
        nn.Conv1d.__init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation,
                           groups, bias, padding_mode, device, dtype)
        if method is not None:
            self.set_method(method, **options)

    def fused(self, input: Tensor, method: str, **options: Any) -> Tensor:
        input, padding = self._padded(input)
        padding = padding if isinstance(padding, str) else (0, padding if isinstance(padding, int)
                                                            else padding[0])
        batched = input.dim() == 3
        x = (input if batched else input.unsqueeze(0)).unsqueeze(-2)
        out = SF.masked_conv2d(x, self.weight.unsqueeze(-2), self.scores.unsqueeze(-2), self.bias,
                               (1, self.stride[0]), padding, (1, self.dilation[0]), self.groups,
                               method=method, **options).squeeze(-2)
        return out if batched else out.squeeze(0)
