"""Model surgery: :func:`convert` swaps layers for masked ones; :func:`finalize` bakes the masks in;
the masked layers' parameters and optimizer groups (:func:`param_groups`)."""

from __future__ import annotations

import contextlib
import fnmatch
import warnings
from typing import Any, Callable, Iterable, Iterator, Optional, Union

import torch
import torch.nn.utils.prune  # noqa: F401  (torch.nn.utils.prune.remove)
from torch import Tensor, nn

from . import _validate
from .methods import MaskMethod, Recipe, create
from .nn.coverage import KINDS, Kind, kind_of, uncovered_weights
from .nn.masked import MaskedLayer
from .nn.sharded import fsdp_modules, gathered
from .nn.sparse import SparseLayer
from .select import select_top

Filter = Union[None, str, Iterable[str], Callable[[str, nn.Module], bool]]


def matches(spec: Filter, name: str, module: nn.Module) -> bool:
    """Whether a layer filter (names, glob patterns or a predicate) matches the layer."""
    if callable(spec):
        return bool(spec(name, module))
    patterns = [spec] if isinstance(spec, str) else list(spec)
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def selected(name: str, module: nn.Module, include: Filter, exclude: Filter) -> bool:
    """Whether ``include`` (None: every layer) and ``exclude`` (None: none) let the layer through."""
    return ((include is None or matches(include, name, module))
            and (exclude is None or not matches(exclude, name, module)))


