#!/usr/bin/env bash
# `make sanitize`: an AddressSanitizer + UBSan build of the extension (CPU only, every ISA) in
# build-sanitize/, separate from the in-place build, then the native-kernel tests under it with
# the ASan runtime preloaded (python itself is not instrumented). Quiet on success (one line),
# the whole log and a non-zero status on failure. Usage: .ci/sanitize.sh PYTHON
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
# The tests run from $OUT/pkg: a relative interpreter path (make passes .venv/bin/python) must be
# made absolute, without resolving the venv's symlink.
case $PY in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac
OUT=build-sanitize
mkdir -p "$OUT"
log="$OUT/sanitize.log"
: >"$log"
began=$(date +%s)

fail() {
  cat "$log"
  echo "SANITIZE FAILED: $1" >&2
  exit 1
}

# 1. The build: objects in $OUT/temp, the module in $OUT/lib (setup.py: SPARSEPRUNE_SANITIZE).
SPARSEPRUNE_SANITIZE=1 SPARSEPRUNE_CUDA=0 MAX_JOBS=${MAX_JOBS:-2} \
  "$PY" setup.py build_ext --build-temp "$OUT/temp" --build-lib "$OUT/lib" >>"$log" 2>&1 \
  || fail "the sanitizer build"
built=$(date +%s)

# 2. A package tree of the sources with the instrumented module, run from $OUT so that its
#    `sparseprune` (not the in-place one) is imported.
rm -rf "$OUT/pkg" && mkdir -p "$OUT/pkg"
cp -r sparseprune "$OUT/pkg/" && find "$OUT/pkg" -name "*.so" -delete
cp "$OUT"/lib/sparseprune/_C*.so "$OUT/pkg/sparseprune/" || fail "no instrumented module"

# 3. The tests: every kernel on every ISA (odd sizes, tails, malformed sparse structures), and
#    the property-based op suite at a small example count.
# python links no libstdc++: preloaded alone, ASan cannot find the real __cxa_throw and the first
# C++ exception (every refused argument) dies in "CHECK failed: real___cxa_throw", so libstdc++ is
# preloaded beside it. Reports go to files as well: pytest's capture swallows a dying process's stderr.
asan=$(gcc -print-file-name=libasan.so)
cxx=$(gcc -print-file-name=libstdc++.so)
[ -f "$asan" ] || fail "no ASan runtime (apt-get install libasan8 / gcc)"
[ -f "$cxx" ] || fail "no libstdc++.so to preload beside ASan"
root=$(pwd)
reports="$root/$OUT/reports"
rm -rf "$reports" && mkdir -p "$reports"
sanitized=(env LD_PRELOAD="$asan $cxx"
  ASAN_OPTIONS="detect_leaks=0:protect_shadow_gap=0:allocator_may_return_null=1:abort_on_error=0:halt_on_error=1:log_path=$reports/asan"
  UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$reports/ubsan")
# Plus the large-layer paths the small sizes never reach (the sampled top-k selection above 2^18
# scores; weight-sized buffers, which come from the usual allocator under ASan, see buffers.cpp)
# and a subset of the N:M kernels on every ISA.
nm=tests/ops/test_nm_mask_kernels.py
tests=${SANITIZE_TESTS:-"tests/ops/test_native_workload.py tests/fuzz/test_ops_properties.py
  tests/ops/test_topk_selection.py tests/ops/test_buffers.py tests/ops/test_nm_sparse_kernels.py
  $nm::test_nm_gumbel_is_bit_identical_on_every_isa $nm::test_nm_masked_linear_matches_reference
  $nm::test_empty_and_non_contiguous_inputs"}
paths=$(for t in $tests; do printf '%s ' "$root/$t"; done)
( cd "$OUT/pkg" && "${sanitized[@]}" "$PY" -c "import os, sparseprune; \
assert sparseprune.__file__.startswith(os.getcwd()), sparseprune.__file__" ) >>"$log" 2>&1 \
  || fail "the instrumented package is not the one imported"
( cd "$OUT/pkg" && \
  "${sanitized[@]}" SPARSEPRUNE_FUZZ_EXAMPLES="${SPARSEPRUNE_FUZZ_EXAMPLES:-15}" \
  "$PY" -m pytest -q -p no:cacheprovider --rootdir="$root" -c "$root/pyproject.toml" $paths ) \
  >>"$log" 2>&1 || { cat "$reports"/* >>"$log" 2>/dev/null; fail "tests under AddressSanitizer/UBSan"; }
if [ -n "$(ls -A "$reports")" ]; then cat "$reports"/* >>"$log"; fail "a sanitizer report"; fi
summary=$(grep -E "[0-9]+ passed" "$log" | tail -n 1)
echo "sanitize: build $((built - began)) s, tests $(( $(date +%s) - built )) s: $summary"
