// CUDA ASLP mask kernels: forward (scores, weight -> masked weight) and backward (grad of the
// masked weight -> grad scores, grad weight, optionally the masked weight over the gradient buffer,
// and Smart Rescale's dLoss/dscale). As on the CPU (csrc/cpu/kernels/aslp_kernel.cpp) the noise is
// regenerated from (seed, offset) in both passes, and all element math comes from the shared
// headers, so noise and masks are bit-identical to the CPU's.
#include <c10/cuda/CUDAException.h>
#include <c10/util/Exception.h>

#include <type_traits>

#include <sparseprune/philox.h>
#include <sparseprune/ste.h>

#include "common.cuh"
#include "launch.h"

namespace sparseprune {
namespace device {
namespace {

// Weight math in double for float64 weights, else in float (the CPU's WeightLane rule).
template <class WT>
using WeightMath = std::conditional_t<std::is_same<WT, double>::value, double, float>;

// Whether every pointer the kernels touch allows one vector access per Philox block.
template <class ST, class WT>
bool packs_aligned(const AslpParams& p) {
  return pack_aligned<ST>(p.scores) && pack_aligned<WT>(p.weight) && pack_aligned<WT>(p.masked) &&
         pack_aligned<WT>(p.grad) && pack_aligned<ST>(p.grad_scores) &&
         pack_aligned<WT>(p.grad_weight);
}

template <class T>
__device__ __forceinline__ const T* in(const void* p, int64_t e) {
  return static_cast<const T*>(p) + e;
}
template <class T>
__device__ __forceinline__ T* out(void* p, int64_t e) {
  return static_cast<T*>(p) + e;
}

// Forward, one thread per Philox block (elements 4b .. 4b + 3). NaN scores are never kept; the
// NaN check that raises an error is CPU-only (here it would need a host sync).
template <class ST, class WT, bool kVec>
__global__ void __launch_bounds__(kThreads) aslp_forward_kernel(AslpParams p) {
  using W = WeightMath<WT>;
  const PhiloxKey<uint32_t> key(p.seed);
  const W scale(p.scale ? *p.scale : 1.0f);
  SP_FOR_EACH_PHILOX_BLOCK(b, (p.numel + 3) / 4) {
    const int64_t e = 4 * b;
    const int n = pack_size(p.numel, e);
    uint32_t bits[4];
    philox_block(key, p.offset, static_cast<uint64_t>(b), bits);
    const Pack4<ST> s = load_pack<kVec>(in<ST>(p.scores, e), n);
    const Pack4<WT> w = load_pack<kVec>(in<WT>(p.weight, e), n);
    Pack4<WT> masked;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const bool keep = aslp_keep_from_uniform(load_float(&s.v[i]), uniform_open<float>(bits[i]));
      store_lane(&masked.v[i], masked_weight(keep, W(load_lane(&w.v[i])), scale));
    }
    store_pack<kVec>(out<WT>(p.masked, e), masked, n);
  }
}

// Backward. One block per tile of kTileElems elements (grid-stride over tiles); each thread takes
// the tile's Philox blocks threadIdx.x, threadIdx.x + kThreads, ... so every access is coalesced.
//
// The scale partial of a tile is summed exactly as the CPU kernels sum it (TileSums and tree_total
// in csrc/cpu/kernels/vec.h), so partials match the CPU bit for bit: the tile's terms go to shared
// memory; lane j (0..15) of warp 0 adds terms j, j + 16, j + 32, ... in order from +0; then the 16
// lane sums meet in the fixed tree (j += j + 8, j += j + 4, ...). Nothing depends on scheduling.
// The 256-add chain costs ~1-2k cycles per tile, hidden behind the other resident blocks' loads.
template <class ST, class WT, bool kVec>
__global__ void __launch_bounds__(kThreads) aslp_backward_kernel(AslpParams p) {
  using W = WeightMath<WT>;
  constexpr int kLanes = 16;
  extern __shared__ __align__(16) unsigned char smem[];  // kTileElems W when scale_partials is set
  Pack4<W>* terms = reinterpret_cast<Pack4<W>*>(smem);
  const PhiloxKey<uint32_t> key(p.seed);
  const W scale(p.scale ? *p.scale : 1.0f);
  const float inv_tau = p.inv_temperature;
  const int64_t tiles = num_tiles(p.numel);
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
#pragma unroll 1
    for (int k = threadIdx.x; k < kTileElems / 4; k += kThreads) {
      const int64_t e = t * kTileElems + 4 * k;
      Pack4<W> term{};  // +0 past the end: adding +0 leaves a lane sum (never -0) unchanged
      if (e < p.numel) {
        const int n = pack_size(p.numel, e);
        uint32_t bits[4];
        philox_block(key, p.offset, static_cast<uint64_t>(e / 4), bits);
        const Pack4<ST> s = load_pack<kVec>(in<ST>(p.scores, e), n);
        const Pack4<WT> w = load_pack<kVec>(in<WT>(p.weight, e), n);
        // g is read here, before `masked` (which may alias it) is written below.
        const Pack4<WT> g = load_pack<kVec>(in<WT>(p.grad, e), n);
        Pack4<ST> grad_scores;
        Pack4<WT> grad_weight, masked;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const float sv = load_float(&s.v[i]);
          const float noise = logistic_noise(uniform_open<float>(bits[i]));
          const W wv = load_lane(&w.v[i]);
          float gs;
          W gw, scale_term;
          aslp_backward(W(load_lane(&g.v[i])), wv, sv, noise, scale, inv_tau, gs, gw, scale_term);
          store_lane(&grad_scores.v[i], gs);
          store_lane(&grad_weight.v[i], gw);
          store_lane(&masked.v[i], masked_weight(aslp_keep(sv, noise), wv, scale));
          if (i < n) term.v[i] = scale_term;
        }
        if (p.grad_scores) store_pack<kVec>(out<ST>(p.grad_scores, e), grad_scores, n);
        if (p.grad_weight) store_pack<kVec>(out<WT>(p.grad_weight, e), grad_weight, n);
        if (p.masked) store_pack<kVec>(out<WT>(p.masked, e), masked, n);
      }
      if (p.scale_partials) terms[k] = term;
    }
    if (p.scale_partials) {  // the same for the whole block, so the barriers are safe
      __syncthreads();
      if (threadIdx.x < kLanes) {
        const W* flat = reinterpret_cast<const W*>(smem);
        W acc = W(0.0f);
        for (int r = 0; r < kTileElems / kLanes; ++r) acc = acc + flat[r * kLanes + threadIdx.x];
        // Lanes >= w also add (a value of their own segment of 16), but their sums are never read.
        for (int w = kLanes / 2; w >= 1; w /= 2)
          acc = acc + __shfl_down_sync(0xFFFFu, acc, w, kLanes);
        if (threadIdx.x == 0) p.scale_partials[t] = static_cast<double>(acc);
      }
      __syncthreads();  // the next tile overwrites `terms`
    }
  }
}

