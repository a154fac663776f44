# sparseprune: `make demo`, `make test` (import contracts, then pytest), `make bench`. Each creates
# missing, installs torch ($(TORCH_SPEC)) and the package with its test extras, builds the
# extension when its sources changed, and runs. `make gpu-check` needs no venv (see below).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
TORCH_SPEC ?= torch==2.14.1
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
SOURCES := $(shell find csrc -type f) setup.py pyproject.toml

.PHONY: build test sanitize demo bench bench-sparse repro gpu-check clean

$(VENV)/.deps:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet "$(TORCH_SPEC)" setuptools wheel ninja
	touch $@

# An editable install: the compiled sparseprune/_C*.so sits beside the Python sources.
$(VENV)/.built: $(VENV)/.deps $(SOURCES)
	$(PIP) install --quiet --no-build-isolation -e '.[test]'
	touch $@

build: $(VENV)/.built

# The import contracts (pyproject.toml, [tool.importlinter]) first: a layering break fails fast.
test: build
	$(VENV)/bin/lint-imports --no-cache --no-logo
	$(PY) -m pytest -q

# AddressSanitizer + UBSan (issue 20): a separate CPU-only instrumented build in build-sanitize/
# and the native-kernel tests under it (.ci/sanitize.sh; about 10 minutes on 2 cores, most of it
# the build). Quiet on success, the whole log on failure. .ci/run runs it after `make test`.
sanitize: build
	bash .ci/sanitize.sh $(PY)

demo: build
	$(PY) -m sparseprune.runner.demo

# Timings keep freed memory for reuse (as jemalloc/tcmalloc would); see README, Performance.
BENCH_ALLOCATOR ?= glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184

bench: build
	GLIBC_TUNABLES=$(BENCH_ALLOCATOR) $(PY) benchmarks/run.py

# Sparse inference: dense vs sparse per layer and per model (T8-T10), results in benchmarks/results.
# `make bench-sparse SPARSE_BENCH_ARGS=--smoke`: a few seconds, checks every path, writes nothing.
SPARSE_BENCH_ARGS ?=
bench-sparse: build
	GLIBC_TUNABLES=$(BENCH_ALLOCATOR) $(PY) benchmarks/sparse_bench.py $(SPARSE_BENCH_ARGS)

# The reproduction table: trains the runs of docs/reproduce.sh (about 45 min on 2 idle cores) and
# writes docs/results.md.
repro: build
	PY=$(PY) bash docs/reproduce.sh

# The GPU check (benchmarks/gpu_check.py; README, GPU): with a CUDA device it builds the extension in
# place against the Python and torch already installed there (no venv, no downloads), runs the
# CPU-vs-CUDA tests, the GPU benchmarks and compute-sanitizer, and writes $(GPU_OUT)/gpu_check.{json,md}
# in under 8 minutes on one H200. Without one: CPU mode (no build, tests skip or dry-run, smoke
# benchmarks). Deliberately not depending on `build`: a GPU machine has no .venv.
GPU_PY ?= python3
GPU_OUT ?= gpu-check-results
GPU_CHECK_ARGS ?=
gpu-check:
	PYTHONUNBUFFERED=1 $(GPU_PY) benchmarks/gpu_check.py --out $(GPU_OUT) $(GPU_CHECK_ARGS)

clean:
	rm -rf build build-sanitize sparseprune/_C*.so *.egg-info $(VENV) gpu-check-results
