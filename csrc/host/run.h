// Runs one kernel pass over all tiles of a tensor on its device: CPU (tiles spread over torch's
// threads) or CUDA (the launchers of csrc/cuda/launch.h). Shared by host/mask.cpp and topk.cpp.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <atomic>
#include <type_traits>

#include "../cpu/dispatch.h"
#ifdef SP_WITH_CUDA
#include "../cuda/launch.h"
#endif

namespace sparseprune {
namespace host {

// Tiles per thread task: small tensors stay on one thread.
constexpr int64_t kGrainTiles = 8;

[[noreturn]] inline void no_cuda(const char* op) {
  TORCH_CHECK(false, "sparseprune::", op,
              ": this build has no CUDA kernels; rebuild with SPARSEPRUNE_CUDA=1 (see README)");
}

// cpu_pass(table, tile_begin, tile_end) -> bool (true: a NaN score was seen) on CPU; on CUDA
// cuda_pass() (no NaN detection there: it would need a host sync). Returns whether NaN was seen.
template <class CpuPass, class CudaPass>
bool run_pass(const char* op, const at::Device& device, int64_t numel, CpuPass&& cpu_pass,
              CudaPass&& cuda_pass) {
  if (numel == 0) return false;
  if (device.is_cuda()) {
#ifdef SP_WITH_CUDA
    cuda_pass();
    return false;
#else
    no_cuda(op);
#endif
  }
  const cpu::KernelTable& k = cpu::kernels();
  std::atomic<bool> nan_seen{false};
  at::parallel_for(0, num_tiles(numel), kGrainTiles, [&](int64_t begin, int64_t end) {
    if (cpu_pass(k, begin, end)) nan_seen = true;
  });
  return nan_seen;
}

#ifdef SP_WITH_CUDA
#define SP_CUDA_FN(name) &::sparseprune::cuda::name
#else
#define SP_CUDA_FN(name) nullptr
#endif

// One kernel pass over the whole tensor of p: the CPU table entry `cpu_fn` over all tiles, or the
// CUDA launcher `cuda_fn` (SP_CUDA_FN(name)). Returns whether a NaN score was seen (CPU passes
// that report it).
template <class P, class R>
bool run_tiles(const char* op, const at::Device& device, const P& p,
               R (*cpu::KernelTable::*cpu_fn)(const P&, int64_t, int64_t),
               std::type_identity_t<void (*)(const P&, int)> cuda_fn) {
  return run_pass(
      op, device, p.numel,
      [&](const cpu::KernelTable& k, int64_t begin, int64_t end) {
        if constexpr (std::is_same<R, bool>::value) {
          return (k.*cpu_fn)(p, begin, end);
        } else {
          (k.*cpu_fn)(p, begin, end);
          return false;
        }
      },
      [&] { cuda_fn(p, device.index()); });
}

inline void check_no_nan(const char* op, bool nan_seen) {
  TORCH_CHECK_VALUE(!nan_seen, "sparseprune::", op,
                    ": scores contain NaN; a NaN score has no mask (check the learning rate or "
                    "the optimizer state)");
}

}  // namespace host
}  // namespace sparseprune
