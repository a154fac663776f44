// CUDA Edge-Popup kernels, mirroring csrc/cpu/kernels/topk_kernel.cpp: the radix-select
// histogram steps that find a layer's top-k threshold of |scores| (csrc/host/topk.cpp drives them
// and copies each histogram to the host itself), the per-tile tie counts, and the forward and
// backward passes. The keep rule, with key = magnitude_key(s):
//   key > threshold, or key == threshold and among the first tie_quota[tile] such keys of the tile
//   (every such key when tie_quota is null).
#include <sparseprune/ste.h>

#include "common.cuh"
#include "launch.h"

namespace sparseprune {
namespace device {
namespace {

constexpr int64_t kHistogramBlocks = 1024;  // grid cap: each block flushes up to 2048 bins

// The keys of a pack's first n scores that equal the threshold.
template <class ST>
__device__ __forceinline__ int ties_in(const Pack4<ST>& s, int n, uint32_t threshold) {
  int ties = 0;
#pragma unroll
  for (int i = 0; i < 4; ++i) ties += i < n && magnitude_key(load_float(&s.v[i])) == threshold;
  return ties;
}

// One radix step: a shared-memory histogram per block (grid-stride over packs), added into the
// global int64 counts with atomics (integer counts: the result does not depend on their order).
template <class ST>
__global__ void __launch_bounds__(kThreads)
    histogram_kernel(TopkParams p, DigitHistogram step, unsigned long long* hist, bool vec) {
  __shared__ unsigned int local[kHistogramBins];
  for (int b = threadIdx.x; b < kHistogramBins; b += kThreads) local[b] = 0;
  __syncthreads();
  const bool filtered = step.prefix_shift < 32;  // a shift by 32 would be undefined
  const uint32_t digit_mask = (1u << (step.prefix_shift - step.shift)) - 1u;
  SP_FOR_EACH_PHILOX_BLOCK(b, (p.numel + 3) / 4) {
    const int n = pack_size(p.numel, 4 * b);
    const Pack4<ST> s = load_pack(in<ST>(p.scores, 4 * b), n, vec);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t key = magnitude_key(load_float(&s.v[i]));
      if (i < n && (!filtered || (key >> step.prefix_shift) == step.prefix))
        atomicAdd(&local[(key >> step.shift) & digit_mask], 1u);
    }
  }
  __syncthreads();
  for (int b = threadIdx.x; b < kHistogramBins; b += kThreads)
    if (local[b]) atomicAdd(hist + b, static_cast<unsigned long long>(local[b]));
}

// Keys equal to the threshold in each tile (one block per tile).
template <class ST>
__global__ void __launch_bounds__(kThreads)
    count_ties_kernel(TopkParams p, int64_t* per_tile, bool vec) {
  SP_FOR_EACH_TILE(t, p.numel) {
    int ties = 0;
    for (int k = threadIdx.x; k < kTilePacks; k += kThreads) {
      const int64_t e = t * kTileElems + 4 * k;
      const int n = pack_size(p.numel, e);
      ties += ties_in(load_pack(in<ST>(p.scores, e), n, vec), n, p.threshold);
    }
    int total;
    block_scan(ties, total);
    if (threadIdx.x == 0) per_tile[t] = total;
  }
}

// Forward (masked weight) or backward (gradients, and the masked weight when p.masked is set),
// one block per tile. Under a quota a tie is kept when fewer than quota ties precede it in the
// tile: the CPU's in-order count. Packs go to threads in index order within each round (pack
// round * kThreads + threadIdx.x), so the ties before a pack are those of the earlier rounds plus
// an exclusive scan over the threads of this round.
template <bool kBackward, class ST, class WT>
__global__ void __launch_bounds__(kThreads) topk_apply_kernel(TopkParams p, bool vec) {
  using W = WeightMath<WT>;
  SP_FOR_EACH_TILE(t, p.numel) {
    const int64_t quota = p.tie_quota ? p.tie_quota[t] : -1;  // -1: keep every tie
    int64_t earlier = 0;  // ties in the tile's earlier rounds
    for (int k = threadIdx.x; k < kTilePacks; k += kThreads) {
      const int64_t e = t * kTileElems + 4 * k;
      const int n = pack_size(p.numel, e);
      const Pack4<ST> s = load_pack(in<ST>(p.scores, e), n, vec);
      int64_t rank = 0;  // ties of the tile before the current element
      if (quota >= 0) {  // the same for the whole block, so the barriers are safe
        int round_ties;
        rank = earlier + block_scan(ties_in(s, n, p.threshold), round_ties);
        earlier += round_ties;
      }
      if (n == 0) continue;
      const Pack4<WT> w = load_pack(in<WT>(p.weight, e), n, vec);
      // g is read here, before `masked` (which may alias it) is written below.
      Pack4<WT> g{};
      if (kBackward) g = load_pack(in<WT>(p.grad, e), n, vec);
      Pack4<ST> grad_scores;
      Pack4<WT> grad_weight, masked;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float sv = load_float(&s.v[i]);
        const uint32_t key = magnitude_key(sv);
        const bool tie = key == p.threshold;
        bool keep = key > p.threshold || tie;
        if (quota >= 0 && tie) keep = rank++ < quota;
        const W wv = load_lane(&w.v[i]);
        if (kBackward) {
          const W gv = load_lane(&g.v[i]);
          store_lane(&grad_scores.v[i], edge_popup_grad_scores(gv, wv, sv));
          store_lane(&grad_weight.v[i], select(keep, gv, W(0.0f)));
        }
        store_lane(&masked.v[i], select(keep, wv, W(0.0f)));
      }
      if (kBackward && p.grad_scores) store_pack(out<ST>(p.grad_scores, e), grad_scores, n, vec);
      if (kBackward && p.grad_weight) store_pack(out<WT>(p.grad_weight, e), grad_weight, n, vec);
      if (p.masked) store_pack(out<WT>(p.masked, e), masked, n, vec);
    }
  }
}

template <bool kBackward>
void launch_apply(const TopkParams& p, int device_index) {
  if (p.numel <= 0) return;
  on_device(device_index, [&](cudaStream_t stream) {
    visit_dtypes(p.score_dtype, p.weight_dtype, [&](auto* st, auto* wt) {
      using ST = std::remove_pointer_t<decltype(st)>;
      using WT = std::remove_pointer_t<decltype(wt)>;
      const unsigned grid = grid_for(num_tiles(p.numel), 1);
      const bool vec = packs_aligned<ST, WT>(p);
      topk_apply_kernel<kBackward, ST, WT><<<grid, kThreads, 0, stream>>>(p, vec);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

}  // namespace
}  // namespace device

namespace cuda {

void topk_histogram(const TopkParams& p, const DigitHistogram& step, int64_t* hist,
                    int device_index) {
  if (p.numel <= 0) return;
  device::on_device(device_index, [&](cudaStream_t stream) {
    // Only the scores are read: instantiated per score dtype.
    visit_dtypes(p.score_dtype, DType::kFloat32, [&](auto* st, auto*) {
      using ST = std::remove_pointer_t<decltype(st)>;
      const int64_t packs = (p.numel + 3) / 4;
      const int64_t wanted = (packs + device::kThreads - 1) / device::kThreads;
      const unsigned grid = static_cast<unsigned>(
          wanted < device::kHistogramBlocks ? wanted : device::kHistogramBlocks);
      device::histogram_kernel<ST><<<grid, device::kThreads, 0, stream>>>(
          p, step, reinterpret_cast<unsigned long long*>(hist), device::pack_aligned<ST>(p.scores));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

void topk_count_ties(const TopkParams& p, int64_t* per_tile, int device_index) {
  if (p.numel <= 0) return;
  device::on_device(device_index, [&](cudaStream_t stream) {
    visit_dtypes(p.score_dtype, DType::kFloat32, [&](auto* st, auto*) {
      using ST = std::remove_pointer_t<decltype(st)>;
      device::count_ties_kernel<ST><<<device::grid_for(num_tiles(p.numel), 1), device::kThreads,
                                      0, stream>>>(p, per_tile, device::pack_aligned<ST>(p.scores));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

void topk_forward(const TopkParams& p, int device_index) {
  device::launch_apply<false>(p, device_index);
}

void topk_backward(const TopkParams& p, int device_index) {
  device::launch_apply<true>(p, device_index);
}

}  // namespace cuda
}  // namespace sparseprune
