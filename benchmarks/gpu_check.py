"""`make gpu-check`: the whole GPU check in one command, for whenever a GPU machine is lent
(docs/DESIGN.md 2.9). On a machine with a CUDA device, in this order:

  build      ``python3 setup.py build_ext --inplace`` against the Python and torch already there
             (no venv, no downloads), SPARSEPRUNE_CUDA=1, TORCH_CUDA_ARCH_LIST=9.0 (``--arch``),
             MAX_JOBS = every core; prints the build time.
  tests      pytest over tests/ops/test_cuda*.py: every fused op on CUDA against the CPU kernels
             (bit for bit where csrc/README.md promises it: masks, outputs, every gradient, the
             per-tile partial sums), sparse kernels against dense, a MiniLM-sized ASLP step;
             and format "semi_structured" on CUDA (tests/inference/test_nm_inference.py).
  bench      benchmarks/gpu_bench.py: HBM floor, fused masks on 8192^2 against it and against the
             seed papers' code, a MiniLM-sized training step dense vs masked, 2:4 inference.
  sanitizer  compute-sanitizer memcheck and racecheck (then initcheck, synccheck while time is
             left) over one small run of each kernel (``gpu_bench.py --sanitizer-workload``),
             sparseprune's kernels only; "not supported" where the tool refuses the device (it
             does under gVisor). Last, because its duration is the least predictable.

Without a CUDA device it says so in one line and runs the same stages in CPU mode, so CI keeps
the script and the tests from rotting: no build (``make test`` has built the extension; ``--build``
forces one), the same pytest selection (the CUDA tests skip) plus a dry run of their code with the
"device" on the CPU (SPARSEPRUNE_CUDA_TESTS_ON_CPU=1; every 5th case, ``--dry-run-sample``, the
over-2^24 cases left out), the benchmarks in smoke mode (tiny sizes, no timing claims) and the
sanitizer workload on the CPU.

Time on one H200 machine (16 cores), estimated, none measured there yet: build ~2.5-3 min (on the
2-core dev VM it costs 784 CPU-seconds; its critical path is the ISA-kernel phase, led by
stochastic_kernel.cpp at ~78 CPU-s, then the ninja phase, led by host/*.cpp at ~40 CPU-s and
cuda/stochastic.cu at ~24; cap 330 s), tests ~1 min (cap 200 s, at least 60 s left for the
benchmarks), benchmarks ~40 s (cap 180 s), sanitizer ~30 s per tool (what is left, 120 s per
tool at most).

After every stage it writes ``<out>/gpu_check.json`` and ``<out>/gpu_check.md`` (so a timeout still
leaves the finished stages) and prints the stage's summary; at the end it prints the Markdown.
Logs beside them: build.log, tests.log, bench.log, sanitizer.log (6 files: the device tool brings
back at most 8). Every stage runs in a child process under a deadline (``--budget``, default
450 s, so the whole stays under 8 minutes with the interpreter's start-up). Exit status 0 when
every stage that ran passed.

On the device tool (``run``; timeout_s=540), from the repository root, one line (the extension
builds there; only the working tree travels):

    if command -v make >/dev/null; then make gpu-check GPU_OUT=$OUT; else PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --out $OUT; fi

(``make gpu-check GPU_OUT=$OUT`` alone where make is known to be there.)
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import pathlib
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEST_FILES = ["tests/ops/test_cuda.py", "tests/ops/test_cuda_masks.py", "tests/ops/test_cuda_ops.py",
              "tests/ops/test_cuda_nm.py", "tests/ops/test_cuda_sparse.py",
              "tests/ops/test_cuda_models.py",
              "tests/inference/test_nm_inference.py::test_semi_structured_on_cuda",
              "tests/inference/test_nm_inference.py::test_semi_structured_auto_on_cuda"]
STAGES = ("build", "tests", "bench", "sanitizer")
SANITIZER_TOOLS = ("memcheck", "racecheck", "initcheck", "synccheck")  # the first two required
# GPU mode: each stage's cap (seconds), and what it leaves to each later stage when it runs long
# (priority: tests, then benchmarks; the sanitizer gets what is left).
CAP = {"build": 330, "tests": 200, "bench": 180, "sanitizer": 240}
RESERVE = {"build": 0, "tests": 0, "bench": 60, "sanitizer": 0}


def log(msg: str = "") -> None:
    print(msg, flush=True)


# ---- child processes -----------------------------------------------------------------------------

def run_logged(cmd, *, log_path: pathlib.Path, timeout: float, env=None, echo=False,
               cwd=ROOT, keep=None) -> dict:
    """Runs ``cmd`` (its own process group) with stdout + stderr appended to ``log_path`` (and
    echoed when ``echo``); kills the group at ``timeout`` seconds. Returns rc (None on timeout),
    seconds, the output's last lines and (``keep``: a predicate) up to 400 lines it selects."""
    start = time.perf_counter()
    tail: list[str] = []
    kept: list[str] = []
    with open(log_path, "a", encoding="utf-8", errors="replace") as logf:
        logf.write(f"$ {' '.join(map(str, cmd))}\n")
        logf.flush()
        proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace",
                                start_new_session=True)

        def pump():
            for line in proc.stdout:
                logf.write(line)
                tail.append(line.rstrip("\n"))
                del tail[:-60]
                if keep is not None and len(kept) < 400 and keep(line):
                    kept.append(line.rstrip("\n"))
                if echo:
                    print(line, end="", flush=True)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            rc = proc.wait(timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
        reader.join(timeout=10)
        logf.write(f"[exit {rc} after {time.perf_counter() - start:.1f} s]\n")
    return {"rc": rc, "seconds": time.perf_counter() - start, "tail": tail, "kept": kept}


CPU_MODE = False  # main(): children see no GPU either (--cpu on a GPU machine)


def child_env(extra=None) -> dict:
    env = dict(os.environ)
    if CPU_MODE:
        env["CUDA_VISIBLE_DEVICES"] = ""
    # The interpreter's own bin folder first: ninja (pip's ninja package) lives there.
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("SPARSEPRUNE_CUDA_TESTS_ON_CPU", None)
    env.update(extra or {})
    return env


def quick(cmd, timeout=30) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


# ---- the report ----------------------------------------------------------------------------------

class Report:
    """The JSON document and its Markdown rendering, rewritten after every stage."""

    def __init__(self, out: pathlib.Path, mode: str, machine: dict, start: float):
        self.out, self.start = out, start
        self.data = {"schema": 1, "mode": mode,
                     "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
                         timespec="seconds"),
                     "machine": machine, "stages": {}}

    def stage(self, name: str, result: dict) -> None:
        self.data["stages"][name] = result
        self.data["elapsed_s"] = time.perf_counter() - self.start
        self.write()
        log(f"== {name}: {result.get('status', '?')} ({result.get('seconds', 0):.1f} s) ==")
        for line in stage_markdown(name, result):
            log(line)

    def write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "gpu_check.json").write_text(json.dumps(self.data, indent=2, default=str))
        (self.out / "gpu_check.md").write_text(self.markdown() + "\n")

    def markdown(self) -> str:
        d, m = self.data, self.data["machine"]
        lines = [f"# gpu-check, {d['date']}", "",
                 f"Mode: **{d['mode']}**. Device: {m.get('device', 'none')}. torch "
                 f"{m.get('torch')} (CUDA {m.get('torch_cuda')}), Python {m.get('python')}, "
                 f"nvcc {m.get('nvcc') or 'not found'}, driver {m.get('driver') or '?'}, "
                 f"{m.get('cpus')} CPUs ({m.get('cpu')}). Commit {m.get('commit') or '?'}. "
                 f"Elapsed {d.get('elapsed_s', 0):.0f} s.", ""]
        if d["mode"] != "gpu":
            lines += ["CPU mode (no CUDA device): checks that the script, the tests and the "
                      "benchmark code run; nothing here measures a GPU.", ""]
        for name in STAGES:
            if name in d["stages"]:
                r = d["stages"][name]
                lines += [f"## {name}: {r.get('status')} ({r.get('seconds', 0):.1f} s)", ""]
                lines += stage_markdown(name, r) + [""]
        return "\n".join(lines).rstrip()


