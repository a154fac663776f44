"""`make gpu-check` in CPU mode (benchmarks/gpu_check.py): without a GPU every stage still runs and
passes, and the JSON and Markdown summaries are written and printed, so CI keeps the script, the
CUDA tests' code (their dry run) and the GPU benchmark code from rotting. The check itself runs
on a GPU machine (README, GPU)."""

import json
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_gpu_check_cpu_mode(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--cpu",
                           "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert proc.stdout.startswith("gpu-check: no CUDA device here")
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert data["mode"] == "cpu" and list(data["stages"]) == ["build", "tests", "bench",
                                                              "sanitizer"]
    stages = data["stages"]
    assert stages["build"]["status"] == "skipped"  # make test has built it; no rebuild in CI
    assert stages["build"]["build_info"]["torch_version"]
    plain, dry = stages["tests"]["runs"]
    assert plain["failed"] == plain["errors"] == 0 and plain["skipped"] > 500 and plain["passed"]
    assert dry["failed"] == dry["errors"] == 0 and dry["passed"] > 100
    bench = stages["bench"]
    assert bench["status"] == "passed" and bench["results"]["smoke"]
    sections = bench["results"]["sections"]
    assert set(sections) == {"bandwidth", "mask", "paper", "minilm", "semi_structured"}
    assert not [name for name, s in sections.items() if "error" in s]
    assert {"ASLP", "ASLP+SR", "Supermask+DWR", "Edge-Popup", "reparam"} <= set(sections["mask"])
    assert stages["sanitizer"]["status"] == "not supported"  # no device; its workload ran
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert "## tests: passed" in markdown and "| ASLP+SR |" in markdown
    assert markdown.strip() in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bench.log", "gpu_check.json", "gpu_check.md", "sanitizer.log", "tests.log"]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_target_uses_plain_python3():
    out = subprocess.run(["make", "-n", "gpu-check", "GPU_OUT=/tmp/x"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert "python3 benchmarks/gpu_check.py --out /tmp/x" in out and ".venv" not in out


def _load_gpu_check():
    import importlib.util
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_shaped_results_render(tmp_path):
    """The summary of a GPU run (which CI never produces) renders: every table, failures, the
    sanitizer's findings, a pending 2:4 row, a refused 2:4 shape."""
    gc = _load_gpu_check()
    fused = {"forward_s": 1e-4, "backward_s": 2e-4, "fused_s": 3e-4, "floor_s": 2e-4,
             "floor_ratio": 1.5}
    bench = {"smoke": False, "sections": {
        "bandwidth": {"numel": 2**26, "best_s": 2e-4, "bytes_per_s": 4.0e12},
        "mask": {"shape": [8192, 8192], "ASLP": fused, "reparam": {**fused, "forward_s": None}},
        "paper": {"shape": [8192, 8192], "ASLP": {"paper_code": "gumbel_softmax_weight",
                                                  "paper_s": 3e-3, "fused_s": 3e-4,
                                                  "speedup": 10.0}},
        "minilm": {"config": {}, "batch": 32, "seq": 256, "dtype": "float32",
                   "dense": {"step_s": 0.02, "tokens_per_s": 4e5, "vs_dense": 1.0},
                   "aslp 2:4 (fused)": {"status": "pending: ValueError: unknown option"}},
        "semi_structured": {"dtype": "float16", "cusparselt": True, "cases": {
            "4096x4096 default": {"backend": "SparseSemiStructuredTensorCUSPARSELT",
                                  "batch 1": {"status": "failed: RuntimeError: shape"},
                                  "batch 32": {"dense_s": 2e-5, "sparse_s": 1e-5,
                                               "speedup": 2.0, "rel_error": 1e-3}},
            "4096x4096 cutlass": {"status": "failed: RuntimeError: no kernel"}}},
        "broken": {"error": "RuntimeError: CUDA error: an illegal memory access"}}}
    report = gc.Report(tmp_path, "gpu", {"device": "NVIDIA H200", "torch": "2.11.0"}, 0.0)
    report.stage("build", {"status": "passed", "seconds": 150.0, "build_info": {"cuda": True}})
    report.stage("tests", {"status": "failed", "seconds": 80.0, "tail": ["E  boom"], "runs": [
        {"label": "CUDA tests", "passed": 700, "failed": 1, "errors": 0, "skipped": 0,
         "seconds": 79.0, "failures": [{"test": "test_cuda_masks::test_x[aslp]",
                                        "message": "grad scale: CPU and CUDA differ"}]}]})
    report.stage("bench", {"status": "failed", "seconds": 90.0, "results": bench})
    report.stage("sanitizer", {"status": "failed", "seconds": 60.0, "tools": {
        "memcheck": {"status": "ERRORS", "seconds": 30.0,
                     "errors": ["Invalid __global__ read of size 4 bytes"]},
        "racecheck": {"status": "clean", "seconds": 30.0},
        "initcheck": {"status": "not run: no time left"}}})
    md = (tmp_path / "gpu_check.md").read_text()
    for text in ("| ASLP | 0.100 | 0.200 | 0.300 | 1.50x | 3.000 (gumbel_softmax_weight) | 10.0x |",
                 "| dense | 20.000 | 1.00x | 400000 |", "pending: ValueError",
                 "| batch 32 | 20.0 | 10.0 | 2.00x | 1.0e-03 |", "failed: RuntimeError: shape",
                 "failed: RuntimeError: no kernel", "bench section broken failed",
                 "grad scale: CPU and CUDA differ", "memcheck: ERRORS",
                 "Invalid __global__ read", "initcheck: not run", "HBM floor"):
        assert text in md, text
    assert json.loads((tmp_path / "gpu_check.json").read_text())["stages"]["tests"]["runs"]
