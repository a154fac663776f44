"""How the runner applies a method to a model, whatever kind of method it is.

- Mask methods (``sparseprune.methods.available()`` whose class is ``standalone``) are applied
  with :func:`sparseprune.convert`. Their options are the method's ``option_defaults()``: the CLI
  turns each into a flag (``--rescale smart``, ``--signed-constant``) and also takes ``--opt
  KEY=VALUE``; they are validated by :func:`sparseprune.methods.create`. ``--density`` goes to
  the method as an option when its ``density_role`` is ``"option"``.
- Pruning at initialisation (:func:`sparseprune.prune_at_init`) scores and fixes a mask before
  training; ``--density`` is required and ``--opt`` goes to ``prune_at_init`` as keywords
  (:func:`sparseprune.pruning.options`).

Everything else the runner needs (density handling, rounds, training defaults, per-step and
per-epoch work) it asks the method: nothing here names a method.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

import sparseprune as sp
from sparseprune.methods import MaskMethod, Recipe

from .config import ConfigError

MASK, PRUNE_AT_INIT = "mask", "prune_at_init"


def _prune_at_init_cli() -> dict[str, str]:
    """CLI name -> prune_at_init name. A name that a mask method also has gets ``_init``
    (``magnitude_init``: magnitude at initialisation; ``magnitude``: Han et al.'s rounds)."""
    masks = set(sp.methods.available())
    return {(name + "_init" if name in masks else name): name for name in sp.pruning.METHODS}


def available() -> dict[str, str]:
    """Every method the runner can train, name -> kind (``"mask"`` or ``"prune_at_init"``)."""
    out = {name: MASK for name in sp.methods.available() if sp.methods.get(name).standalone}
    out.update({name: PRUNE_AT_INIT for name in _prune_at_init_cli()})
    return out


def kind_of(method: str) -> str:
    """The method's kind; unknown names raise ConfigError listing the available ones."""
    methods = available()
    if method not in methods:
        raise ConfigError(f"--method: unknown method {method!r}; available: "
                          f"{', '.join(sorted(methods))}")
    return methods[method]


def option_defaults() -> dict[str, dict[str, Any]]:
    """Every option of the registered mask methods: name -> {method: default}."""
    out: dict[str, dict[str, Any]] = {}
    for method in sp.methods.available():
        for name, default in sp.methods.get(method).option_defaults().items():
            out.setdefault(name, {})[method] = default
    return dict(sorted(out.items()))


def _coerce(method: str, options: dict[str, Any]) -> dict[str, Any]:
    """Command-line values -> constructor values, guided by the option's default: dtype names for
    ``*dtype`` options, 0/1 for booleans, ints for floats."""
    defaults = sp.methods.get(method).option_defaults()
    out = {}
    for key, value in options.items():
        default = defaults.get(key)
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


def mask_options(method: str, options: dict[str, Any], density: Optional[float]
                 ) -> tuple[dict[str, Any], MaskMethod]:
    """The keyword arguments for ``convert(model, method, **kwargs)`` and one instance built from
    them (which validated them). Errors raise ConfigError."""
    kwargs = _coerce(method, options)
    if "density" in kwargs:
        raise ConfigError("pass the density with --density, not --opt density=...")
    if density is not None and sp.methods.get(method).density_role == "option":
        kwargs["density"] = density
    try:
        return kwargs, sp.methods.create(method, **kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"--method {method}: {exc}") from exc


def probe(config) -> Optional[MaskMethod]:
    """An instance of the run's mask method with its options (None for pruning at init)."""
    if kind_of(config.method) != MASK:
        return None
    return mask_options(config.method, config.options, config.density)[1]


def recipe(method: str) -> Recipe:
    """The method's training defaults (pruning at init: those of its fixed masks)."""
    if kind_of(method) == MASK:
        return sp.methods.get(method).recipe
    return sp.pruning.RECIPE


def imposed_density(config) -> Optional[float]:
    """The density ``finalize`` must impose: ``--density`` unless the method trained with it as an
    option (or pruning at init fixed it)."""
    method = probe(config)
    if config.density is None or method is None or method.density_role == "option":
        return None
    return config.density


def rounds(config) -> int:
    """Pruning rounds after the first training (the method's ``pruning_rounds()``)."""
    method = probe(config)
    return method.pruning_rounds() if method is not None else 0


def total_epochs(config) -> int:
    """Epochs of the whole run: ``--epochs`` per round, rounds + 1 rounds."""
    return config.epochs * (rounds(config) + 1)


def check(method: str, options: dict[str, Any], density: Optional[float]) -> None:
    """Validate ``--method``, ``--opt`` and ``--density`` together, before any data is loaded."""
    if kind_of(method) == MASK:
        mask_options(method, options, density)
        return
    if density is None:
        raise ConfigError(f"--method {method} prunes at initialisation and needs --density")
    valid = sp.pruning.options()
    reserved = sorted(k for k in options if k in sp.pruning.SUPPLIED)
    if reserved:
        raise ConfigError(f"--opt: {', '.join(reserved)} cannot be set with --opt "
                          "(the runner passes them; use --density for the density)")
    unknown = sorted(k for k in options if k not in valid)
    if unknown:
        raise ConfigError(f"--opt: unknown option(s) {', '.join(map(repr, unknown))} for "
                          f"{method!r}; valid options: {', '.join(valid)}")


def apply(model: nn.Module, method: str, options: dict[str, Any], *, density: Optional[float],
          data: Iterable) -> nn.Module:
    """Apply the method to ``model`` (in place where possible); returns the model to train.

    ``data`` is an iterable of (inputs, labels) training batches, used only by data-dependent
    pruning at initialisation."""
    if kind_of(method) == MASK:
        return sp.convert(model, method, **mask_options(method, options, density)[0])
    try:
        return sp.prune_at_init(model, _prune_at_init_cli()[method], density=density, data=data,
                                loss_fn=F.cross_entropy, **options)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"--method {method}: {exc}") from exc