def _ms(s) -> str:
    return "—" if s is None else f"{s * 1e3:.3f}"


def stage_markdown(name: str, r: dict) -> list:
    """The summary lines of one stage (printed as it finishes, and in gpu_check.md)."""
    out = []
    if r.get("note"):
        out.append(r["note"])
    if name == "build" and "build_info" in r:
        out.append(f"Extension: {json.dumps(r['build_info'])}")
    if name == "tests":
        for run in r.get("runs", []):
            out.append(f"- {run['label']}: {run.get('passed', 0)} passed, {run.get('failed', 0)} "
                       f"failed, {run.get('errors', 0)} errors, {run.get('skipped', 0)} skipped "
                       f"({run.get('seconds', 0):.1f} s)" + (" — TIMED OUT" if run.get("timeout")
                                                              else ""))
            for f in run.get("failures", [])[:30]:
                out.append(f"  - `{f['test']}`: {f['message']}")
            if len(run.get("failures", [])) > 30:
                out.append(f"  - ... {len(run['failures']) - 30} more (tests.log)")
    if name == "bench":
        out += bench_markdown(r.get("results", {}))
    if name == "sanitizer":
        for tool, t in r.get("tools", {}).items():
            out.append(f"- {tool}: {t['status']}" + (f" ({t['seconds']:.0f} s)" if "seconds" in t
                                                     else ""))
            for line in t.get("errors", [])[:10]:
                out.append(f"  - `{line}`")
    if r.get("status") not in ("passed", "skipped", "not supported") and r.get("tail"):
        tail = r["tail"]
        errors = [line for line in tail if re.search(r"\berror\b", line, re.I)][-15:]
        shown = errors + [line for line in tail[-8:] if line not in errors]
        out += ["```", *(line if len(line) <= 300 else line[:300] + " ..." for line in shown),
                "```"]
    return out


