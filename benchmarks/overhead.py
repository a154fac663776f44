"""What does the mask cost per step? (targets T4, T5, T6 of docs/PERFORMANCE.md)

Per layer: forward + backward of each method's mask work, fused vs the seed papers' code path
(sparseprune.reference) and vs the memory-bandwidth floor. Per training step of Conv2/4/6
(32x32x3, batch 256): what the mask adds over the same network with plain dense layers, Smart
Rescale vs DWR, in seconds per epoch of CIFAR-10 size (50 000 images), the unit of the seed's claim
(SR 0.13 s vs DWR 0.2 s). Two figures: the mask work itself (the fused mask forward + backward of
every prunable layer of the net, timed alone; the GEMMs and convolutions are the same ATen calls
as in the dense net) and the measured whole-step difference, whose noise (a step takes 0.3-2 s
here) is larger than the mask work.

Run alone: ``python benchmarks/overhead.py`` (run.py calls it for `make bench`).
"""

from __future__ import annotations

import json
import sys

import torch

import cases
import common
from sparseprune.runner.models import build_model

LAYERS = {  # name -> weight shape; the Conv2/4/6 shapes are those of 32x32x3 inputs
    "fc 4096x4096": (4096, 4096),
    "Conv2 fc1 256x16384": (256, 16384),
    "Conv4 fc1 256x8192": (256, 8192),
    "conv 256x256x3x3": (256, 256, 3, 3),
    "conv 64x64x3x3": (64, 64, 3, 3),
}
# The seed papers' code exists for these configurations (reference.py).
REFERENCE = ("ASLP", "ASLP+SR", "Supermask", "Supermask+DWR", "Edge-Popup")
STEP_KINDS = ("dense", "ASLP+SR", "Supermask+DWR", "ASLP")  # dense first
EPOCH_IMAGES, STEP_BATCH = 50_000, 256


def per_layer(bytes_per_second: float, repeat: int) -> dict:
    rows = {}
    for layer, shape in LAYERS.items():
        numel = 1
        for d in shape:
            numel *= d
        floor = common.mask_floor_seconds(numel, bytes_per_second)
        for name in cases.MASKS:
            fused = common.median_time(cases.mask_fused(shape, name), repeat=repeat, warmup=1)
            row = {"fused_s": fused, "floor_ratio": fused / floor}
            if name in REFERENCE:
                ref = common.median_time(cases.mask_reference(shape, name), repeat=3, warmup=1)
                row.update(reference_s=ref, speedup=ref / fused)
            rows[f"{layer} | {name}"] = row
    return rows


def topk(repeat: int, bytes_per_second: float) -> dict:
    """T6: the selection alone (topk_threshold, what masked_weight runs before its pass over the
    weight) vs torch.kthvalue, and / the floor of one read of the scores; the fused forward
    (selection + masked weight) beside it."""
    shape = LAYERS["fc 4096x4096"]
    selection = common.median_time(cases.topk_selection(shape), repeat=repeat, warmup=1)
    fused = common.median_time(cases.topk_fused(shape), repeat=repeat, warmup=1)
    kth = common.median_time(cases.topk_kthvalue(shape), repeat=3, warmup=1)
    read_floor = 4 * shape[0] * shape[1] / bytes_per_second
    return {"selection_s": selection, "fused_forward_s": fused, "kthvalue_s": kth,
            "speedup": kth / selection, "read_floor_ratio": selection / read_floor,
            "fused_forward_speedup": kth / fused}


def prunable_shapes(net: str) -> list[tuple[int, ...]]:
    model = build_model(net, (3, 32, 32), 10)
    return [tuple(m.weight.shape) for m in model.modules()
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]


def per_step(repeat: int) -> dict:
    steps_per_epoch = EPOCH_IMAGES / STEP_BATCH
    out = {}
    for net in ("conv2", "conv4", "conv6"):
        shapes = prunable_shapes(net)
        steps = {kind: cases.conv_step(kind, net, STEP_BATCH) for kind in STEP_KINDS}
        times = common.interleaved_medians(steps, rounds=repeat)
        out[net] = {"dense_step_s": times["dense"], "dense_step_spread_s": times["dense_spread"]}
        for kind in STEP_KINDS[1:]:
            mask_s = sum(common.median_time(cases.mask_fused(shape, kind), repeat=repeat, warmup=1)
                         for shape in shapes)
            out[net][kind] = {
                "step_s": times[kind],
                "mask_work_s_per_epoch": mask_s * steps_per_epoch,
                "step_extra_s_per_epoch": (times[kind] - times["dense"]) * steps_per_epoch}
    return out


def run(repeat: int = 5) -> dict:
    bytes_per_second = common.bandwidth()
    return {"bandwidth_GBps": bytes_per_second / 1e9,
            "per_layer": per_layer(bytes_per_second, repeat),
            "topk_4096": topk(repeat, bytes_per_second),
            "per_step": per_step(max(2, repeat // 2))}


def markdown(r: dict, isa: str) -> str:
    lines = [f"Mask work per layer, forward + backward ({isa}, bandwidth "
             f"{r['bandwidth_GBps']:.1f} GB/s):", "",
             "| layer | method | fused (ms) | / floor | paper code (ms) | speed-up |",
             "|---|---|---|---|---|---|"]
    for key, v in r["per_layer"].items():
        layer, name = key.split(" | ")
        ref = f"{v['reference_s'] * 1e3:.1f} | {v['speedup']:.0f}×" if "reference_s" in v else "— | —"
        lines.append(f"| {layer} | {name} | {v['fused_s'] * 1e3:.2f} | {v['floor_ratio']:.2f}× | {ref} |")
    t = r["topk_4096"]
    lines += ["", f"Edge-Popup selection, 4096² at density 0.5 (raw op): the threshold alone "
              f"(`sparseprune::topk_threshold`) {t['selection_s'] * 1e3:.1f} ms "
              f"({t['read_floor_ratio']:.1f}× one read of the scores), the fused forward "
              f"(selection + masked weight) {t['fused_forward_s'] * 1e3:.1f} ms, `torch.kthvalue` "
              f"alone {t['kthvalue_s'] * 1e3:.1f} ms: selection {t['speedup']:.1f}× faster, fused "
              f"forward {t['fused_forward_speedup']:.1f}× faster.", "",
              f"What the mask adds per CIFAR-10-sized epoch (50 000 images of 32x32x3, batch "
              f"{STEP_BATCH}, {EPOCH_IMAGES / STEP_BATCH:.0f} steps), seconds per epoch: the mask "
              f"work (fused mask forward + backward of every prunable layer, timed alone) and, in "
              f"brackets, the measured whole-step difference to the dense net (noisy: the dense "
              f"step's spread over rounds is given):", "",
              "| net | dense step (ms, spread) | ASLP+SR | Supermask+DWR | ASLP (no rescale) |",
              "|---|---|---|---|---|"]
    for net, v in r["per_step"].items():
        cells = [f"{v[k]['mask_work_s_per_epoch']:.2f} s ({v[k]['step_extra_s_per_epoch']:+.1f} s)"
                 for k in STEP_KINDS[1:]]
        lines.append(f"| {net} | {v['dense_step_s'] * 1e3:.0f} (±{v['dense_step_spread_s'] * 5e2:.0f})"
                     f" | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sparseprune as sp
    result = run(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
    print(json.dumps(result, indent=2))
    print(markdown(result, sp.cpu_isa()))
