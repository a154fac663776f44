"""A run's configuration: one JSON-able dataclass, its validation, and ``KEY=VALUE`` option parsing.

Every check raises :class:`ConfigError` with a one-line message naming the command-line flag and the
value received; the CLI prints it and exits with status 2.
"""

from __future__ import annotations

import json
import pathlib
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional, Sequence

from .. import _validate as V
from .data import DATASETS
from .models import MODELS

CONFIG_FILE = "config.json"
SELECTS = ("best", "last")


class ConfigError(ValueError):
    """Bad user input: an unknown name, an out-of-range value, missing or corrupt data."""


@dataclass
class RunConfig:
    """Everything that determines a run (the CLI's ``train`` flags, by the same names)."""

    method: str
    model: str
    dataset: str
    options: dict[str, Any] = field(default_factory=dict)  # method options (--opt KEY=VALUE)
    epochs: int = 10
    batch_size: int = 256
    steps_per_epoch: Optional[int] = None  # cap on the batches of an epoch; None = a full pass
    lr: Optional[float] = None            # learning rate of the method's main group
    group_lr: dict[str, float] = field(default_factory=dict)  # --group-lr NAME=LR
    density: Optional[float] = None       # fraction of weights kept by the final subnetwork
    density_scope: str = "global"
    budget_strength: Optional[float] = None  # None: constrained budget toward --density;
                                          # L > 0: penalty of strength L; 0: no budget
    seed: int = 0
    val_fraction: float = 0.1
    augment: bool = False
    patience: int = 0                     # early stopping on val accuracy; 0 = off
    select: str = "best"                  # final model: best val epoch or last epoch
    init: Optional[str] = None            # weight init; None = the method's default
    data_dir: Optional[str] = None
    download: bool = False
    max_minutes: float = 0.0              # stop before an epoch that would end past it; 0 = off
    threads: Optional[int] = None
    fsdp: bool = False                    # shard with FSDP2 over the torchrun ranks

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"config has unknown keys {unknown}")
        return cls(**data)

    def save(self, directory: pathlib.Path) -> None:
        (pathlib.Path(directory) / CONFIG_FILE).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, directory: pathlib.Path) -> "RunConfig":
        path = pathlib.Path(directory) / CONFIG_FILE
        if not path.is_file():
            raise ConfigError(f"{directory} is not a run directory (no {CONFIG_FILE})")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as exc:
            raise ConfigError(f"{path}: unreadable run config ({exc})") from exc


# -------------------------------------------------------------------------- option parsing

_INT = re.compile(r"[+-]?\d+")


def parse_value(text: str) -> Any:
    """``none``/``null`` -> None, ``true``/``false`` -> bool, integers, floats, else the string."""
    low = text.strip().lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    if _INT.fullmatch(text.strip()):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def parse_pairs(items: Optional[Sequence[str]], flag: str) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}``; malformed or repeated keys raise ConfigError."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", key):
            raise ConfigError(f"{flag} expects KEY=VALUE, got {item!r}")
        if key in out:
            raise ConfigError(f"{flag} {key} given twice")
        out[key] = parse_value(value)
    return out


# ------------------------------------------------------------------------------ validation

def _flag(flag: str, check, *args, **kwargs) -> Any:
    """``check(flag, ...)`` from :mod:`sparseprune._validate`, its error as a ConfigError."""
    try:
        return check(flag, *args, **kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from None


def validate(config: RunConfig) -> None:
    """Check names and ranges (not the method's options: see ``runner.methods``)."""
    if config.model not in MODELS:
        raise ConfigError(f"--model: unknown model {config.model!r}; valid: {', '.join(MODELS)}")
    if config.dataset not in DATASETS:
        raise ConfigError(f"--dataset: unknown dataset {config.dataset!r}; "
                          f"valid: {', '.join(DATASETS)}")
    _flag("--epochs", V.positive_int, config.epochs)
    _flag("--batch-size", V.positive_int, config.batch_size)
    if config.steps_per_epoch is not None:
        _flag("--steps-per-epoch", V.positive_int, config.steps_per_epoch)
    if config.lr is not None:
        _flag("--lr", V.finite_number, config.lr, minimum=0.0, strict=True)
    for name, lr in config.group_lr.items():
        _flag(f"--group-lr {name}", V.finite_number, lr, minimum=0.0, strict=True)
    if config.density is not None:
        _flag("--density", lambda flag, d: V.density(d, name=flag), config.density)
    _flag("--density-scope", V.choice, config.density_scope, V.SCOPES)
    if config.budget_strength is not None:
        _flag("--budget-strength", V.finite_number, config.budget_strength, minimum=0.0)
    _flag("--seed", V.positive_int, config.seed, minimum=0)
    _flag("--val-fraction", V.number_in, config.val_fraction, 0.0, 1.0, high_open=True)
    _flag("--patience", V.positive_int, config.patience, minimum=0)
    if config.patience and config.val_fraction == 0 \
            and DATASETS[config.dataset].kind != "synthetic":
        raise ConfigError("--patience needs a validation split (--val-fraction > 0)")
    _flag("--select", V.choice, config.select, SELECTS)
    _flag("--max-minutes", V.finite_number, config.max_minutes, minimum=0.0)
    if config.threads is not None:
        _flag("--threads", V.positive_int, config.threads)
    _flag("--init", V.choice, config.init, (None,) + V.INITS)
