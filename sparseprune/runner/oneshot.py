"""``sparseprune oneshot``: one-shot pruning (:func:`sparseprune.prune_oneshot`) of a runner model
or of MiniLM-L6 into a run directory.

- Vision (``--model lenet300 ... --dataset NAME``): the model's weights come from ``--weights``
  (a state dict saved with ``torch.save`` or ``sparseprune.save``, or a finished ``train`` run
  directory, whose ``subnetwork.safetensors`` is read; a dense model is e.g. ``sparseprune train --method
  magnitude_init --density 1``). Calibration: ``--calibration`` images of the train split (a
  seeded shuffle); the result: test accuracy, dense and pruned.
- ``--model minilm``: the pretrained MiniLM-L6 encoder (``include`` defaults to
  ``runner.minilm.ENCODER``), calibrated on ``--calibration`` sentences of the fortunes
  corpus's train split; the result: the mean teacher cosine on ``--heldout`` held-out sentences.

Run directory: ``config.json`` (these settings), ``final.json`` (the result, the density report,
the one-shot report with each layer's reconstruction error, times, versions),
``subnetwork.safetensors`` (the finalized model, :func:`sparseprune.save`), ``oneshot.txt`` (the
per-layer table) and ``density.png``.
"""

from __future__ import annotations

import copy
import json
import pathlib
import platform
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import torch
from torch import nn

import sparseprune as sp

from .. import _validate as V
from .config import ConfigError, _flag
from .finish import SUBNETWORK
from .metrics import jsonable, read_final, write_final

MINILM = "minilm"
FILES = ("config.json", "final.json", SUBNETWORK, "oneshot.txt", "density.png")


@dataclass
class OneshotConfig:
    """Everything that determines a one-shot run (the CLI's ``oneshot`` flags, by name)."""

    method: str
    model: str
    dataset: Optional[str] = None      # vision models; MiniLM calibrates on the fortunes corpus
    density: Optional[float] = None    # fraction kept ...
    pattern: Optional[str] = None      # ... or "N:M"
    weights: Optional[str] = None      # vision: state dict file or train run directory
    calibration: int = 128             # calibration images or sentences
    batch_size: int = 32
    heldout: int = 512                 # MiniLM: held-out sentences for the teacher cosine
    sequential: bool = True
    group: Optional[str] = None
    blocksize: Optional[int] = None
    percdamp: Optional[float] = None
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    seed: int = 0
    val_fraction: float = 0.1          # the train split matches `train`'s with the same seed
    data_dir: Optional[str] = None
    download: bool = False
    threads: Optional[int] = None
    kind: str = "oneshot"

    def save(self, directory: pathlib.Path) -> None:
        (directory / "config.json").write_text(json.dumps(asdict(self), indent=2) + "\n")


def default_out(c: OneshotConfig) -> pathlib.Path:
    target = f"d{c.density:g}" if c.pattern is None else "nm" + c.pattern.replace(":", "-")
    where = c.model if c.model == MINILM else f"{c.dataset}-{c.model}"
    return pathlib.Path("runs") / f"oneshot-{where}-{c.method}-{target}-s{c.seed}"


def validate(c: OneshotConfig) -> None:
    from .data import DATASETS
    from .models import MODELS

    _flag("--method", V.choice, c.method, V.ONESHOT_METHODS)
    try:
        V.density_or_pattern(c.density, c.pattern)
    except ValueError as exc:
        raise ConfigError(str(exc).replace("density", "--density").replace("pattern", "--pattern")
                          ) from None
    if c.model != MINILM and c.model not in MODELS:
        raise ConfigError(f"--model: unknown model {c.model!r}; valid: {', '.join(MODELS)}, "
                          f"{MINILM}")
    if c.model == MINILM and c.dataset is not None:
        raise ConfigError("--model minilm calibrates on the fortunes corpus; drop --dataset")
    if c.model != MINILM and c.dataset not in DATASETS:
        raise ConfigError(f"--dataset: {'unknown dataset ' + repr(c.dataset) if c.dataset else 'missing'}"
                          f"; valid: {', '.join(DATASETS)}")
    for flag, value in (("--calibration", c.calibration), ("--batch-size", c.batch_size),
                        ("--heldout", c.heldout)):
        _flag(flag, V.positive_int, value)
    _flag("--seed", V.positive_int, c.seed, minimum=0)
    if c.threads is not None:
        _flag("--threads", V.positive_int, c.threads)


