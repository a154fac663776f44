"""The end of a run: select the epoch, bake the final deterministic subnetwork with
:func:`sparseprune.finalize`, measure it on the test split, count its density in weights and FLOPs
(:func:`sparseprune.sparsity_report`, the one place that counts), write ``final.json``, the
subnetwork and the plots."""

from __future__ import annotations

import copy
import math
import pathlib
import platform
import time
import torch

import sparseprune as sp

from . import checkpoint as ckpt
from . import methods, plots
from .metrics import converged_epoch, describe, jsonable, step_stats, write_final
from .training import Log, Session, echo, evaluate

SUBNETWORK = "subnetwork.safetensors"


def finish(s: Session, *, log: Log = echo) -> dict:
    """Evaluate the final subnetwork and write every result file; returns final.json's content."""
    c, st, d = s.config, s.state, s.directory
    began = time.perf_counter()
    has_val = len(s.splits.val) > 0
    selected = st.epoch
    if c.select == "best" and has_val and ckpt.load_best(d, s.model):
        selected = st.best_epoch
    density = methods.imposed_density(c)
    masks = sp.final_masks(s.model, density=density, scope=c.density_scope)
    report = sp.sparsity_report(s.model, masks, input_shape=s.splits.input_shape)
    masked_acc, _ = evaluate(s.model, s.splits.test)
    subnetwork = sp.finalize(copy.deepcopy(s.model), density=density, scope=c.density_scope)
    test_acc, test_loss = evaluate(subnetwork, s.splits.test)
    sp.save(subnetwork, d / SUBNETWORK)  # safetensors, no pickle: sp.load(path) or sp.load(path, model)

    layers = sp.masked_layers(s.model)
    title = f"{describe(c)}, {c.model} on {c.dataset}"
    if st.history:
        plots.curves(st.history, d / "curves.png", title, selected)
    plots.density_bars(report.to_dict(), d / "density.png",
                       f"{title}\nfinal density per layer")
    if layers:
        plots.score_histogram([layer.method.ranking_scores(layer) for _, layer in layers],
                              [masks[name] for name, _ in layers], d / "scores.png",
                              f"{title}\nfinal scores", xlabel=layers[0][1].method.score_label)
    st.wall_seconds += time.perf_counter() - began
    final = {
        "method": c.method, "label": describe(c), "options": c.options, "model": c.model,
        "dataset": c.dataset, "seed": c.seed,
        "epochs_run": st.epoch, "epochs_configured": methods.total_epochs(c), "selected_epoch": selected,
        "stop_reason": st.stop_reason,
        "test_acc": test_acc, "test_loss": test_loss,
        "masked_model_test_acc": masked_acc,  # eval mode before finalize: should equal test_acc
        "best_val_acc": st.best_val if has_val and math.isfinite(st.best_val) else None,
        "converged_epoch": converged_epoch(st.history),
        "imposed_density": density,
        "sparsity": report.to_dict(),
        "wall_seconds": st.wall_seconds,
        "train_seconds": sum(h["epoch_seconds"] for h in st.history),
        "steps": len(st.step_seconds),
        **step_stats(st.step_seconds),
        "batch_size": c.batch_size,
        "threads": torch.get_num_threads(), "cpu_isa": sp.cpu_isa() if sp.ops._ext.available() else None,
        "torch": torch.__version__, "sparseprune": sp.__version__, "python": platform.python_version(),
        "files": {"subnetwork": SUBNETWORK, "checkpoint": ckpt.CHECKPOINT, "metrics": "metrics.csv",
                  "plots": [p for p in ("curves.png", "density.png", "scores.png")
                            if (d / p).is_file()]},
    }
    final = jsonable(final)
    write_final(d, final)
    log(f"final subnetwork (epoch {selected}): test acc {100 * test_acc:.2f} %, density "
        f"{report.density:.4f} of weights, {report.flop_density:.4f} of FLOPs -> {d}")
    return final