def replace_module(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put ``new`` in place of submodule ``name``; returns the model (``new`` for ``name=""``)."""
    if name == "":
        return new
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, new)
    return model


def _convertible(module: nn.Module, embeddings: bool) -> Optional[Kind]:
    kind = kind_of(module)
    if kind is None or isinstance(module, MaskedLayer) or (kind.opt_in and not embeddings):
        return None
    return kind


def convertible_layers(model: nn.Module, include: Filter = None, exclude: Filter = None, *,
                       embeddings: bool = False) -> list[tuple[str, nn.Module]]:
    """The plain layers of ``model`` that :func:`convert` would swap for masked ones (the kinds of
    :mod:`sparseprune.nn.coverage`), with their qualified names, in module order (maybe none)."""
    return [(name, module) for name, module in model.named_modules()
            if _convertible(module, embeddings) is not None
            and selected(name, module, include, exclude)]


def _torch_pruned(module: nn.Module) -> bool:
    """Whether ``torch.nn.utils.prune`` reparametrised the module's weight."""
    return hasattr(module, "weight_orig") and hasattr(module, "weight_mask")


@torch.no_grad()
def _import_torch_prune(module: nn.Module) -> Tensor:
    """Makes a ``torch.nn.utils.prune`` reparametrisation permanent; returns its mask."""
    mask = module.weight_mask.detach().bool().clone()
    torch.nn.utils.prune.remove(module, "weight")
    return mask


def _warn_uncovered(model: nn.Module, skipped: set[int]) -> None:
    """A UserWarning naming the 2-D+ weights left dense that the caller did not exclude."""
    covered = {id(p) for m in model.modules() if isinstance(m, MaskedLayer) for p in m.parameters()}
    names = uncovered_weights(model, covered | skipped)
    if not names:
        return
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    warnings.warn(f"convert: {len(names)} weight(s) with 2 or more dimensions stay dense and are "
                  f"not counted by sparsity_report: {shown}. Masked kinds: "
                  f"{', '.join(k.name for k in KINDS)} (embedding with embeddings=True); "
                  "exclude= a layer to leave it dense without this warning", UserWarning,
                  stacklevel=3)


def convert(model: nn.Module, method: str = "aslp", *, include: Filter = None,
            exclude: Filter = None, embeddings: bool = False,
            **method_options: Any) -> nn.Module:
    """Swap every covered layer of ``model`` for a masked layer, in place.

    Covered (:mod:`sparseprune.nn.coverage`): ``nn.Linear`` (and subclasses keeping its forward),
    ``nn.Conv1d``, ``nn.Conv2d``, Hugging Face's ``Conv1D``, the input projection of
    ``nn.MultiheadAttention`` and, with ``embeddings=True``, ``nn.Embedding``. Each masked layer
    keeps the original weight and bias Parameters and gets its own instance of ``method`` with
    ``method_options`` (see ``sparseprune.methods.available()``). ``include`` and ``exclude``
    select layers by qualified name (exact names or glob patterns, one or several) or by a
    predicate ``(name, module) -> bool``. Weights of 2 or more dimensions that stay dense without
    being excluded are named in a UserWarning. A layer pruned with ``torch.nn.utils.prune`` is
    imported by the ``"fixed"`` method (its mask becomes the layer's); other methods ask for
    ``prune.remove`` first. Returns the model (a new module only when ``model`` itself is a single
    layer). Raises ValueError when nothing matches, and, before changing anything, when a layer
    cannot take the method (e.g. ``pattern="2:4"`` on a layer whose input size is not a multiple
    of 4: the message names the layer; leave it dense with ``exclude=``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    targets = convertible_layers(model, include, exclude, embeddings=embeddings)
    if not targets:
        already = masked_layers(model)
        if already:
            name, layer = already[0]
            raise ValueError(f"convert: the model is already converted ({len(already)} masked "
                             f"layers, e.g. {name!r} with method {layer.method.name!r}); convert "
                             "a fresh model, or sp.finalize(model) first to mask the result again")
        raise ValueError("convert: no layer of a covered kind matched "
                         f"({', '.join(k.name for k in KINDS)}; include={include!r}, "
                         f"exclude={exclude!r})")
    # Every layer must suit the method (e.g. an N:M pattern's group size) before anything changes.
    probe = method if isinstance(method, MaskMethod) else create(method, **method_options)
    for name, module in targets:
        kind = kind_of(module)
        probe.check_layer(name, tuple(kind.weight(module).shape), kind.masked.input_dim)
    imported = {}
    for name, module in targets:
        if _torch_pruned(module):
            if method != "fixed":
                raise ValueError(
                    f"convert: layer {name!r} was pruned with torch.nn.utils.prune (it has "
                    "weight_orig and weight_mask); call torch.nn.utils.prune.remove(module, "
                    "'weight') first, or convert with method='fixed' to import its mask")
            imported[name] = _import_torch_prune(module)
    converted = {name for name, _ in targets}
    skipped = {id(p) for name, m in model.named_modules()  # excluded on purpose
               if name not in converted and _convertible(m, embeddings) is not None
               for p in m.parameters()}
    for name, module in targets:
        masked = kind_of(module).masked.from_dense(module, method, **method_options)
        masked.method.bind(name, masked)
        if name in imported:
            masked.method.set_mask(masked, imported[name].to(masked.weight.device))
        model = replace_module(model, name, masked)
    _warn_uncovered(model, skipped)
    return model


def masked_layers(model: nn.Module) -> list[tuple[str, MaskedLayer]]:
    """The masked layers of ``model`` with their qualified names, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, MaskedLayer)]