def _load_weights(model: nn.Module, path: str) -> None:
    source = pathlib.Path(path).expanduser()
    if source.is_dir():
        source = source / SUBNETWORK
    if not source.is_file():
        raise ConfigError(f"--weights {path}: no such file (a state dict, or a finished train run "
                          f"directory with {SUBNETWORK})")
    try:
        state = sp.load(source) if source.suffix == ".safetensors" \
            else torch.load(source, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (RuntimeError, ValueError, OSError, KeyError, TypeError) as exc:
        raise ConfigError(f"--weights {path}: {' '.join(str(exc).split())[:300]}") from exc


def _prune(c: OneshotConfig, model: nn.Module, data: list, include,
           progress: bool) -> tuple[nn.Module, Any]:
    target = dict(density=c.density) if c.pattern is None else dict(pattern=c.pattern)
    try:
        with warnings.catch_warnings():  # "stay dense" for the embeddings: the point of include
            warnings.simplefilter("ignore", UserWarning)
            return sp.prune_oneshot(model, c.method, data=data, include=include,
                                    exclude=c.exclude or None, sequential=c.sequential,
                                    group=c.group, blocksize=c.blocksize, percdamp=c.percdamp,
                                    progress=progress, return_report=True, **target)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"--method {c.method}: {exc}") from exc


def _vision(c: OneshotConfig, progress: bool, log) -> tuple[nn.Module, Any, dict, Any]:
    from . import data as D
    from .models import build_model
    from .training import evaluate, load_splits

    splits = load_splits(c, progress=progress)
    torch.manual_seed(c.seed)
    model = build_model(c.model, splits.input_shape, splits.num_classes)
    if c.weights:
        _load_weights(model, c.weights)
    else:
        log("no --weights: pruning the model as initialised (a smoke test, not a result)")
    dense_acc, _ = evaluate(model, splits.test)
    images, seen = [], 0
    for x, _ in D.loader(splits.train, c.batch_size, shuffle=True, seed=c.seed):
        images.append(x[:c.calibration - seen])
        seen += images[-1].shape[0]
        if seen >= c.calibration:
            break
    model, report = _prune(c, model, images, c.include or None, progress)
    finalized = sp.finalize(copy.deepcopy(model))
    test_acc, test_loss = evaluate(finalized, splits.test)
    sparsity = sp.sparsity_report(model, input_shape=splits.input_shape)
    result = {"test_acc": test_acc, "test_loss": test_loss, "dense_test_acc": dense_acc,
              "calibration_samples": seen}
    return finalized, report, result, sparsity


def _minilm(c: OneshotConfig, progress: bool, log) -> tuple[nn.Module, Any, dict, Any]:
    from . import minilm
    from .data import text

    why = minilm.available()
    if why is not None:
        raise ConfigError(f"--model minilm: {why}")
    try:
        sentences = text.sentences()
    except FileNotFoundError as exc:
        raise ConfigError(f"--model minilm: {exc}") from exc
    train, held = text.split(sentences)
    teacher, tokenizer = minilm.load()
    calibration = train[:c.calibration]
    data = list(minilm.batches(tokenizer, calibration, c.batch_size))
    model, report = _prune(c, minilm.student(teacher).eval(), data,
                           c.include or minilm.ENCODER, progress)
    began = time.perf_counter()
    cosine = minilm.teacher_cosine(model, teacher, tokenizer, held[:c.heldout], c.batch_size)
    result = {"teacher_cosine": cosine, "heldout_sentences": len(held[:c.heldout]),
              "calibration_sentences": len(calibration),
              "calibration_tokens": int(sum(int(b["attention_mask"].sum()) for b in data)),
              "eval_seconds": time.perf_counter() - began}
    sparsity = sp.sparsity_report(model)
    return sp.finalize(model), report, result, sparsity


