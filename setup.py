"""Build of sparseprune._C: host code once, CPU kernels once per ISA, CUDA kernels when available.

Environment knobs:
  SPARSEPRUNE_CUDA=auto|0|1   auto (default): build CUDA kernels when torch has CUDA and nvcc exists.
  TORCH_CUDA_ARCH_LIST        CUDA targets, default "8.0;9.0".
  MAX_JOBS                    parallel compile jobs (ninja and the per-ISA kernel objects).
  SPARSEPRUNE_SANITIZE=1      AddressSanitizer + UBSan build (host and kernels, -O1, CPU only):
                              `make sanitize` builds it into build-sanitize/ and runs the native
                              kernel tests under it (.ci/sanitize.sh).
"""

import glob
import os
import platform
import shutil
from concurrent.futures import ThreadPoolExecutor

from setuptools import setup


def _default_cuda_home() -> None:
    # torch guesses CUDA_HOME from `which nvcc`; when nvcc is a wrapper script (here
    # /usr/local/bin/nvcc) that guess has no CUDA headers, so prefer a toolkit that has them.
    if "CUDA_HOME" in os.environ or "CUDA_PATH" in os.environ:
        return
    for home in ("/usr/local/cuda",):
        if os.path.exists(os.path.join(home, "include", "cuda_runtime.h")):
            os.environ["CUDA_HOME"] = home
            return


_default_cuda_home()

import torch  # noqa: E402  (after CUDA_HOME is settled: cpp_extension reads it at import)
from torch.utils import cpp_extension  # noqa: E402

ROOT = os.path.dirname(os.path.abspath(__file__))
INCLUDE = os.path.join(ROOT, "csrc", "include")

# Kernel sources compiled once per ISA: (name, SP_CPU_ISA_ID, flags). Never the build host's
# native flags:
# each object carries only its own ISA, and csrc/cpu/dispatch.cpp picks one from cpuid at run time.
X86_ISAS = [
    ("scalar", 0, []),
    ("avx2", 1, ["-mavx2", "-mfma", "-mf16c"]),
    ("avx512", 2, ["-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vl",
                   "-mavx512dq"]),
]
IS_X86 = platform.machine().lower() in ("x86_64", "amd64")
ISAS = X86_ISAS if IS_X86 else X86_ISAS[:1]
# -ffp-contract=off keeps every ISA (and CUDA, with --fmad=false) computing the same bits.
KERNEL_FLAGS = ["-O3", "-std=c++20", "-fPIC", "-ffp-contract=off", "-fno-math-errno",
                "-Wall", "-Wextra", "-Wno-unused-parameter",
                # GCC 12 flags its own avx512fintrin.h "undefined" idiom as uninitialised.
                "-Wno-maybe-uninitialized", "-Wno-uninitialized"]


# -fno-sanitize=vptr: libtorch is not built with UBSan, its classes carry no type info for it.
SANITIZE = os.environ.get("SPARSEPRUNE_SANITIZE", "0") == "1"
SANITIZE_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize=vptr",
                  "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer", "-g", "-O1"]
if SANITIZE:
    KERNEL_FLAGS = [f for f in KERNEL_FLAGS if f != "-O3"] + SANITIZE_FLAGS


def want_cuda() -> bool:
    mode = os.environ.get("SPARSEPRUNE_CUDA", "auto").lower()
    if mode not in ("auto", "0", "1"):
        raise SystemExit(f"SPARSEPRUNE_CUDA must be auto, 0 or 1, got {mode!r}")
    if SANITIZE:
        return False  # the sanitizer build is CPU-only
    available = torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
    if mode == "1" and not available:
        raise SystemExit("SPARSEPRUNE_CUDA=1 but torch has no CUDA or nvcc was not found "
                         f"(torch.version.cuda={torch.version.cuda}, CUDA_HOME={cpp_extension.CUDA_HOME})")
    return available and mode != "0"


def openmp_flags() -> list:
    # Match torch's parallel backend, or at::parallel_for silently runs on one thread.
    return ["-fopenmp"] if "OpenMP" in torch.__config__.parallel_info() else []


def up_to_date(target: str, sources: list) -> bool:
    return os.path.exists(target) and all(
        os.path.getmtime(target) >= os.path.getmtime(src) for src in sources)


class BuildExt(cpp_extension.BuildExtension):
    """Compiles csrc/cpu/kernels once per ISA, then builds the extension with those objects."""

    def build_extensions(self):
        sources = sorted(glob.glob(os.path.join("csrc", "cpu", "kernels", "*.cpp")))
        headers = glob.glob(os.path.join("csrc", "**", "*.h"), recursive=True)
        compiler = self.compiler

        def compile_one(job):
            (name, isa_id, flags), source = job
            output_dir = os.path.join(self.build_temp, "isa_" + name)
            # distutils recompiles every time (and BuildExtension sets `force` for ninja's sake):
            # an object newer than its source, every header and this file is kept, as ninja keeps
            # the host and CUDA objects. `rm -rf build` rebuilds all.
            obj = compiler.object_filenames([source], output_dir=output_dir)[0]
            if up_to_date(obj, [source, *headers, __file__]):
                return [obj]
            return compiler.compile(
                [source], output_dir=output_dir,
                macros=[("SP_CPU_ISA_ID", str(isa_id)), ("SP_ISA_NS", "isa_" + name)],
                include_dirs=[INCLUDE], extra_postargs=KERNEL_FLAGS + flags, depends=headers)

        jobs = [(isa, src) for isa in ISAS for src in sources]
        workers = int(os.environ.get("MAX_JOBS", os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            objects = [obj for objs in pool.map(compile_one, jobs) for obj in objs]
        for ext in self.extensions:
            ext.extra_objects = objects
        super().build_extensions()


def extension():
    cuda = want_cuda()
    build_macros = [("SP_TORCH_VERSION", f'"{torch.__version__}"')]
    build_macros += [("SP_BUILD_" + name.upper(), None) for name, _, _ in ISAS[1:]]
    sources = [os.path.join("csrc", "ops.cpp"), os.path.join("csrc", "cpu", "dispatch.cpp")]
    sources += sorted(glob.glob(os.path.join("csrc", "host", "*.cpp")))
    cxx = ["-O3", "-std=c++20", "-ffp-contract=off"] + openmp_flags()
    if SANITIZE:
        cxx = [f for f in cxx if f != "-O3"] + SANITIZE_FLAGS
    if not cuda:
        return cpp_extension.CppExtension(
            "sparseprune._C", sources, include_dirs=[INCLUDE], define_macros=build_macros,
            extra_compile_args={"cxx": cxx},
            extra_link_args=openmp_flags() + (SANITIZE_FLAGS if SANITIZE else []))
    archs = os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    build_macros += [("SP_WITH_CUDA", None), ("SP_CUDA_VERSION", f'"{torch.version.cuda}"'),
                     ("SP_CUDA_ARCHS", f'"{archs}"')]
    sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
    # --fmad=false: no contraction, so device noise matches the CPU bit for bit (docs/DESIGN.md 2.1).
    nvcc = ["-O3", "-std=c++20", "--fmad=false", "-lineinfo"]
    return cpp_extension.CUDAExtension(
        "sparseprune._C", sources, include_dirs=[INCLUDE], define_macros=build_macros,
        extra_compile_args={"cxx": cxx, "nvcc": nvcc}, extra_link_args=openmp_flags())


if not shutil.which("ninja"):
    print("sparseprune: ninja not found, compiling without it (slower)")

setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExt.with_options(use_ninja=bool(shutil.which("ninja")))},
)
