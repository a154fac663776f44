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
from .select import select_top

__all__ = ["philox4x32_10", "philox_bits", "uniform", "logistic_noise", "aslp_weight",
           "supermask_weight", "edge_popup_weight", "masked_linear", "masked_conv2d",
           "gumbel_softmax_weight", "bernoulli_dwr_weight", "kthvalue_weight",
           "SeedPaperLayer", "seed_paper_copy", "reparam_h", "reparam_weight",
           "hard_concrete_sample", "hard_concrete_from_noise"]

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


def _straight_through(value: Tensor, surrogate: Tensor) -> Tensor:
    # Exactly `value`, with the gradient of `surrogate`.
    return value + (surrogate - surrogate.detach())


def _check_shapes(weight: Tensor, scores: Tensor) -> None:
    if weight.shape != scores.shape:
        raise ValueError(f"scores must have the weight's shape {tuple(weight.shape)}, "
                         f"got {tuple(scores.shape)}")


def _rescaled(out: Tensor, z: Tensor, scale: Optional[Tensor], rescale: str) -> Tensor:
    if rescale == "smart":
        return out * scale.to(out.dtype)
    if rescale == "dwr":  # numel / max(kept, 1), differentiable through the kept count
        kept = z.sum()
        return out * (z.numel() / (kept + (kept.detach() == 0).to(kept.dtype)))
    return out


def _mask(method: str, weight: Tensor, scores: Tensor, scale: Optional[Tensor], rescale: str,
          temperature: float, density: float, rng: Tensor) -> Tensor:
    _check_shapes(weight, scores)
    if method == "edge_popup":
        magnitude = scores.abs().float()
        keep = select_top([magnitude], density)[0]
        z = _straight_through(keep.to(weight.dtype), magnitude.to(weight.dtype))
        return weight * z
    noise = logistic_noise(weight.numel(), *seed_offset(rng)).reshape(weight.shape)
    noise = noise.to(weight.device)
    s = scores.double()
    if method == "aslp":  # z = 1[s + L > 0]; gradient of y = sigmoid((s + L) / tau)
        keep, surrogate = s + noise > 0, torch.sigmoid((s + noise) / temperature)
    else:  # supermask: z = 1[u < sigmoid(s)] = 1[s - L > 0]; gradient of sigmoid(s)
        keep, surrogate = s - noise > 0, torch.sigmoid(s)
    z = _straight_through(keep.to(weight.dtype), surrogate.to(weight.dtype))
    return _rescaled(weight * z, z, scale, rescale)


def _functional(method: str, weight, scores, scale, rescale, temperature, density, generator):
    tau = _args.temperature(temperature)
    method, rescale, density = _args.mask_options(method, scale, rescale, density)
    rng = torch.zeros(2, dtype=torch.int64) if method == "edge_popup" else next_rng(generator)
    return _mask(method, weight, scores, scale, rescale, tau, density, rng)


def aslp_weight(weight: Tensor, scores: Tensor, scale: Optional[Tensor] = None, *,
                temperature: float = 1.0, rescale: Optional[str] = None,
                generator: Optional[torch.Generator] = None) -> Tensor:
    """Reference for :func:`sparseprune.functional.aslp_weight`."""
    return _functional("aslp", weight, scores, scale, rescale, temperature, None, generator)


def supermask_weight(weight: Tensor, scores: Tensor, scale: Optional[Tensor] = None, *,
                     rescale: Optional[str] = None,
                     generator: Optional[torch.Generator] = None) -> Tensor:
    """Reference for :func:`sparseprune.functional.supermask_weight`."""
    return _functional("supermask", weight, scores, scale, rescale, 1.0, None, generator)


def edge_popup_weight(weight: Tensor, scores: Tensor, *, density: float) -> Tensor:
    """Reference for :func:`sparseprune.functional.edge_popup_weight`."""
    return _functional("edge_popup", weight, scores, None, None, 1.0, density, None)


def masked_linear(input: Tensor, weight: Tensor, scores: Tensor, bias: Optional[Tensor] = None, *,
                  method: str = "aslp", scale: Optional[Tensor] = None,
                  rescale: Optional[str] = None, temperature: float = 1.0,
                  density: Optional[float] = None,
                  generator: Optional[torch.Generator] = None) -> Tensor:
    """Reference for :func:`sparseprune.functional.masked_linear`."""
    masked = _functional(method, weight, scores, scale, rescale, temperature, density, generator)
    return F.linear(input, masked, bias)


