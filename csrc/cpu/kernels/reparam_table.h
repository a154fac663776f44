// The reparametrisation kernels of one ISA, a kernel family of its own (see cpu/dispatch.h):
// reparam_kernel.cpp fills one table per ISA; the host picks the active one with
// SP_KERNELS_FOR_ISA(reparam_kernels). Each function processes whole tiles [tile_begin, tile_end)
// single-threaded.
#pragma once
#include <sparseprune/params.h>

namespace sparseprune {
namespace cpu {

struct ReparamKernels {
  const char* isa;
  // w_hat into p.w_hat and, when p.partials is set, the sum of h per tile.
  void (*forward)(const ReparamParams& p, int64_t tile_begin, int64_t tile_end);
  // p.grad_weight when set, and the dLoss/dt terms summed per tile into p.partials when set.
  void (*backward)(const ReparamParams& p, int64_t tile_begin, int64_t tile_end);
};

const ReparamKernels& reparam_kernels_scalar();
const ReparamKernels& reparam_kernels_avx2();
const ReparamKernels& reparam_kernels_avx512();

}  // namespace cpu
}  // namespace sparseprune
