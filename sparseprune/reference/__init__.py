"""Pure-PyTorch (and NumPy) references for every fused op: the oracle of the tests.

Same names, arguments and seed semantics as :mod:`sparseprune.functional`: with the same generator
state they draw the same ``(seed, offset)`` and build the same masks from the same Philox stream,
computed independently (NumPy Philox, float64 ``log``). They differ from the kernels only by
rounding: a mask can differ where ``|scores + L|`` is within about 1e-6 of 0.

:mod:`.philox` is the random stream, :mod:`.masks` the fused ops' math, :mod:`.papers` the seed
papers' code paths (e.g. :func:`gumbel_softmax_weight`; for N:M masks MaskLLM's
:func:`maskllm_weight` and SR-STE's :func:`srste_paper_weight`), which the benchmarks time
against the fused kernels.
"""

from .inference import nm_dense_weight, nm_linear
from .masks import (aslp_weight, edge_popup_weight, hard_concrete_from_noise,
                    hard_concrete_sample, masked_conv2d, masked_linear, nm_gumbel_from_noise,
                    nm_gumbel_noise, nm_gumbel_weight, nm_topk_weight, reparam_h, reparam_weight,
                    sparse_conv2d, sparse_linear, srste_weight, supermask_weight)
from .papers import (MaskLLMLinear, SRSTELinear, SeedPaperLayer, bernoulli_dwr_weight,
                     gumbel_softmax_weight, kthvalue_weight, maskllm_weight, nm_paper_copy,
                     seed_paper_copy, srste_paper_weight)
from .philox import logistic_noise, philox4x32_10, philox_bits, uniform

__all__ = ["philox4x32_10", "philox_bits", "uniform", "logistic_noise", "aslp_weight",
           "supermask_weight", "edge_popup_weight", "masked_linear", "masked_conv2d",
           "gumbel_softmax_weight", "bernoulli_dwr_weight", "kthvalue_weight",
           "SeedPaperLayer", "seed_paper_copy", "reparam_h", "reparam_weight",
           "hard_concrete_sample", "hard_concrete_from_noise", "sparse_linear", "sparse_conv2d",
           "nm_linear", "nm_dense_weight",
           "nm_gumbel_weight", "nm_gumbel_noise", "nm_gumbel_from_noise", "nm_topk_weight",
           "srste_weight", "maskllm_weight", "srste_paper_weight", "MaskLLMLinear",
           "SRSTELinear", "nm_paper_copy"]