def masked_conv2d(input: Tensor, weight: Tensor, scores: Tensor, bias: Optional[Tensor] = None,
                  stride: _args.IntPair = 1, padding: _args.IntPair | str = 0,
                  dilation: _args.IntPair = 1, groups: int = 1, *, method: str = "aslp",
                  scale: Optional[Tensor] = None, rescale: Optional[str] = None,
                  temperature: float = 1.0, density: Optional[float] = None,
                  generator: Optional[torch.Generator] = None) -> Tensor:
    """Reference for :func:`sparseprune.functional.masked_conv2d`."""
    input, stride, padding, dilation = _args.conv_args(input, weight, stride, padding, dilation)
    masked = _functional(method, weight, scores, scale, rescale, temperature, density, generator)
    return F.conv2d(input, masked, bias, stride, padding, dilation, groups)


# ---- The seed papers' code paths, for benchmarks ---------------------------------------------

def gumbel_softmax_weight(weight: Tensor, scores: Tensor, scale: Optional[Tensor] = None, *,
                          temperature: float = 1.0) -> Tensor:
    """The seed paper's code path: ``F.gumbel_softmax`` over the stacked logits ``(scores, 0)``.

    Same distribution and straight-through gradient as :func:`aslp_weight`, from torch's own
    random stream (two exponentials per weight), materialising the noise and the soft sample.
    """
    _check_shapes(weight, scores)
    temperature = _args.temperature(temperature)
    logits = torch.stack((scores, torch.zeros_like(scores)))
    z = F.gumbel_softmax(logits, tau=temperature, hard=True, dim=0)[0]
    out = weight * z
    return out * scale if scale is not None else out


def bernoulli_dwr_weight(weight: Tensor, scores: Tensor, *, dwr: bool = True) -> Tensor:
    """Supermask as its reference code writes it: ``b = bernoulli(sigmoid(s))``, the
    straight-through ``m = b + sigmoid(s) - sigmoid(s).detach()``, and with DWR
    ``(numel / m.sum()) * w * m``."""
    _check_shapes(weight, scores)
    p = torch.sigmoid(scores)
    m = torch.bernoulli(p.detach()) + p - p.detach()
    return (m.numel() / m.sum()) * weight * m if dwr else weight * m


