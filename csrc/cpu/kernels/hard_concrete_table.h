// The hard-concrete kernels of one ISA, a kernel family of its own (see cpu/dispatch.h):
// hard_concrete_kernel.cpp fills one table per ISA; the host picks the active one with
// SP_KERNELS_FOR_ISA(hard_concrete_kernels). Each function processes whole tiles
// [tile_begin, tile_end) single-threaded, regenerating the noise from (seed, offset).
#pragma once
#include <sparseprune/params.h>

namespace sparseprune {
namespace cpu {

struct HardConcreteKernels {
  const char* isa;
  // The gates z into p.z.
  void (*forward)(const HardConcreteParams& p, int64_t tile_begin, int64_t tile_end);
  // dLoss/dlog_alpha into p.grad_log_alpha from p.grad.
  void (*backward)(const HardConcreteParams& p, int64_t tile_begin, int64_t tile_end);
};

const HardConcreteKernels& hard_concrete_kernels_scalar();
const HardConcreteKernels& hard_concrete_kernels_avx2();
const HardConcreteKernels& hard_concrete_kernels_avx512();

}  // namespace cpu
}  // namespace sparseprune
