"""How the runner applies a method to a model, whatever kind of method it is.

- Mask methods (``sparseprune.methods.available()``: ASLP, Supermask, Edge-Popup, and any method
  registered later) are applied with :func:`sparseprune.convert`. Their options are the keyword
  arguments of their constructors (:func:`option_defaults`): the CLI turns each into a flag
  (``--rescale smart``, ``--signed-constant``) and also takes ``--opt KEY=VALUE``; they are
  validated by :func:`sparseprune.methods.create`. A method whose constructor takes ``density``
  receives ``--density``.
- Pruning at initialisation (``sparseprune.prune_at_init``, when present) scores and fixes a mask
  before training; ``--density`` is required and ``--opt`` goes to ``prune_at_init`` as keywords.

Nothing here names a particular mask method: new ones work without runner changes.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

import sparseprune as sp

from .config import ConfigError

# Names `sparseprune.prune_at_init` takes (issue 5); it may publish its own list instead.
PRUNE_AT_INIT_NAMES = ("snip", "grasp", "synflow", "iter_snip", "force", "random", "magnitude")
# prune_at_init keywords the runner fills itself.
_RUNNER_KEYWORDS = {"model", "method", "density", "data", "loss_fn", "generator"}


def _prune_at_init() -> Optional[Callable]:
    return getattr(sp, "prune_at_init", None)


def _prune_at_init_names() -> tuple[str, ...]:
    fn = _prune_at_init()
    if fn is None:
        return ()
    published = getattr(sp, "PRUNE_AT_INIT_METHODS", None) or getattr(fn, "methods", None)
    return tuple(published) if published else PRUNE_AT_INIT_NAMES


def _prune_at_init_cli() -> dict[str, str]:
    """CLI name -> prune_at_init name. A name that a mask method also has gets ``_init``
    (``magnitude_init``: magnitude at initialisation; ``magnitude``: Han et al.'s rounds)."""
    masks = set(sp.methods.available())
    return {(name + "_init" if name in masks else name): name for name in _prune_at_init_names()}


def available() -> dict[str, str]:
    """Every method the runner can train, name -> kind (``"mask"`` or ``"prune_at_init"``)."""
    # "fixed" prunes nothing on its own: prune_at_init sets its mask.
    out = {name: "mask" for name in sp.methods.available() if _method_class(name).standalone}
    out.update({name: "prune_at_init" for name in _prune_at_init_cli()})
    return out


def kind_of(method: str) -> str:
    """The method's kind; unknown names raise ConfigError listing the available ones."""
    methods = available()
    if method not in methods:
        raise ConfigError(f"--method: unknown method {method!r}; available: "
                          f"{', '.join(sorted(methods))}")
    return methods[method]


def _method_class(method: str) -> type:
    return sp.methods.base._REGISTRY[method]  # the registry has no public class lookup yet


def option_defaults() -> dict[str, dict[str, Any]]:
    """Every option of the registered mask methods: name -> {method: default}, read from the
    constructors' signatures (the registry is the only source; nothing here names a method)."""
    out: dict[str, dict[str, Any]] = {}
    for method in sp.methods.available():
        params = inspect.signature(_method_class(method).__init__).parameters
        for name, p in params.items():
            if name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            out.setdefault(name, {})[method] = p.default
    return dict(sorted(out.items()))


def _coerce(method: str, options: dict[str, Any]) -> dict[str, Any]:
    """Command-line values -> constructor values, guided by the constructor's defaults: dtype
    names for ``*dtype`` options, 0/1 for booleans, ints for floats."""
    cls = _method_class(method)
    params = inspect.signature(cls.__init__).parameters
    out = {}
    for key, value in options.items():
        default = params[key].default if key in params else inspect.Parameter.empty
        if key.endswith("dtype") and isinstance(value, str):
            dtype = getattr(torch, value, None)
            if not isinstance(dtype, torch.dtype):
                raise ConfigError(f"option {key}: {value!r} is not a torch dtype name "
                                  "(e.g. float32, bfloat16)")
            value = dtype
        elif isinstance(default, bool) and value in (0, 1) and not isinstance(value, bool):
            value = bool(value)
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        out[key] = value
    return out


def _accepts_density(method: str) -> bool:
    cls = _method_class(method)
    return "density" in inspect.signature(cls.__init__).parameters


def mask_options(method: str, options: dict[str, Any], density: Optional[float]) -> dict[str, Any]:
    """The keyword arguments for ``convert(model, method, **kwargs)``, validated by creating one
    instance with :func:`sparseprune.methods.create`. Errors raise ConfigError."""
    kwargs = _coerce(method, options)
    if "density" in kwargs:
        raise ConfigError("pass the density with --density, not --opt density=...")
    if density is not None and _accepts_density(method):
        kwargs["density"] = density
    try:
        sp.methods.create(method, **kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"--method {method}: {exc}") from exc
    return kwargs


def takes_density(method: str) -> bool:
    """Whether ``--density`` goes to the method's constructor (else finalize imposes it)."""
    return kind_of(method) == "mask" and _accepts_density(method)


def rounds(config) -> int:
    """Pruning rounds of an iterative method (magnitude, lottery): its ``rounds`` option; else 0."""
    if kind_of(config.method) != "mask" \
            or not issubclass(_method_class(config.method), sp.methods.iterative.IterativeMask):
        return 0
    default = inspect.signature(_method_class(config.method).__init__).parameters["rounds"].default
    return int(config.options.get("rounds", default))


def total_epochs(config) -> int:
    """Epochs of the whole run: ``--epochs`` per round, rounds + 1 rounds for iterative methods."""
    return config.epochs * (rounds(config) + 1)


def check(method: str, options: dict[str, Any], density: Optional[float]) -> None:
    """Validate ``--method``, ``--opt`` and ``--density`` together, before any data is loaded."""
    kind = kind_of(method)
    if kind == "mask":
        mask_options(method, options, density)
        return
    if density is None:
        raise ConfigError(f"--method {method} prunes at initialisation and needs --density")
    params = inspect.signature(_prune_at_init()).parameters
    has_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    valid = [n for n in params if n not in _RUNNER_KEYWORDS
             and params[n].kind is not inspect.Parameter.VAR_KEYWORD]
    reserved = sorted(k for k in options if k in _RUNNER_KEYWORDS)
    if reserved:
        raise ConfigError(f"--opt: {', '.join(reserved)} cannot be set with --opt "
                          "(the runner passes them; use --density for the density)")
    unknown = sorted(k for k in options if k not in valid)
    if unknown and not has_kwargs:
        raise ConfigError(f"--opt: unknown option(s) {', '.join(map(repr, unknown))} for "
                          f"{method!r}; valid options: {', '.join(valid)}")


def apply(model: nn.Module, method: str, options: dict[str, Any], *, density: Optional[float],
          data: Iterable) -> nn.Module:
    """Apply the method to ``model`` (in place where possible); returns the model to train.

    ``data`` is an iterable of (inputs, labels) training batches, used only by data-dependent
    pruning at initialisation."""
    if kind_of(method) == "mask":
        return sp.convert(model, method, **mask_options(method, options, density))
    try:
        return _prune_at_init()(model, _prune_at_init_cli()[method], density=density, data=data,
                                loss_fn=F.cross_entropy, **options)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"--method {method}: {exc}") from exc
