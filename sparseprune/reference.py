"""Pure-PyTorch (and NumPy) references for every fused op: the oracle of the tests.

Same names, arguments and seed semantics as :mod:`sparseprune.functional`: with the same generator
state they draw the same ``(seed, offset)`` and build the same masks from the same Philox stream,
computed independently (NumPy Philox, float64 ``log``). They differ from the kernels only by
rounding: a mask can differ where ``|scores + L|`` is within about 1e-6 of 0.

Also here: the seed paper's code path (:func:`gumbel_softmax_weight`), which the benchmarks time
against the fused kernels.
"""

from __future__ import annotations

from typing import Optional

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _args
from .formats import to_dense
from .rng import next_rng, seed_offset

__all__ = ["philox4x32_10", "philox_bits", "uniform", "logistic_noise", "aslp_weight",
           "masked_linear", "masked_conv2d", "gumbel_softmax_weight", "GumbelSoftmaxLayer",
           "seed_paper_copy"]

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_LOW32 = np.uint64(0xFFFFFFFF)


def philox4x32_10(counter: np.ndarray, key: tuple[int, int]) -> np.ndarray:
    """Philox4x32-10 of Salmon et al. (SC'11). ``counter``: uint32 array of shape (4, n);
    ``key``: two 32-bit ints. Returns the (4, n) uint32 output words."""
    c = [np.asarray(counter[i], dtype=np.uint64) for i in range(4)]
    k0, k1 = int(key[0]) & 0xFFFFFFFF, int(key[1]) & 0xFFFFFFFF
    for _ in range(10):
        p0, p1 = _M0 * c[0], _M1 * c[2]  # exact: both factors < 2^32
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ np.uint64(k0), p1 & _LOW32,
             (p0 >> np.uint64(32)) ^ c[3] ^ np.uint64(k1), p0 & _LOW32]
        k0, k1 = (k0 + _W0) & 0xFFFFFFFF, (k1 + _W1) & 0xFFFFFFFF
    return np.stack(c).astype(np.uint32)


