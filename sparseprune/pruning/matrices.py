"""Every prunable layer as 2-D matrices ``W [out, in]`` with the matching input rows ``X [tokens,
in]`` (so that the layer computes ``X W^T``): what one-shot pruning scores, selects and
reconstructs.

| kind (:mod:`sparseprune.nn.coverage`) | matrix | one input row |
|---|---|---|
| ``linear`` | ``weight`` | a token: the input's last dimension |
| ``hf_conv1d`` (GPT-2) | ``weight.T`` | a token |
| ``conv2d`` / ``conv1d`` | ``weight`` as ``[out, kh, kw, in]`` flattened: taps, then input channels | an output position's receptive field (im2col), in the same order |
| ``attention`` (``nn.MultiheadAttention``) | three parts, the q, k and v rows of ``in_proj_weight`` | a token of the query, key and value input respectively |
| its ``out_proj`` | ``weight`` | a token of the attention output (recomputed from the module's inputs: the module never calls ``out_proj``) |

Columns of M consecutive inputs are the N:M groups of :func:`sparseprune.select.nm_groups`
(convolutions: M input channels at one tap). With a token mask (the ``attention_mask`` of a
dict batch, ``[batch, seq]``), an input whose first two dimensions are ``[batch, seq]`` (or
``[seq, batch]``) contributes only its unmasked tokens; other inputs contribute every row.
Grouped convolutions are not supported with calibration data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _validate as V
from ..nn.coverage import kind_of

QKV = ("q", "k", "v")


@dataclass
class Part:
    """One matrix of a layer: the whole weight, or the q / k / v rows of an attention in_proj."""

    layer: str
    module: nn.Module
    kind: str
    index: int = 0
    count: int = 1

    @property
    def layer_label(self) -> str:
        """The layer's name in reports and messages: ``"(model)"`` when the model is the layer."""
        return self.layer or "(model)"

    @property
    def label(self) -> str:
        return self.layer_label if self.count == 1 else f"{self.layer_label}[{QKV[self.index]}]"

    @property
    def weight(self) -> Tensor:
        return kind_of(self.module).weight(self.module)

    def _rows(self) -> slice:
        size = self.weight.shape[0] // self.count
        return slice(self.index * size, (self.index + 1) * size)

    def matrix(self) -> Tensor:
        """The current weights as ``[out, in]`` (a detached view or copy)."""
        return to_matrix(self.kind, self.weight.detach()[self._rows()])

    @torch.no_grad()
    def write(self, matrix: Tensor, keep: Tensor) -> Tensor:
        """Store ``matrix`` (new weights, ``[out, in]``) with zeros where ``keep`` is False;
        returns ``keep`` in the weight's layout (these rows)."""
        rows = self.weight[self._rows()]
        keep = from_matrix(self.kind, keep, rows.shape)
        rows.copy_(from_matrix(self.kind, matrix, rows.shape).to(rows.dtype))
        rows.masked_fill_(~keep, 0)
        return keep


def to_matrix(kind: str, weight: Tensor) -> Tensor:
    if kind == "hf_conv1d":
        return weight.t()
    if weight.dim() > 2:  # [out, in, *taps] -> [out, *taps, in] -> [out, taps * in]
        return weight.movedim(1, -1).reshape(weight.shape[0], -1)
    return weight


def from_matrix(kind: str, matrix: Tensor, shape: torch.Size) -> Tensor:
    if kind == "hf_conv1d":
        return matrix.t()
    if len(shape) > 2:
        return matrix.reshape(shape[0], *shape[2:], shape[1]).movedim(-1, 1)
    return matrix.reshape(shape)


def parts(name: str, module: nn.Module) -> list[Part]:
    kind = kind_of(module).name
    count = 3 if kind == "attention" else 1
    return [Part(name, module, kind, i, count) for i in range(count)]


# ---------------------------------------------------------------------------- input rows

def token_rows(x: Tensor, mask: Optional[Tensor], features: int) -> Tensor:
    """``x [..., features]`` as rows, only the unmasked tokens where the mask fits (a nested
    tensor, e.g. inside ``nn.TransformerEncoder`` with a padding mask, holds no padding)."""
    if x.is_nested:
        return torch.cat([t.reshape(-1, features) for t in x.unbind()])
    if mask is not None and x.dim() >= 3:
        if tuple(x.shape[:2]) == tuple(mask.shape):
            x = x[mask]
        elif tuple(x.shape[:2]) == tuple(mask.shape[::-1]):
            x = x.transpose(0, 1)[mask]
    return x.reshape(-1, features)


def conv_rows(conv: nn.Module, x: Tensor) -> Tensor:
    """The im2col rows of a Conv1d / Conv2d input, columns in the matrix's order."""
    two_d = isinstance(conv, nn.Conv2d)
    if x.dim() == (3 if two_d else 2):  # unbatched
        x = x.unsqueeze(0)
    if not two_d:
        x = x.unsqueeze(2)  # [N, C, 1, L]: a 1-row image
    kernel = tuple(conv.kernel_size) if two_d else (1, conv.kernel_size[0])
    stride = tuple(conv.stride) if two_d else (1, conv.stride[0])
    dilation = tuple(conv.dilation) if two_d else (1, conv.dilation[0])
    if conv.padding_mode != "zeros":
        pad = conv._reversed_padding_repeated_twice
        x = F.pad(x.squeeze(2) if not two_d else x, pad, mode=conv.padding_mode)
        x = x if two_d else x.unsqueeze(2)
        padding = [0, 0]
    elif isinstance(conv.padding, str):
        weight = conv.weight if two_d else conv.weight.unsqueeze(2)
        x, padding = V.conv_padding(x, weight, list(stride), conv.padding, list(dilation))
    else:
        padding = list(conv.padding) if two_d else [0, conv.padding[0]]
    cols = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)
    n, _, positions = cols.shape
    taps = kernel[0] * kernel[1]
    # [N, C * taps, L] -> [N, L, taps, C] -> [N * L, taps * C]
    return cols.view(n, -1, taps, positions).permute(0, 3, 2, 1).reshape(n * positions, -1)