def bench_markdown(res: dict) -> list:
    s = res.get("sections", {})
    out = []
    if res.get("smoke"):
        out.append("Smoke mode: tiny sizes, every code path once; the numbers are not "
                   "measurements.")
    bw = s.get("bandwidth", {})
    if "bytes_per_s" in bw:
        out.append(f"HBM floor: `torch.add` on 3 x {bw['numel']} float32, best of 5: "
                   f"{bw['bytes_per_s'] / 1e9:.0f} GB/s.")
    mask, paper = s.get("mask", {}), s.get("paper", {})
    if "shape" in mask:
        shape = "x".join(map(str, mask["shape"]))
        out += ["", f"Fused mask forward + backward, {shape} float32 (floor: 28 B per weight, "
                "reparam 20 B):", "",
                "| mask | fwd ms | bwd ms | fwd+bwd ms | / floor | seed-paper code ms | "
                "fused speed-up |", "|---|---|---|---|---|---|---|"]
        for name, v in mask.items():
            if not isinstance(v, dict) or "fused_s" not in v:
                continue
            p = paper.get(name, {})
            out.append(f"| {name} | {_ms(v.get('forward_s'))} | {_ms(v.get('backward_s'))} | "
                       f"{_ms(v['fused_s'])} | {v['floor_ratio']:.2f}x | "
                       f"{_ms(p.get('paper_s'))} ({p.get('paper_code', '—')}) | "
                       + (f"{p['speedup']:.1f}x |" if "speedup" in p else "— |"))
    ml = s.get("minilm", {})
    if "batch" in ml:
        out += ["", f"MiniLM-L6-sized BERT training step (random weights; batch {ml['batch']} x "
                f"seq {ml['seq']}, {ml['dtype']}, SGD):", "",
                "| variant | ms / step | vs dense | tokens / s |", "|---|---|---|---|"]
        for name, v in ml.items():
            if not isinstance(v, dict) or name == "config":
                continue
            if "step_s" in v:
                out.append(f"| {name} | {_ms(v['step_s'])} | {v.get('vs_dense', 0):.2f}x | "
                           f"{v['tokens_per_s']:.0f} |")
            else:
                out.append(f"| {name} | {v.get('status', '?')[:160]} | | |")
    elif ml.get("status"):
        out.append(f"MiniLM step: {ml['status']}")
    ss = s.get("semi_structured", {})
    if "cases" in ss:
        out += ["", f"2:4 inference, {ss['dtype']} (cuSPARSELt available: {ss.get('cusparselt')}): "
                "`to_sparse_semi_structured` weight vs dense `F.linear`:", "",
                "| weight, backend | batch | dense us | 2:4 us | speed-up | rel. error |",
                "|---|---|---|---|---|---|"]
        for key, cases in ss["cases"].items():
            if "status" in cases:
                out.append(f"| {key} | — | {cases['status'][:160]} | | | |")
                continue
            for batch, v in cases.items():
                if isinstance(v, dict) and "status" in v:
                    out.append(f"| {key} ({cases['backend']}) | {batch} | {v['status'][:160]} "
                               "| | | |")
                elif isinstance(v, dict):
                    out.append(f"| {key} ({cases['backend']}) | {batch} | "
                               f"{v['dense_s'] * 1e6:.1f} | {v['sparse_s'] * 1e6:.1f} | "
                               f"{v['speedup']:.2f}x | {v['rel_error']:.1e} |")
    for name, v in s.items():
        if isinstance(v, dict) and "error" in v:
            out.append(f"- bench section {name} failed: {v['error'][:300]}")
    return out


