"""Sparse inference layers: :class:`SparseLinear` and :class:`SparseConv2d`.

They hold only the kept weights, compressed (see :mod:`sparseprune.formats`), as buffers
``values``, ``row_ptr``, ``indices`` (and ``bias``), and compute what the dense layer computes with
the sparse kernels. Inference only: asking for gradients raises. Build them with
:func:`sparseprune.to_sparse` or ``from_dense``; their ``state_dict`` is self-describing (format and
geometry travel as extra state), so :func:`sparseprune.save` / :func:`sparseprune.load` round-trip.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import ops
from ..ops import formats

_BUFFERS = ("values", "row_ptr", "indices")


class SparseLayer(nn.Module):
    """What both sparse layers share: the compressed weight, its checks and its state."""

    format: str
    weight_shape: tuple[int, ...]

    def _set_weight(self, values: Tensor, row_ptr: Tensor, indices: Tensor, format: str,
                    bias: Optional[Tensor]) -> None:
        rows, cols = self.matrix_shape
        formats.validate(values, row_ptr, indices, format, rows, cols, what=type(self).__name__)
        if bias is not None and (bias.shape != (rows,) or bias.dtype != torch.float32):
            raise ValueError(f"{type(self).__name__}: bias must be float32 of shape ({rows},), "
                             f"got {bias.dtype} of shape {list(bias.shape)}")
        self.format = format
        for name, t in zip(_BUFFERS, (values, row_ptr, indices)):
            self.register_buffer(name, t.detach().contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().contiguous())

    @property
    def matrix_shape(self) -> tuple[int, int]:
        """The weight as the kernels see it: (out, everything else)."""
        rows = self.weight_shape[0]
        cols = 1
        for d in self.weight_shape[1:]:
            cols *= d
        return rows, cols

    @property
    def nnz(self) -> int:
        """The number of kept weights."""
        return self.values.numel()

    @property
    def density(self) -> float:
        rows, cols = self.matrix_shape
        return self.nnz / (rows * cols) if rows * cols else 1.0

    def dense_weight(self) -> Tensor:
        """The dense weight (zeros where pruned), in the original layer's shape."""
        rows, cols = self.matrix_shape
        return formats.to_dense(self.values, self.row_ptr, self.indices, self.format, rows,
                                cols).view(self.weight_shape)

    def _check_no_grad(self, input: Tensor) -> None:
        if torch.is_grad_enabled() and (input.requires_grad or self.values.requires_grad
                                        or (self.bias is not None and self.bias.requires_grad)):
            raise RuntimeError(
                f"{type(self).__name__} is inference-only: its sparse kernels have no backward. "
                "Run it under torch.no_grad() or torch.inference_mode(), or train the dense or "
                "masked model and convert it afterwards with sparseprune.to_sparse")

    # The format and geometry travel with the state dict, so a saved state is self-describing.
    def get_extra_state(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "format": self.format, **self._geometry()}

    def _saved_format(self, state: Any) -> str:
        """The format of a saved extra state, after checking that it describes this layer."""
        name = type(self).__name__
        if not isinstance(state, dict) or state.get("type") != name:
            raise ValueError(f"{name}: the saved state describes "
                             f"{state.get('type') if isinstance(state, dict) else state!r}")
        if state.get("format") not in formats.FORMATS:
            raise ValueError(f"{name}: unknown saved format {state.get('format')!r}")
        geometry = {k: state.get(k) for k in self._geometry()}
        if geometry != self._geometry():
            raise ValueError(f"{name}: the saved layer has geometry {geometry}, this one "
                             f"{self._geometry()}")
        return state["format"]

    def set_extra_state(self, state: Any) -> None:
        # The format changes only together with the buffers (load_state_dict does both).
        if self._saved_format(state) != self.format:
            raise ValueError(f"{type(self).__name__}: load the saved {state['format']} weight "
                             "with load_state_dict, which replaces the buffers too")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # The buffers' sizes depend on the number of kept weights, which the incoming state
        # decides: take its tensors (validated) instead of copying into the current ones.
        names = [prefix + n for n in _BUFFERS]
        bias_key, extra_key, weight_key = prefix + "bias", prefix + "_extra_state", prefix + "weight"
        if weight_key in state_dict and not any(n in state_dict for n in names):
            # The dense layout (a plain layer's state, or sparseprune.load without a model):
            # compressed again in this layer's format.
            weight = state_dict[weight_key]
            if not isinstance(weight, Tensor) or tuple(weight.shape) != tuple(self.weight_shape):
                error_msgs.append(f"{type(self).__name__}: the dense weight must have shape "
                                  f"{list(self.weight_shape)}, got "
                                  f"{list(getattr(weight, 'shape', [])) or type(weight).__name__}")
                return
            state_dict = dict(state_dict)
            parts = formats.compress(weight.detach().float().reshape(self.weight_shape[0], -1),
                                     self.format)
            state_dict.update(zip(names, parts))
            del state_dict[weight_key]
        missing = [n for n in names if n not in state_dict]
        missing_keys.extend(missing)
        if (bias_key in state_dict) != (self.bias is not None):
            (unexpected_keys if bias_key in state_dict else missing_keys).append(bias_key)
        unexpected_keys.extend(k for k in state_dict if k.startswith(prefix)
                               and "." not in k[len(prefix):]
                               and k not in (*names, bias_key, extra_key))
        if missing:
            return
        try:
            format = self.format
            if extra_key in state_dict:
                format = self._saved_format(state_dict[extra_key])
            bias = state_dict[bias_key] if bias_key in state_dict and self.bias is not None \
                else self.bias
            self._set_weight(*(state_dict[n] for n in names), format, bias)
        except (TypeError, ValueError) as exc:
            error_msgs.append(str(exc))