def _words(numel: int, seed: int, offset: int) -> np.ndarray:
    # Element i takes word i % 4 of block i / 4; counter = (block low, block high, offset low, high).
    blocks = np.arange((numel + 3) // 4, dtype=np.uint64)
    seed, offset = seed & (2**64 - 1), offset & (2**64 - 1)
    counter = np.stack([blocks & _LOW32, blocks >> np.uint64(32),
                        np.full_like(blocks, offset & 0xFFFFFFFF), np.full_like(blocks, offset >> 32)])
    words = philox4x32_10(counter, (seed & 0xFFFFFFFF, seed >> 32))
    return words.T.reshape(-1)[:numel]


def philox_bits(numel: int, seed: int, offset: int) -> Tensor:
    """The raw stream as int32 bit patterns, like ``sparseprune.ops.philox_bits``."""
    return torch.from_numpy(_words(numel, seed, offset).view(np.int32).copy())


def uniform(numel: int, seed: int, offset: int) -> Tensor:
    """Uniforms in (0, 1): ``(k + 0.5) * 2^-23`` with k the top 23 bits of each word (float64)."""
    k = (_words(numel, seed, offset) >> np.uint32(9)).astype(np.float64)
    return torch.from_numpy((k + 0.5) * 2.0**-23)


def logistic_noise(numel: int, seed: int, offset: int) -> Tensor:
    """``L = log(u) - log1p(-u)`` in float64."""
    u = uniform(numel, seed, offset)
    return torch.log(u) - torch.log1p(-u)


def _aslp(weight: Tensor, scores: Tensor, scale: Optional[Tensor], temperature: float,
          rng: Tensor) -> Tensor:
    if weight.shape != scores.shape:
        raise ValueError(f"scores must have the weight's shape {tuple(weight.shape)}, "
                         f"got {tuple(scores.shape)}")
    noise = logistic_noise(weight.numel(), *seed_offset(rng)).reshape(weight.shape)
    noise = noise.to(weight.device)
    logits = scores.double() + noise
    z = (logits > 0).to(weight.dtype)
    y = torch.sigmoid(logits / temperature).to(weight.dtype)
    z_st = z + (y - y.detach())  # value exactly z, gradient that of the soft sample y
    out = weight * z_st
    return out * scale.to(weight.dtype) if scale is not None else out


def aslp_weight(weight: Tensor, scores: Tensor, scale: Optional[Tensor] = None, *,
                temperature: float = 1.0,
                generator: Optional[torch.Generator] = None) -> Tensor:
    """Reference for :func:`sparseprune.functional.aslp_weight`."""
    tau = _args.temperature(temperature)
    rng = next_rng(generator)
    return _aslp(weight, scores, scale, tau, rng)


def masked_linear(input: Tensor, weight: Tensor, scores: Tensor, bias: Optional[Tensor] = None, *,
                  method: str = "aslp", scale: Optional[Tensor] = None, temperature: float = 1.0,
                  generator: Optional[torch.Generator] = None) -> Tensor:
    """Reference for :func:`sparseprune.functional.masked_linear`."""
    tau, _ = _args.temperature(temperature), _args.method(method)
    rng = next_rng(generator)
    return F.linear(input, _aslp(weight, scores, scale, tau, rng), bias)


def masked_conv2d(input: Tensor, weight: Tensor, scores: Tensor, bias: Optional[Tensor] = None,
                  stride: _args.IntPair = 1, padding: _args.IntPair | str = 0,
                  dilation: _args.IntPair = 1, groups: int = 1, *, method: str = "aslp",
                  scale: Optional[Tensor] = None, temperature: float = 1.0,
                  generator: Optional[torch.Generator] = None) -> Tensor:
    """Reference for :func:`sparseprune.functional.masked_conv2d`."""
    tau, _ = _args.temperature(temperature), _args.method(method)
    stride, dilation = _args.pair("stride", stride), _args.pair("dilation", dilation)
    input, padding = _args.conv_padding(input, weight, stride, padding, dilation)
    rng = next_rng(generator)
    return F.conv2d(input, _aslp(weight, scores, scale, tau, rng), bias, stride, padding,
                    dilation, groups)


def gumbel_softmax_weight(weight: Tensor, scores: Tensor, scale: Optional[Tensor] = None, *,
                          temperature: float = 1.0) -> Tensor:
    """The seed paper's code path: ``F.gumbel_softmax`` over the stacked logits ``(scores, 0)``.

    Same distribution and straight-through gradient as :func:`aslp_weight`, from torch's own
    random stream (two exponentials per weight), materialising the noise and the soft sample.
    """
    if weight.shape != scores.shape:
        raise ValueError(f"scores must have the weight's shape {tuple(weight.shape)}, "
                         f"got {tuple(scores.shape)}")
    temperature = _args.temperature(temperature)
    logits = torch.stack((scores, torch.zeros_like(scores)))
    z = F.gumbel_softmax(logits, tau=temperature, hard=True, dim=0)[0]
    out = weight * z
    return out * scale if scale is not None else out


class GumbelSoftmaxLayer(nn.Module):
    """A linear or conv layer masked the way the seed paper's code does it: the weight goes through
    :func:`gumbel_softmax_weight` each forward, then ``F.linear`` / the layer's convolution.
    Weight and bias are frozen; ``scores`` (and ``scale`` if given) are trained."""

    def __init__(self, layer: nn.Linear | nn.Conv2d, scores: Optional[Tensor] = None,
                 scale: Optional[Tensor] = None, temperature: float = 1.0):
        super().__init__()
        self.layer = layer
        self.layer.requires_grad_(False)
        self.scores = nn.Parameter(torch.zeros_like(layer.weight) if scores is None
                                   else scores.detach().clone())
        self.scale = None if scale is None else nn.Parameter(scale.detach().clone())
        self.temperature = _args.temperature(temperature)

    def forward(self, input: Tensor) -> Tensor:
        weight = gumbel_softmax_weight(self.layer.weight, self.scores, self.scale,
                                       temperature=self.temperature)
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(input, weight, self.layer.bias)
        return F.linear(input, weight, self.layer.bias)


def seed_paper_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose masked layers (or plain ``nn.Linear`` / ``nn.Conv2d``, with
    scores 0) are :class:`GumbelSoftmaxLayer` s with the same weights, scores and scales: the seed
    paper's code path for the same network, for benchmarks."""
    from .nn.masked import MaskedConv2d, MaskedLinear

    twin = copy.deepcopy(model)
    for name, module in list(twin.named_modules()):
        if isinstance(module, (MaskedLinear, MaskedConv2d)):
            new = GumbelSoftmaxLayer(module.to_dense(module.weight), module.scores,
                                     getattr(module, "scale", None),
                                     getattr(module.method, "temperature", 1.0))
        elif type(module) in (nn.Linear, nn.Conv2d):
            new = GumbelSoftmaxLayer(module)
        else:
            continue
        if name == "":
            return new
        parent, _, child = name.rpartition(".")
        setattr(twin.get_submodule(parent), child, new)
    return twin


# ---- sparse inference (issue 7): the dense computation the sparse kernels must match ----------

def sparse_linear(input: Tensor, values: Tensor, row_ptr: Tensor, indices: Tensor,
                  bias: Optional[Tensor], format: str, weight_shape) -> Tensor:
    """``F.linear`` with the dense weight of a compressed one (:mod:`sparseprune.formats`)."""
    weight = to_dense(values, row_ptr, indices, format, *weight_shape)
    return F.linear(input, weight, bias)


def sparse_conv2d(input: Tensor, values: Tensor, row_ptr: Tensor, indices: Tensor,
                  bias: Optional[Tensor], format: str, weight_shape, stride, padding, dilation,
                  groups: int) -> Tensor:
    """``F.conv2d`` with the dense weight of a compressed one."""
    rows, cols = weight_shape[0], math.prod(weight_shape[1:])
    weight = to_dense(values, row_ptr, indices, format, rows, cols).view(weight_shape)
    return F.conv2d(input, weight, bias, stride, padding, dilation, groups)