# ---- stages --------------------------------------------------------------------------------------

def machine_info(cuda: bool) -> dict:
    import torch
    info = {"python": platform.python_version(), "executable": sys.executable,
            "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "cpus": os.cpu_count(), "cpu": cpu_model(), "platform": platform.platform(),
            "commit": quick(["git", "rev-parse", "--short", "HEAD"]) or None,
            "nvcc": next((line.split("release", 1)[1].strip(" ,")
                          for line in quick(["nvcc", "--version"]).splitlines()
                          if "release" in line), None)}
    if cuda:
        props = torch.cuda.get_device_properties(0)
        info.update(device=props.name, sm_count=props.multi_processor_count,
                    memory_gib=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}",
                    driver=quick(["nvidia-smi", "--query-gpu=driver_version",
                                  "--format=csv,noheader"]) or None)
    return info


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def extension_info(timeout=120) -> dict:
    """What the built extension says about itself, from a fresh interpreter."""
    code = ("import json, sparseprune as sp; print(json.dumps(dict(sp.build_info(), "
            "cpu_isa=sp.cpu_isa(), file=sp.__file__)))")
    try:
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=child_env(),
                             capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": "timed out"}
    if out.returncode != 0:
        return {"error": (out.stderr or out.stdout).strip().splitlines()[-1:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def stage_build(args, out: pathlib.Path, timeout: float, cuda: bool) -> dict:
    if not args.build:
        info = extension_info()
        ok = "error" not in info
        return {"status": "skipped" if ok else "failed", "seconds": 0.0, "build_info": info,
                "note": "Not rebuilt (" + ("--no-build" if cuda else "CPU mode: `make test` "
                                           "builds the extension") + ")."}
    jobs = str(os.cpu_count() or 1)
    env = child_env({"SPARSEPRUNE_CUDA": "1" if cuda else "auto",
                     "TORCH_CUDA_ARCH_LIST": args.arch, "MAX_JOBS": jobs})
    log(f"[build] {sys.executable} setup.py build_ext --inplace (SPARSEPRUNE_CUDA="
        f"{env['SPARSEPRUNE_CUDA']}, TORCH_CUDA_ARCH_LIST={args.arch}, MAX_JOBS={jobs}, "
        f"ninja: {shutil.which('ninja', path=env['PATH']) or 'not found'})")
    r = run_logged([sys.executable, "setup.py", "build_ext", "--inplace"], env=env,
                   log_path=out / "build.log", timeout=timeout)
    result = {"seconds": r["seconds"], "jobs": int(jobs), "arch": args.arch,
              "command": "setup.py build_ext --inplace"}
    if r["rc"] != 0:
        result.update(status="timed out" if r["rc"] is None else "failed", tail=r["tail"])
        return result
    info = extension_info()
    result.update(status="passed" if "error" not in info and (info.get("cuda") or not cuda)
                  else "failed", build_info=info)
    result["note"] = f"Built in {r['seconds']:.0f} s with {jobs} jobs."
    return result


def parse_junit(path: pathlib.Path) -> dict:
    counts = {"tests": 0, "failed": 0, "errors": 0, "skipped": 0, "failures": []}
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return counts
    for suite in root.iter("testsuite"):
        counts["tests"] += int(suite.get("tests", 0))
        counts["failed"] += int(suite.get("failures", 0))
        counts["errors"] += int(suite.get("errors", 0))
        counts["skipped"] += int(suite.get("skipped", 0))
    for case in root.iter("testcase"):
        for kind in ("failure", "error"):
            node = case.find(kind)
            if node is not None:
                message = (node.get("message") or node.text or "").strip().splitlines()
                counts["failures"].append({
                    "test": f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}",
                    "kind": kind, "message": (message[0] if message else "")[:300]})
    counts["passed"] = counts["tests"] - counts["failed"] - counts["errors"] - counts["skipped"]
    return counts


def stage_tests(args, out: pathlib.Path, timeout: float, cuda: bool) -> dict:
    runs = [("CUDA tests" if cuda else "CUDA test selection (the CUDA tests skip)", {}, [])]
    if not cuda and args.dry_run_sample > 0:
        runs.append((f"dry run of the CUDA tests' code, device = CPU, every "
                     f"{args.dry_run_sample}th case",
                     {"SPARSEPRUNE_CUDA_TESTS_ON_CPU": "1",
                      "SPARSEPRUNE_CUDA_TESTS_SAMPLE": str(args.dry_run_sample),
                      "PYTHONPATH": os.pathsep.join(
                          [str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]).rstrip(
                              os.pathsep)},
                     ["-p", "cuda_dry_run", "-k", "not over_2_24"]))
    deadline = time.perf_counter() + timeout
    result = {"runs": [], "seconds": 0.0}
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, extra, select) in enumerate(runs):
            junit = pathlib.Path(tmp) / f"junit{i}.xml"
            cmd = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-o",
                   "addopts=", "-rfE", f"--junitxml={junit}", *select, *TEST_FILES]
            if importlib.util.find_spec("pytest_timeout"):
                cmd[4:4] = ["--timeout", "120"]  # a hung kernel fails its test, not the stage
            log(f"[tests] {label}")
            r = run_logged(cmd, env=child_env(extra), log_path=out / "tests.log",
                           timeout=deadline - time.perf_counter(), echo=args.verbose)
            counts = parse_junit(junit)
            counts.update(label=label, seconds=r["seconds"], rc=r["rc"], timeout=r["rc"] is None)
            result["runs"].append(counts)
            result["seconds"] += r["seconds"]
            # pytest: 0 all passed, 5 nothing collected (never expected here)
            if r["rc"] != 0 or counts["failed"] or counts["errors"] or not counts["tests"]:
                ok = False
                result["tail"] = r["tail"]
    result["status"] = "passed" if ok else "failed"
    return result