class SparseLinear(SparseLayer):
    """``nn.Linear`` with a compressed weight (``format``: ``"csr"`` or ``"bitmap"``)."""

    def __init__(self, in_features: int, out_features: int, values: Tensor, row_ptr: Tensor,
                 indices: Tensor, bias: Optional[Tensor] = None, *, format: str = "csr"):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight_shape = (out_features, in_features)
        self._set_weight(values, row_ptr, indices, format, bias)

    @classmethod
    def from_dense(cls, linear: nn.Linear, format: str = "csr",
                   weight: Optional[Tensor] = None) -> "SparseLinear":
        """The sparse twin of ``linear`` (its weight, or ``weight`` if given; zeros are pruned)."""
        weight = linear.weight if weight is None else weight
        bias = None if linear.bias is None else linear.bias.detach().float()
        return cls(linear.in_features, linear.out_features,
                   *formats.compress(weight.float(), format), bias, format=format)

    def _geometry(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features}

    def to_dense(self) -> nn.Linear:
        dense = nn.Linear(self.in_features, self.out_features, self.bias is not None,
                          device=self.values.device)
        with torch.no_grad():
            dense.weight.copy_(self.dense_weight())
            if self.bias is not None:
                dense.bias.copy_(self.bias)
        return dense

    def forward(self, input: Tensor) -> Tensor:
        self._check_no_grad(input)
        return ops.sparse_linear(input, self.values, self.row_ptr, self.indices, self.bias,
                                 self.format, self.weight_shape)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, format={self.format}, density={self.density:.4f}")


class SparseConv2d(SparseLayer):
    """``nn.Conv2d`` with a compressed weight; same geometry arguments as ``nn.Conv2d``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, values: Tensor,
                 row_ptr: Tensor, indices: Tensor, bias: Optional[Tensor] = None, stride=1,
                 padding=0, dilation=1, groups: int = 1, padding_mode: str = "zeros", *,
                 format: str = "csr"):
        super().__init__()
        # nn.Conv2d's own argument handling ('same', pairs, padding modes) on a weightless twin.
        geometry = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation,
                             groups, bias=False, padding_mode=padding_mode, device="meta")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride = tuple(geometry.kernel_size), tuple(geometry.stride)
        self.padding, self.dilation = geometry.padding, tuple(geometry.dilation)
        self.padding_mode = padding_mode
        self._pre_pad = None  # explicit F.pad for 'same' or a non-zero padding mode
        if isinstance(self.padding, str) or padding_mode != "zeros":
            self._pre_pad = tuple(geometry._reversed_padding_repeated_twice)
        else:
            self.padding = tuple(self.padding)
        self.weight_shape = tuple(geometry.weight.shape)
        self._set_weight(values, row_ptr, indices, format, bias)

    @classmethod
    def from_dense(cls, conv: nn.Conv2d, format: str = "csr",
                   weight: Optional[Tensor] = None) -> "SparseConv2d":
        weight = conv.weight if weight is None else weight
        bias = None if conv.bias is None else conv.bias.detach().float()
        return cls(conv.in_channels, conv.out_channels, conv.kernel_size,
                   *formats.compress(weight.float().reshape(conv.out_channels, -1), format), bias,
                   conv.stride, conv.padding, conv.dilation, conv.groups, conv.padding_mode,
                   format=format)

    def _geometry(self) -> dict[str, Any]:
        padding = self.padding if isinstance(self.padding, str) else list(self.padding)
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": padding, "dilation": list(self.dilation), "groups": self.groups,
                "padding_mode": self.padding_mode}

    def to_dense(self) -> nn.Conv2d:
        dense = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                          self.padding, self.dilation, self.groups, self.bias is not None,
                          self.padding_mode, device=self.values.device)
        with torch.no_grad():
            dense.weight.copy_(self.dense_weight())
            if self.bias is not None:
                dense.bias.copy_(self.bias)
        return dense

    def forward(self, input: Tensor) -> Tensor:
        self._check_no_grad(input)
        padding = self.padding
        if self._pre_pad is not None:
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            input, padding = F.pad(input, self._pre_pad, mode=mode), (0, 0)
        return ops.sparse_conv2d(input, self.values, self.row_ptr, self.indices, self.bias,
                                 self.format, self.weight_shape, self.stride, padding,
                                 self.dilation, self.groups)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, groups={self.groups}, "
                f"bias={self.bias is not None}, format={self.format}, density={self.density:.4f}")