def prepare_directory(directory: pathlib.Path, overwrite: bool) -> None:
    """Create the run directory; refuse to replace a run there unless ``overwrite``."""
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"--out {directory} exists and is not a directory")
    existing = [f for f in FILES if (directory / f).exists()]
    if existing and not overwrite:
        raise ConfigError(f"--out {directory} already holds a run ({existing[0]}); pass "
                          "--overwrite to replace it")
    for f in existing:
        (directory / f).unlink()
    directory.mkdir(parents=True, exist_ok=True)


def run(c: OneshotConfig, out: Optional[pathlib.Path] = None, *, overwrite: bool = False,
        progress: bool = True, log=print) -> dict:
    """Prune, measure, write the run directory; returns final.json's content."""
    from .plots import density_bars

    validate(c)
    if c.threads:
        torch.set_num_threads(c.threads)
    out = pathlib.Path(out or default_out(c))
    began = time.perf_counter()
    if not overwrite:  # fail before the work
        prepare_directory(out, overwrite)
    finalized, report, result, sparsity = (_minilm if c.model == MINILM else _vision)(
        c, progress, log)
    prepare_directory(out, overwrite)
    c.save(out)
    sp.save(finalized, out / SUBNETWORK)
    (out / "oneshot.txt").write_text(str(report) + "\n")
    target = f"density {c.density:g}" if c.pattern is None else c.pattern
    density_bars(sparsity.to_dict(), out / "density.png",
                 f"{c.method} one-shot, {target}, {c.model}\nfinal density per layer")
    final = jsonable({
        "kind": "oneshot", "method": c.method, "target": target, "model": c.model,
        "dataset": c.dataset, "seed": c.seed, **result,
        "sparsity": sparsity.to_dict(), "oneshot": report.to_dict(),
        "prune_wall_seconds": report.seconds, "calibration_seconds": report.calibration_seconds,
        "prune_seconds": report.prune_seconds, "wall_seconds": time.perf_counter() - began,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "sparseprune": sp.__version__, "python": platform.python_version(),
        "files": {"subnetwork": SUBNETWORK, "report": "oneshot.txt", "plots": ["density.png"]},
    })
    write_final(out, final)
    what = (f"teacher cosine {final['teacher_cosine']:.4f}" if "teacher_cosine" in final else
            f"test acc {100 * final['test_acc']:.2f} % (dense {100 * final['dense_test_acc']:.2f} %)")
    log(f"{c.method} one-shot, {target}: {what}, density {sparsity.density:.4f}, pruned in "
        f"{report.seconds:.1f} s -> {out}")
    return final


def is_oneshot_run(directory: pathlib.Path) -> bool:
    path = pathlib.Path(directory) / "config.json"
    try:
        return json.loads(path.read_text()).get("kind") == "oneshot"
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def format_run(directory: pathlib.Path) -> str:
    """The ``sparseprune report DIR`` text of a one-shot run."""
    directory = pathlib.Path(directory)
    final = read_final(directory)
    if final is None:
        return f"run: {directory}\nunfinished one-shot run (no final.json)"
    what = (f"teacher cosine {final['teacher_cosine']:.4f} on {final['heldout_sentences']} "
            "held-out sentences" if "teacher_cosine" in final else
            f"test accuracy {100 * final['test_acc']:.2f} % (dense "
            f"{100 * final['dense_test_acc']:.2f} %)")
    table = (directory / "oneshot.txt").read_text() if (directory / "oneshot.txt").is_file() \
        else ""
    return (f"run: {directory}\n{final['method']} one-shot, {final['target']}, {final['model']}"
            f"{' / ' + final['dataset'] if final.get('dataset') else ''}: {what}; density "
            f"{final['sparsity']['density']:.4f}\n\n{table}")