class _KeepTop(torch.autograd.Function):
    """0/1 mask of the entries above the threshold; the gradient passes through unchanged."""

    @staticmethod
    def forward(ctx, magnitude: Tensor, threshold: Tensor) -> Tensor:
        return (magnitude > threshold).to(magnitude.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


def kthvalue_weight(weight: Tensor, scores: Tensor, *, density: float) -> Tensor:
    """Edge-Popup as its reference code writes it: the per-layer ``kthvalue`` of ``|scores|`` as a
    threshold, a 0/1 mask, and a straight-through backward."""
    _check_shapes(weight, scores)
    magnitude = scores.abs()
    pruned = scores.numel() - round(_args.density(density) * scores.numel())
    if pruned == 0:
        return weight * (magnitude - magnitude.detach() + 1)
    threshold = torch.kthvalue(magnitude.detach().flatten(), pruned).values
    return weight * _KeepTop.apply(magnitude, threshold)


class SeedPaperLayer(nn.Module):
    """A linear or conv layer masked the way a seed paper's code does it, each forward:
    ``"aslp"`` :func:`gumbel_softmax_weight` (with the Smart Rescale ``scale`` if given),
    ``"supermask"`` :func:`bernoulli_dwr_weight`, ``"edge_popup"`` :func:`kthvalue_weight`;
    then ``F.linear`` / the layer's convolution. Weight and bias are frozen; ``scores`` (and
    ``scale``) are trained."""

    def __init__(self, layer: nn.Linear | nn.Conv2d, method: str = "aslp",
                 scores: Optional[Tensor] = None, scale: Optional[Tensor] = None, *,
                 temperature: float = 1.0, dwr: bool = True, density: float = 0.5):
        super().__init__()
        if method not in ("aslp", "supermask", "edge_popup"):
            raise ValueError(f"method must be aslp, supermask or edge_popup, got {method!r}")
        self.layer, self.method = layer, method
        self.layer.requires_grad_(False)
        self.scores = nn.Parameter(torch.zeros_like(layer.weight) if scores is None
                                   else scores.detach().clone())
        self.scale = None if scale is None else nn.Parameter(scale.detach().clone())
        self.temperature = _args.temperature(temperature)
        self.dwr, self.density = dwr, _args.density(density)

    def masked_weight(self) -> Tensor:
        weight = self.layer.weight
        if self.method == "aslp":
            return gumbel_softmax_weight(weight, self.scores, self.scale,
                                         temperature=self.temperature)
        if self.method == "supermask":
            return bernoulli_dwr_weight(weight, self.scores, dwr=self.dwr)
        return kthvalue_weight(weight, self.scores, density=self.density)

    def forward(self, input: Tensor) -> Tensor:
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(input, self.masked_weight(), self.layer.bias)
        return F.linear(input, self.masked_weight(), self.layer.bias)


def seed_paper_copy(model: nn.Module, method: str = "aslp", **options) -> nn.Module:
    """A copy of ``model`` whose masked layers (or plain ``nn.Linear`` / ``nn.Conv2d``) are
    :class:`SeedPaperLayer` s with the same weights, scores and scales: the seed papers' code path
    for the same network, for benchmarks. A masked layer keeps its own method and options;
    ``method`` and ``options`` (see SeedPaperLayer) apply to plain layers."""
    from .nn.masked import MaskedConv2d, MaskedLinear

    twin = copy.deepcopy(model)
    for name, module in list(twin.named_modules()):
        if isinstance(module, (MaskedLinear, MaskedConv2d)):
            m = module.method
            new = SeedPaperLayer(module.to_dense(module.weight), m.name, module.scores,
                                 getattr(module, "scale", None),
                                 temperature=getattr(m, "temperature", 1.0),
                                 dwr=getattr(m, "rescale", None) == "dwr",
                                 density=getattr(m, "density", 0.5))
        elif type(module) in (nn.Linear, nn.Conv2d):
            new = SeedPaperLayer(module, method, **options)
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


# ---- budget-aware weight reparametrisation (docs/METHODS.md 4) ---------------------------------

_C2 = math.exp(-1.0)


def reparam_h(weight: Tensor, t: Tensor, power: int = 4) -> Tensor:
    """``h_t(x) = C1 * (exp(-1 / (|t x|^n + 1)) - C2)``, C1 = 1/(1 - e^-1), C2 = e^-1, by autograd."""
    u = (t.to(weight.dtype) * weight).abs() ** _args.power(power)
    return (torch.exp(-1.0 / (u + 1.0)) - _C2) * (1.0 / (1.0 - _C2))


def reparam_weight(weight: Tensor, t: Tensor, *, power: int = 4, return_sum: bool = False):
    """Same as :func:`sparseprune.functional.reparam_weight`, in plain PyTorch."""
    _args.tensors({"weight": weight, "t": t})
    h = reparam_h(weight, t, power)
    w_hat = weight * h
    if not return_sum:
        return w_hat
    return w_hat, h.sum(dtype=torch.float64 if weight.dtype == torch.float64 else torch.float32)


def hard_concrete_sample(log_alpha: Tensor, *, beta: float = 2.0 / 3.0, gamma: float = -0.1,
                         zeta: float = 1.1, generator: Optional[torch.Generator] = None) -> Tensor:
    """Same as :func:`sparseprune.functional.hard_concrete_sample`, with the float64 NumPy Philox
    noise (the same draw from ``generator``)."""
    beta, gamma, zeta = _args.hard_concrete(beta, gamma, zeta)
    noise = logistic_noise(log_alpha.numel(), *seed_offset(next_rng(generator)))
    return hard_concrete_from_noise(log_alpha, noise.reshape(log_alpha.shape), beta=beta,
                                    gamma=gamma, zeta=zeta)


def hard_concrete_from_noise(log_alpha: Tensor, noise: Tensor, *, beta: float = 2.0 / 3.0,
                             gamma: float = -0.1, zeta: float = 1.1) -> Tensor:
    """The hard-concrete sample for a given logistic ``noise`` (log_alpha's shape), computed in
    log_alpha's dtype; autograd gives the pathwise gradient."""
    beta, gamma, zeta = _args.hard_concrete(beta, gamma, zeta)
    noise = noise.to(log_alpha.device, log_alpha.dtype)
    s = torch.sigmoid((noise + log_alpha) / beta)
    # hardtanh, as the seed code: no gradient where it clips, even at exactly 0 or 1 (METHODS 5.2).
    return F.hardtanh(s * (zeta - gamma) + gamma, 0.0, 1.0)