def stage_bench(args, out: pathlib.Path, timeout: float, cuda: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "bench.json"
        cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_bench.py"), "--out", path,
               "--device", "cuda" if cuda else "cpu"] + ([] if cuda else ["--smoke"])
        log("[bench] " + ("GPU benchmarks" if cuda else "benchmark code paths, smoke mode"))
        r = run_logged(cmd, env=child_env(), log_path=out / "bench.log", timeout=timeout,
                       echo=True)
        try:
            results = json.loads(path.read_text())
        except (OSError, ValueError):
            results = {}
    failed = [k for k, v in results.get("sections", {}).items() if "error" in v]
    status = ("timed out" if r["rc"] is None else "passed" if r["rc"] == 0 and not failed
              else "failed")
    return {"status": status, "seconds": r["seconds"], "results": results,
            **({"tail": r["tail"]} if status != "passed" else {})}


def sanitizer_path():
    found = shutil.which("compute-sanitizer")
    for candidate in [found, "/usr/local/cuda/bin/compute-sanitizer",
                      "/usr/local/cuda/compute-sanitizer/compute-sanitizer"]:
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def stage_sanitizer(args, out: pathlib.Path, timeout: float, cuda: bool) -> dict:
    workload = [sys.executable, str(ROOT / "benchmarks" / "gpu_bench.py"), "--sanitizer-workload"]
    if not cuda:
        r = run_logged(workload + ["--device", "cpu"], env=child_env(),
                       log_path=out / "sanitizer.log", timeout=timeout)
        ok = r["rc"] == 0 and "workload ok" in r["tail"]
        return {"status": "not supported" if ok else "failed", "seconds": r["seconds"],
                "note": "No CUDA device: compute-sanitizer not run; its workload ran on the CPU "
                        + ("(ok)." if ok else "and FAILED."),
                **({} if ok else {"tail": r["tail"]})}
    tool_path = sanitizer_path()
    if tool_path is None:
        return {"status": "not supported", "seconds": 0.0,
                "note": "compute-sanitizer not found on this machine."}
    deadline = time.perf_counter() + timeout
    result = {"tools": {}, "seconds": 0.0, "path": tool_path}
    # The caching allocator would hide out-of-bounds accesses inside its blocks.
    env = child_env({"PYTORCH_NO_CUDA_MEMORY_CACHING": "1"})
    status = "passed"
    for tool in SANITIZER_TOOLS:
        left = deadline - time.perf_counter()
        if left < 20:
            result["tools"][tool] = {"status": "not run: no time left"}
            if tool in ("memcheck", "racecheck"):
                status = "incomplete"
            continue
        cmd = [tool_path, "--tool", tool, "--kernel-name", "kns=sparseprune",
               "--error-exitcode", "86", "--print-limit", "20", *workload, "--device", "cuda"]
        log(f"[sanitizer] {tool}")
        r = run_logged(cmd, env=env, log_path=out / "sanitizer.log", timeout=min(left, 120),
                       keep=lambda line: line.startswith("========="))
        text = "\n".join(r["tail"] + r["kept"])
        errors = [line.strip("= ").strip() for line in r["kept"]
                  if any(k in line for k in ("Invalid", "Race", "race", "hazard", "Hazard",
                                             "Uninitialized", "Barrier", "ERROR SUMMARY"))]
        if r["rc"] is None:
            t = {"status": "timed out"}
        elif "workload ok" not in text and ("not supported" in text.lower()
                                            or "error 999" in text.lower()):
            t = {"status": "not supported", "errors": r["tail"][-5:]}
        elif r["rc"] == 0 and "workload ok" in text:
            t = {"status": "clean"}
        else:
            t = {"status": "ERRORS" if r["rc"] == 86 else f"failed (exit {r['rc']})",
                 "errors": errors or r["tail"][-10:]}
        t["seconds"] = r["seconds"]
        result["tools"][tool] = t
        result["seconds"] += r["seconds"]
        if t["status"] == "not supported":
            status = "not supported"
            break  # the device is refused: the other tools would be too
        if t["status"] != "clean" and (tool in ("memcheck", "racecheck") or "ERRORS" in t["status"]):
            status = "failed" if status != "incomplete" else status
    result["status"] = status
    return result