def mask_parameters(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The trainable parameters the pruning methods added, grouped by name (``"scores"``,
    ``"scale"``, ...), e.g. for optimizer parameter groups with their own learning rates."""
    groups: dict[str, list[nn.Parameter]] = {}
    for _, layer in masked_layers(model):
        for name in layer.method.parameter_names:
            param = getattr(layer, name, None)
            if isinstance(param, nn.Parameter) and param.requires_grad:
                groups.setdefault(name, []).append(param)
    return groups


def recipe(model: nn.Module) -> Recipe:
    """The training recipe of the method of ``model``'s masked layers (they must share one)."""
    classes = {type(layer.method) for _, layer in masked_layers(model)}
    if not classes:
        raise ValueError("the model has no masked layers; call sparseprune.convert first")
    if len(classes) > 1:
        raise ValueError(f"the masked layers use several methods "
                         f"({', '.join(sorted(c.name for c in classes))}); build the optimizer "
                         "groups yourself from sparseprune.mask_parameters")
    return next(iter(classes)).recipe


def param_groups(model: nn.Module, *, lr: Optional[float] = None,
                 lrs: Optional[dict[str, float]] = None) -> list[dict[str, Any]]:
    """Optimizer parameter groups with the method's recommended learning rates (its
    :class:`~sparseprune.methods.Recipe`): one group per parameter the methods add (``"scores"``,
    ``"scale"``, ``"t"``, ``"log_alpha"``) and ``"weights"`` for every other trainable parameter;
    frozen parameters are left out. ``lr`` overrides the main group's rate, ``lrs`` any group's
    by name. Each group carries its ``"name"``. The recipe's optimizer, momentum and weight decay
    are ``sparseprune.convert.recipe(model)``'s::

        opt = torch.optim.SGD(sp.param_groups(model), momentum=0.9)   # ASLP: scores lr 50,
                                                                      # Smart Rescale lr 1e-3
    """
    groups = {name: list(params) for name, params in mask_parameters(model).items()}
    taken = {id(p) for params in groups.values() for p in params}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
    if rest:
        groups["weights"] = rest
    rates = recipe(model).learning_rates(list(groups), lr, lrs)
    return [{"params": params, "lr": rates[name], "name": name} for name, params in groups.items()]


@contextlib.contextmanager
def sampled_masks(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, the stochastic methods (ASLP, Supermask) sample a fresh mask at every
    forward in eval mode too, instead of using their deterministic final mask. The Supermask papers
    report accuracy averaged over such samples::

        with sp.sampled_masks(model.eval()):
            accuracy = sum(evaluate(model) for _ in range(10)) / 10
    """
    methods = [layer.method for _, layer in masked_layers(model)
               if hasattr(layer.method, "sample_in_eval")]
    before = [m.sample_in_eval for m in methods]
    for m in methods:
        m.sample_in_eval = True
    try:
        yield model
    finally:
        for m, value in zip(methods, before):
            m.sample_in_eval = value


def set_progress(model: nn.Module, fraction: float) -> nn.Module:
    """Tell every masked layer how far training has got (``fraction`` in [0, 1], e.g.
    ``step / total_steps``), for the options a method schedules over training: the learned N:M
    masks' ``temperature`` and ``logit_scale`` pairs ``(start, end)`` are linear in it (MaskLLM's
    schedules). Call it every step (a plain attribute, not saved in ``state_dict``: call it again
    after loading). Methods without schedules ignore it. Returns the model::

        for step, batch in enumerate(loader):
            sp.set_progress(model, step / total_steps)
            ...
    """
    fraction = _validate.progress(fraction)
    for _, layer in masked_layers(model):
        layer.method.set_progress(layer, fraction)
    return model


@torch.no_grad()
def final_masks(model: nn.Module, *, density: Optional[float] = None,
                scope: str = "global", min_layer_density: float = 0.0) -> dict[str, torch.Tensor]:
    """The deterministic mask of every masked layer, by name.

    Without ``density`` each method's own final rule decides (e.g. ``scores >= 0`` for ASLP). With
    ``density`` exactly ``round(density * N)`` weights are kept by each method's ranking scores:
    over all masked layers together (``scope="global"``, N = all their weights) or in each layer
    (``scope="local"``, N = the layer's weights). Ties break by position. ``min_layer_density``
    keeps at least ``ceil(min_layer_density * N_l)`` weights in every layer (the global total
    stays exact; :func:`sparseprune.select.select_top`).

    On a model sharded by FSDP2 the scores are gathered (every rank must call this; each gets
    every whole mask), so the masks and the global top-k are the unsharded model's.
    """
    scope = _validate.scope(scope)
    for name, layer in masked_layers(model) if density is not None else ():
        pattern = layer.method.pattern
        if pattern is not None:
            raise ValueError(
                f"finalize: layer {name!r} has an N:M pattern ({pattern[0]}:{pattern[1]}), "
                f"which fixes its density (N/M = {pattern[0] / pattern[1]:g}); call "
                f"finalize(model) without density= (it keeps exactly {pattern[0]} of every "
                f"{pattern[1]}), got density={density!r}")
    min_layer_density = _validate.number_in("min_layer_density", min_layer_density, 0.0, 1.0)
    with gathered(model):
        layers = masked_layers(model)
        if density is None or not layers:
            return {name: layer.method.final_mask(layer).clone() for name, layer in layers}
        scores = [layer.method.ranking_scores(layer) for _, layer in layers]
        masks = select_top(scores, _validate.density(density), scope=scope,
                           min_layer_density=min_layer_density)
        return {name: mask for (name, _), mask in zip(layers, masks)}


def kept_count(layer: MaskedLayer, mask: torch.Tensor) -> int:
    """The weights the finalized ``layer`` keeps under ``mask``: those of the mask whose final
    scale is not 0 (a hard-concrete gate closed at test time zeroes a weight the mask keeps)."""
    scale = layer.method.final_scale(layer, mask)
    if isinstance(scale, torch.Tensor):
        return int((mask & (scale != 0)).sum())
    return int(mask.sum()) if scale != 0 else 0


@torch.no_grad()
def finalize(model: nn.Module, *, density: Optional[float] = None,
             scope: str = "global", min_layer_density: float = 0.0) -> nn.Module:
    """Bake the final masks in: every masked layer becomes its plain twin (``nn.Linear``,
    ``nn.Conv2d``, ...).

    Pruned weights are exactly 0 and each method's final scale (e.g. Smart Rescale) is folded into
    the kept ones, so in eval mode the result computes what the masked model computed. ``density``,
    ``scope`` and ``min_layer_density`` impose an exact final density, see :func:`final_masks`; on
    a model without masked layers (plain, finalized already, or converted by ``to_sparse``) that is
    an error. In place; returns the model (a new module only when ``model`` itself is a single masked layer).
    """
    layers = masked_layers(model)
    if not layers:
        what = ("it holds sparse inference layers (to_sparse)"
                if any(isinstance(m, SparseLayer) for m in model.modules())
                else "it is plain or finalized already")
        if density is not None:
            raise ValueError(f"finalize: the model has no masked layers to impose "
                             f"density={density!r} on ({what}); convert it first")
        warnings.warn(f"finalize: the model has no masked layers, nothing to do ({what})",
                      UserWarning, stacklevel=3)
        return model
    if fsdp_modules(model):
        # Plain twins carrying whole weights inside fully_shard modules would leave FSDP holding
        # the replaced parameters; the whole state belongs in an unsharded model.
        raise ValueError(
            "finalize: the model is sharded by FSDP2 (fully_shard); load its full state into an "
            "unsharded copy and finalize that: get_model_state_dict(model, options="
            "StateDictOptions(full_state_dict=True)) from torch.distributed.checkpoint.state_dict, "
            "or sparseprune.distributed.full_state_dict(model). sp.final_masks(model, "
            "density=...) works on the sharded model itself")
    masks = final_masks(model, density=density, scope=scope,
                        min_layer_density=min_layer_density)
    if density is not None:
        promised = sum(int(m.sum()) for m in masks.values())
        kept = sum(kept_count(layer, masks[name]) for name, layer in layers)
        if kept < promised:
            warnings.warn(f"finalize: density={density!r} selects {promised} weights but {kept} "
                          f"stay nonzero: the method's final scale is 0 for {promised - kept} of "
                          "them (hard_concrete: their test-time gate is closed); "
                          "sparseprune.budget.final_densities reports the same count",
                          UserWarning, stacklevel=3)
    for name, layer in layers:
        model = replace_module(model, name,
                               layer.to_dense(layer.method.final_weight(layer, masks[name])))
    return model
