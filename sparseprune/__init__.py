"""sparseprune: fused CPU/CUDA kernels for learning sparse subnetworks in PyTorch.

Quick start::

    import sparseprune as sp
    sp.convert(model, "aslp", rescale="smart")   # nn.Linear / nn.Conv2d -> masked layers
    ...train the scores...
    print(sp.sparsity_report(model))
    sp.finalize(model)                            # plain layers, pruned weights exactly 0
    sp.to_sparse(model.eval())                    # sparse inference layers, format per layer
    sp.save(model, "model.safetensors")           # only the kept weights
    sp.prune_oneshot(pretrained, "wanda", pattern="2:4", data=batches)  # one shot, no training

Layout (imports go downward only, checked by import-linter): ``runner`` (the experiment
application) > ``reference`` > ``training`` | ``pruning`` | ``inference`` > ``convert`` |
``report`` > ``nn`` > ``methods`` > ``functional`` | ``select`` > ``ops`` > ``_validate``.
"""

__version__ = "0.1.0"

from . import functional, methods, nn, ops, reference  # noqa: E402
from .ops import rng  # noqa: E402
from .ops._ext import (ExtensionError, build_info, compiled_cpu_isas, cpu_isa,  # noqa: E402
                       set_cpu_isa, supported_cpu_isas)
from .convert import (convert, final_masks, finalize, mask_parameters,  # noqa: E402
                      masked_layers, param_groups, sampled_masks, set_progress)
from .report import Report, sparsity_report  # noqa: E402
from .methods import sensitivity  # noqa: E402
from .training import budget, distributed, schedules  # noqa: E402
from . import pruning  # noqa: E402
from .pruning import prune_at_init, prune_oneshot, set_masks  # noqa: E402
from .inference import load, save, to_sparse  # noqa: E402

__all__ = [
    "convert", "finalize", "prune_at_init", "prune_oneshot", "set_masks", "pruning", "final_masks", "mask_parameters",
    "masked_layers", "param_groups", "sampled_masks", "sparsity_report", "Report", "functional", "methods",
    "nn", "ops", "reference", "budget", "sensitivity", "cpu_isa", "set_cpu_isa", "compiled_cpu_isas",
    "supported_cpu_isas", "build_info", "ExtensionError", "__version__", "to_sparse", "save", "load",
    "schedules", "rng", "distributed", "set_progress",
]