# ---- main ----------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "gpu-check-results",
                        help="folder for gpu_check.{json,md} and the logs")
    build = parser.add_mutually_exclusive_group()
    build.add_argument("--no-build", dest="build", action="store_false", default=None,
                       help="use the extension already built (default in CPU mode)")
    build.add_argument("--build", dest="build", action="store_true",
                       help="build even in CPU mode")
    parser.add_argument("--cpu", action="store_true", help="CPU mode even if a GPU is visible")
    parser.add_argument("--arch", default="9.0", help="TORCH_CUDA_ARCH_LIST (default 9.0)")
    parser.add_argument("--budget", type=float, default=450.0,
                        help="seconds for all stages together (default 450)")
    parser.add_argument("--skip", default="", help="comma-separated stages to skip: "
                        + ", ".join(STAGES))
    parser.add_argument("--dry-run-sample", type=int, default=5, metavar="N",
                        help="CPU mode: dry-run every N-th case of each CUDA test (1: all, "
                        "0: no dry run; default 5)")
    parser.add_argument("--verbose", action="store_true", help="echo pytest's output")
    args = parser.parse_args(argv)
    start = time.perf_counter()

    import torch  # not sparseprune: the build may replace its extension first
    cuda = torch.cuda.is_available() and not args.cpu
    global CPU_MODE
    CPU_MODE = not cuda
    if args.build is None:
        args.build = cuda
    if cuda:
        log(f"gpu-check: CUDA device {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
            f"{os.cpu_count()} CPUs, budget {args.budget:.0f} s")
    else:
        log(f"gpu-check: no CUDA device here (torch {torch.__version__}): CPU mode, the same "
            "stages without a GPU (tests skip or dry-run, benchmarks in smoke mode"
            + (", no build)" if not args.build else ")"))
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in ("gpu_check.json", "gpu_check.md", "build.log", "tests.log", "bench.log",
                 "sanitizer.log"):
        (out / name).unlink(missing_ok=True)
    report = Report(out, "gpu" if cuda else "cpu", machine_info(cuda), start)
    report.write()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - set(STAGES)
    if unknown:
        parser.error(f"unknown stage(s) in --skip: {sorted(unknown)}")
    runners = {"build": stage_build, "tests": stage_tests, "bench": stage_bench,
               "sanitizer": stage_sanitizer}
    for i, name in enumerate(STAGES):
        if name in skip:
            report.stage(name, {"status": "skipped", "seconds": 0.0, "note": "--skip"})
            continue
        left = args.budget - (time.perf_counter() - start)
        later = sum(RESERVE[s] for s in STAGES[i + 1:] if s not in skip) if cuda else 0
        timeout = min(CAP[name], left - later) if cuda else left
        if name == "build" and args.build:
            timeout = min(CAP[name], left)  # nothing runs without the extension
        if timeout < 10:
            report.stage(name, {"status": "not run: out of time", "seconds": 0.0})
            continue
        if name in ("tests", "sanitizer") and report.data["stages"].get("build", {}).get(
                "status") in ("failed", "timed out"):
            # The benchmarks still run: the floor, dense steps and 2:4 need no extension.
            report.stage(name, {"status": "not run: no extension", "seconds": 0.0})
            continue
        try:
            result = runners[name](args, out, timeout, cuda)
        except Exception as exc:  # a bug of this script: report it, keep the other stages
            result = {"status": "failed", "seconds": 0.0, "note": f"gpu_check.py: "
                      f"{type(exc).__name__}: {exc}"}
        report.stage(name, result)
    report.data["elapsed_s"] = time.perf_counter() - start
    report.write()
    log("")
    log(report.markdown())
    bad = [n for n, r in report.data["stages"].items()
           if r.get("status") not in ("passed", "skipped", "not supported")]
    log("")
    log(f"gpu-check: {'OK' if not bad else 'FAILED: ' + ', '.join(bad)} in "
        f"{report.data['elapsed_s']:.0f} s; results in {out}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
