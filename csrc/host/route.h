// The one place where a pass picks its device and CPU ISA, and the only place in host/ that knows
// whether this build has CUDA kernels. Op files hand it the CPU family's table member and the CUDA
// launcher as SP_CUDA(name); on CPU the ranges are spread over torch's threads.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <atomic>
#include <type_traits>

#include "../cpu/dispatch.h"

// Without CUDA kernels the launchers do not exist: SP_CUDA(name) is then nullptr, which nothing
// calls (on_cuda raises first).
#ifdef SP_WITH_CUDA
#include "../cuda/launch.h"
#define SP_CUDA(name) &::sparseprune::cuda::name
#define SP_BUILT_WITH_CUDA true
#else
#define SP_CUDA(name) nullptr
#define SP_BUILT_WITH_CUDA false
#endif

namespace sparseprune {
namespace host {

inline constexpr bool kWithCuda = SP_BUILT_WITH_CUDA;

// Tiles per thread task: small tensors stay on one thread.
constexpr int64_t kGrainTiles = 8;

// Whether `device` runs the CUDA launchers (else the CPU tables); a CUDA device is an error in a
// build without CUDA kernels.
inline bool on_cuda(const char* op, const at::Device& device) {
  if (!device.is_cuda()) return false;
  TORCH_CHECK(kWithCuda, "sparseprune::", op,
              ": this build has no CUDA kernels; rebuild with SPARSEPRUNE_CUDA=1 (see README)");
  return true;
}

// launcher(args..., device index) for a launcher from SP_CUDA, after on_cuda said true.
template <class Launcher, class... Args>
void launch(Launcher launcher, const at::Device& device, const Args&... args) {
  if constexpr (kWithCuda) launcher(args..., device.index());
}

// One pass over `tiles` units of work: on CUDA launcher(cuda_args..., device index); on CPU
// cpu_pass(active table of Family, tile_begin, tile_end) -> bool over ranges of whole tiles.
// Returns whether a CPU pass returned true (a NaN score seen: CUDA does not look, it would need a
// sync). route() is this over the kTileElems tiles of a numel-element tensor; the N:M passes use
// their own tiles (kNmTileGroups groups).
template <class Family, class CpuPass, class Launcher, class... Args>
bool route_tiles(const char* op, const at::Device& device, int64_t tiles, CpuPass&& cpu_pass,
                 Launcher launcher, const Args&... cuda_args) {
  if (tiles == 0) return false;
  if (on_cuda(op, device)) {
    launch(launcher, device, cuda_args...);
    return false;
  }
  const Family& k = cpu::active<Family>();
  std::atomic<bool> seen{false};
  at::parallel_for(0, tiles, kGrainTiles, [&](int64_t begin, int64_t end) {
    if (cpu_pass(k, begin, end)) seen = true;
  });
  return seen;
}

// route_tiles() over the tiles of a numel-element tensor.
template <class Family, class CpuPass, class Launcher, class... Args>
bool route(const char* op, const at::Device& device, int64_t numel, CpuPass&& cpu_pass,
           Launcher launcher, const Args&... cuda_args) {
  return route_tiles<Family>(op, device, num_tiles(numel), cpu_pass, launcher, cuda_args...);
}

// route() for a family member taking (p, tile_begin, tile_end) and a launcher taking (p, device):
// the common case. Returns whether a NaN score was seen (members returning bool report it).
template <class Family, class P, class R, class Launcher>
bool run_tiles(const char* op, const at::Device& device, const P& p,
               R (*Family::*cpu_fn)(const P&, int64_t, int64_t), Launcher launcher) {
  auto cpu_pass = [&](const Family& k, int64_t begin, int64_t end) {
    if constexpr (std::is_same<R, bool>::value) {
      return (k.*cpu_fn)(p, begin, end);
    } else {
      (k.*cpu_fn)(p, begin, end);
      return false;
    }
  };
  return route<Family>(op, device, p.numel, cpu_pass, launcher, p);
}

}  // namespace host
}  // namespace sparseprune