def _argument(args: tuple, kwargs: dict, index: int, name: str, default: Any = None) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def attention_inputs(args: tuple, kwargs: dict) -> tuple[Tensor, Tensor, Tensor]:
    return tuple(_argument(args, kwargs, i, n) for i, n in enumerate(("query", "key", "value")))


def _lengths_mask(nested: Tensor) -> tuple[Tensor, int]:
    """Which positions of the padded form of a batch-first nested tensor are real."""
    lengths = torch.tensor([t.shape[0] for t in nested.unbind()], device=nested.device)
    longest = int(lengths.max())
    return torch.arange(longest, device=nested.device)[None, :] < lengths[:, None], longest


def attention_output(mha: nn.MultiheadAttention, args: tuple, kwargs: dict) -> Tensor:
    """What ``mha`` feeds its ``out_proj`` on these inputs: the attention with an identity
    output projection (eval mode: no dropout)."""
    query, key, value = attention_inputs(args, kwargs)
    padding = _argument(args, kwargs, 3, "key_padding_mask")
    valid = None
    if query.is_nested:  # batch-first sequences of their own lengths: pad them, mask the padding
        valid, _ = _lengths_mask(query)
        padding = ~_lengths_mask(key)[0]
        query, key, value = (t.to_padded_tensor(0.0) for t in (query, key, value))
    batched = query.dim() == 3
    if mha.batch_first and batched:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    eye = torch.eye(mha.embed_dim, dtype=query.dtype, device=query.device)
    out, _ = F.multi_head_attention_forward(
        query, key, value, mha.embed_dim, mha.num_heads, mha.in_proj_weight, mha.in_proj_bias,
        mha.bias_k, mha.bias_v, mha.add_zero_attn, 0.0, eye, None, training=False,
        key_padding_mask=padding, need_weights=False,
        attn_mask=_argument(args, kwargs, 5, "attn_mask"),
        use_separate_proj_weight=not mha._qkv_same_embed_dim,
        q_proj_weight=mha.q_proj_weight, k_proj_weight=mha.k_proj_weight,
        v_proj_weight=mha.v_proj_weight,
        is_causal=bool(_argument(args, kwargs, 7, "is_causal", False)))
    out = out.transpose(0, 1) if mha.batch_first and batched else out
    return out if valid is None else out[valid]


def hook_module(model: nn.Module, name: str, module: nn.Module) -> nn.Module:
    """The module whose forward shows the layer's input: the layer itself, or, for the
    ``out_proj`` of an ``nn.MultiheadAttention`` (which the attention never calls), the
    attention."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if name else None
    return parent if child == "out_proj" and type(parent) is nn.MultiheadAttention else module


Sink = Callable[[Part, Tensor], None]


class Capture:
    """Forward hooks handing every listed part's input rows to ``sink(part, rows)`` while
    active; ``mask`` is the current batch's token mask (set by the caller per batch)."""

    def __init__(self, model: nn.Module, targets: list[Part], sink: Sink):
        self.mask: Optional[Tensor] = None
        self.handles = []
        by_layer: dict[str, list[Part]] = {}
        for part in targets:
            by_layer.setdefault(part.layer, []).append(part)
        for name, layer_parts in by_layer.items():
            self._hook(model, name, layer_parts, sink)

    def _hook(self, model: nn.Module, name: str, layer_parts: list[Part], sink: Sink) -> None:
        module, kind = layer_parts[0].module, layer_parts[0].kind
        parent = hook_module(model, name, module)
        if parent is not module:
            (part,) = layer_parts

            def out_proj(mha, args, kwargs, output):
                rows = attention_output(mha, args, kwargs)
                sink(part, token_rows(rows, self.mask, part.weight.shape[1]))
            self.handles.append(parent.register_forward_hook(out_proj, with_kwargs=True))
        elif kind == "attention":
            def in_proj(mha, args, kwargs, output):
                inputs = attention_inputs(args, kwargs)
                for part in layer_parts:
                    sink(part, token_rows(inputs[part.index], self.mask, mha.embed_dim))
            self.handles.append(module.register_forward_hook(in_proj, with_kwargs=True))
        else:
            if kind in ("conv1d", "conv2d") and module.groups != 1:
                raise ValueError(f"{name}: grouped convolution (groups={module.groups}) is not "
                                 "supported by one-shot pruning with calibration data; leave it "
                                 "dense with exclude=")
            (part,) = layer_parts
            features = part.weight.shape[0 if kind == "hf_conv1d" else 1]

            def plain(m, args, output):
                x = args[0]
                rows = conv_rows(m, x) if kind in ("conv1d", "conv2d") \
                    else token_rows(x, self.mask, features)
                sink(part, rows)
            self.handles.append(module.register_forward_hook(plain))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
