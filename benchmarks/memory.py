"""T7: peak memory of one masked-linear training step beyond a dense one.

Each configuration runs in a fresh process, which builds a 4096x4096 layer and its batch, notes its
resident set size (RSS, /proc/self/statm), runs one training step and reads the peak RSS (VmHWM in
/proc/self/status; not getrusage, whose maximum a child inherits from its parent). The step's extra peak, dense vs masked, is reported in units of one
weight-sized float32 tensor. RSS deltas are what the OS sees; glibc returns large freed blocks to
the OS at once, so the peak of live tensors shows up in them.

Run as a script: ``python benchmarks/memory.py`` prints JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

KINDS = ("dense", "fused", "reference")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _child(kind: str, size: int, batch: int) -> dict:
    import torch
    import torch.nn.functional as F

    import sparseprune as sp
    from sparseprune import reference

    torch.manual_seed(0)
    # Load every kernel this step uses on a tiny problem first, so lazy initialisation is not
    # counted as the step's memory.
    tiny = torch.nn.Linear(8, 8)
    layer = torch.nn.Linear(size, size)
    x = torch.randn(batch, size)
    if kind == "dense":
        def step(m, inp):
            m(inp).square().mean().backward()
    elif kind == "fused":
        tiny, layer = sp.convert(tiny, "aslp"), sp.convert(layer, "aslp")

        def step(m, inp):
            m(inp).square().mean().backward()
    else:
        def make(m):
            m.weight.requires_grad_(False)
            m.bias.requires_grad_(False)
            m.scores = torch.nn.Parameter(torch.zeros_like(m.weight))
            return m
        tiny, layer = make(tiny), make(layer)

        def step(m, inp):
            w = reference.gumbel_softmax_weight(m.weight, m.scores)
            F.linear(inp, w, m.bias).square().mean().backward()
    step(tiny, torch.randn(2, 8))
    before = _rss_bytes()
    step(layer, x)
    peak = _peak_rss_bytes()
    return {"kind": kind, "step_peak_bytes": peak - before}


def measure(size: int = 4096, batch: int = 256) -> dict:
    """Extra peak RSS of one step for each kind, and the masked ones beyond dense."""
    here = os.path.abspath(__file__)
    # glibc's default allocator returns freed large blocks to the OS, so RSS follows live memory;
    # a caching configuration (as `make bench` sets for timing) would hide the peak.
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    results = {}
    for kind in KINDS:
        out = subprocess.run([sys.executable, here, "--child", kind, str(size), str(batch)],
                             capture_output=True, text=True, check=True, env=env)
        results[kind] = json.loads(out.stdout)["step_peak_bytes"]
    unit = size * size * 4
    return {
        "weight_bytes": unit,
        "step_peak_bytes": results,
        "beyond_dense_in_weights": {k: (results[k] - results["dense"]) / unit
                                    for k in ("fused", "reference")},
    }


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    else:
        print(json.dumps(measure(), indent=2))