// Sums the per-tile partials into *out in a fixed order: thread j adds partials j, j + 256, ...
// in order, then a fixed shared-memory tree. One block; no atomics, so every run agrees.
constexpr int kReduceThreads = 256;

__global__ void __launch_bounds__(kReduceThreads)
    sum_partials_kernel(const double* partials, int64_t n, float* out) {
  __shared__ double sums[kReduceThreads];
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kReduceThreads) acc += partials[i];
  sums[threadIdx.x] = acc;
  __syncthreads();
  for (int w = kReduceThreads / 2; w >= 1; w /= 2) {
    if (threadIdx.x < w) sums[threadIdx.x] += sums[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) *out = static_cast<float>(sums[0]);
}

void launch_forward(const AslpParams& p, cudaStream_t stream) {
  visit_dtypes(p.score_dtype, p.weight_dtype, [&](auto* st, auto* wt) {
    using ST = std::remove_pointer_t<decltype(st)>;
    using WT = std::remove_pointer_t<decltype(wt)>;
    const unsigned grid = grid_for((p.numel + 3) / 4, kThreads);
    if (packs_aligned<ST, WT>(p))
      aslp_forward_kernel<ST, WT, true><<<grid, kThreads, 0, stream>>>(p);
    else
      aslp_forward_kernel<ST, WT, false><<<grid, kThreads, 0, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void launch_backward(const AslpParams& p, cudaStream_t stream) {
  visit_dtypes(p.score_dtype, p.weight_dtype, [&](auto* st, auto* wt) {
    using ST = std::remove_pointer_t<decltype(st)>;
    using WT = std::remove_pointer_t<decltype(wt)>;
    const unsigned grid = grid_for(num_tiles(p.numel), 1);
    // 16 KB (32 KB for float64 weights): under the 48 KB that needs no opt-in.
    const size_t smem = p.scale_partials ? kTileElems * sizeof(WeightMath<WT>) : 0;
    if (packs_aligned<ST, WT>(p))
      aslp_backward_kernel<ST, WT, true><<<grid, kThreads, smem, stream>>>(p);
    else
      aslp_backward_kernel<ST, WT, false><<<grid, kThreads, smem, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace
}  // namespace device

namespace cuda {

void aslp_forward(const AslpParams& p, int device_index) {
  if (p.numel <= 0) return;
  device::on_device(device_index, [&](cudaStream_t stream) { device::launch_forward(p, stream); });
}

void aslp_backward(const AslpParams& p, int device_index) {
  TORCH_CHECK(!p.grad_scale || p.scale_partials,
              "sparseprune: internal error: grad_scale needs scale_partials");
  if (p.numel <= 0) return;
  device::on_device(device_index, [&](cudaStream_t stream) {
    device::launch_backward(p, stream);
    if (p.grad_scale) {
      device::sum_partials_kernel<<<1, device::kReduceThreads, 0, stream>>>(
          p.scale_partials, num_tiles(p.numel), p.grad_scale);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
}

}  // namespace cuda
}  // namespace sparseprune
