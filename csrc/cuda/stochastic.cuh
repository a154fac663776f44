// The noise-driven passes of the stochastic masks (ASLP, Supermask), one kernel template for the
// three of them (stochastic.cu: forward and backward; dwr.cu: DWR's pass 1). As on the CPU
// (csrc/cpu/kernels/stochastic_kernel.cpp) the noise is regenerated from (seed, offset) in every
// pass and all element math comes from the shared headers, so masks, gradients and per-tile
// partials are bit-identical to the CPU's.
#pragma once
#include <sparseprune/philox.h>
#include <sparseprune/ste.h>

#include "common.cuh"

namespace sparseprune {
namespace device {

// The passes and what they write (partials only when p.partials is set):
enum class Pass {
  kForward,   // masked weight; kept count per tile (DWR) into partials[t]
  kBackward,  // gradients, masked weight; sum of g * w * z (Smart Rescale) into partials[t]
  kCollect,   // DWR pass 1: packed slopes; (sum of w * z * g, kept count) into partials[2t, 2t + 1]
};

// Whether the pass writes a per-tile float sum (through tile_sum) when partials are requested.
constexpr bool has_float_sum(Pass pass) { return pass != Pass::kForward; }

// One block per tile (grid-stride over tiles); each thread takes the tile's Philox blocks
// threadIdx.x, threadIdx.x + kThreads, ..., so every access is coalesced.
//
// Float partials go through tile_sum (the CPU's lane order). Kept counts are integers: the CPU
// sums them as floats, but every partial sum is an integer <= kTileElems, exact in float, so an
// integer block count gives the same double.
template <Pass P, Stochastic R, class ST, class WT>
__global__ void __launch_bounds__(kThreads) stochastic_kernel(StochasticParams p, bool vec) {
  using W = WeightMath<WT>;
  // The tile's terms (kTileElems W) when the pass has a float sum and partials are requested.
  extern __shared__ __align__(16) unsigned char smem[];
  Pack4<W>* terms = reinterpret_cast<Pack4<W>*>(smem);
  const bool float_sum = has_float_sum(P) && p.partials;
  const PhiloxKey<uint32_t> key(p.seed);
  const W scale(p.scale ? *p.scale : 1.0f);
  const float inv_tau = p.inv_temperature;
  SP_FOR_EACH_TILE(t, p.numel) {
    int kept = 0;  // this thread's kept elements of the tile (kForward, kCollect)
    for (int k = threadIdx.x; k < kTilePacks; k += kThreads) {
      const int64_t e = t * kTileElems + 4 * k;
      const int n = pack_size(p.numel, e);
      Pack4<W> term{};  // +0 past the end (see tile_sum)
      if (n > 0) {
        uint32_t bits[4];
        philox_block(key, p.offset, static_cast<uint64_t>(e / 4), bits);
        const Pack4<ST> s = load_pack(in<ST>(p.scores, e), n, vec);
        const Pack4<WT> w = load_pack(in<WT>(p.weight, e), n, vec);
        // g is read here, before `masked` (which may alias it) is written below.
        Pack4<WT> g{};
        if (P != Pass::kForward) g = load_pack(in<WT>(p.grad, e), n, vec);
        Pack4<ST> grad_scores;
        Pack4<WT> grad_weight, masked;
        Pack4<float> slopes;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const float sv = load_float(&s.v[i]), u = uniform_open<float>(bits[i]);
          const W wv = load_lane(&w.v[i]);
          bool keep;
          if constexpr (P == Pass::kForward) {
            keep = stochastic_keep_from_uniform<R>(sv, u);
          } else {
            float slope;
            keep_and_slope<R>(sv, u, inv_tau, keep, slope);
            const W gv = load_lane(&g.v[i]);
            if constexpr (P == Pass::kBackward) {
              float gs;
              W gw, scale_term;
              stochastic_backward(gv, wv, keep, slope, scale, gs, gw, scale_term);
              store_lane(&grad_scores.v[i], gs);
              store_lane(&grad_weight.v[i], gw);
              if (i < n) term.v[i] = scale_term;
            } else {
              slopes.v[i] = pack_slope(slope, keep);
              if (i < n) term.v[i] = select(keep, wv * gv, W(0.0f));
            }
          }
          if (P != Pass::kCollect) store_lane(&masked.v[i], masked_weight(keep, wv, scale));
          kept += i < n && keep;
        }
        if (P == Pass::kCollect) store_pack(p.slopes + e, slopes, n, vec);
        if (P == Pass::kBackward && p.grad_scores)
          store_pack(out<ST>(p.grad_scores, e), grad_scores, n, vec);
        if (P == Pass::kBackward && p.grad_weight)
          store_pack(out<WT>(p.grad_weight, e), grad_weight, n, vec);
        if (P != Pass::kCollect && p.masked) store_pack(out<WT>(p.masked, e), masked, n, vec);
      }
      if (float_sum) terms[k] = term;
    }
    if (!p.partials) continue;  // the same for the whole block, so the barriers below are safe
    int kept_total = 0;
    if (P != Pass::kBackward) block_scan(kept, kept_total);
    const double sum = float_sum ? tile_sum(reinterpret_cast<const W*>(terms)) : 0.0;
    if (threadIdx.x != 0) continue;
    if (P == Pass::kForward) p.partials[t] = kept_total;
    if (P == Pass::kBackward) p.partials[t] = sum;
    if (P == Pass::kCollect) {
      p.partials[2 * t] = sum;
      p.partials[2 * t + 1] = kept_total;
    }
  }
}

// Launches pass P over the whole tensor on `stream` for the rule and dtypes of p.
template <Pass P>
void launch_stochastic(const StochasticParams& p, cudaStream_t stream) {
  visit_dtypes(p.score_dtype, p.weight_dtype, [&](auto* st, auto* wt) {
    using ST = std::remove_pointer_t<decltype(st)>;
    using WT = std::remove_pointer_t<decltype(wt)>;
    const bool vec = packs_aligned<ST, WT>(p) && pack_aligned<float>(p.slopes);
    const unsigned grid = grid_for(num_tiles(p.numel), 1);
    // 16 KB (32 KB for float64 weights): under the 48 KB that needs no opt-in.
    const size_t smem =
        has_float_sum(P) && p.partials ? kTileElems * sizeof(WeightMath<WT>) : 0;
    constexpr auto kSupermask = Stochastic::kSupermask, kAslp = Stochastic::kAslp;
    if (p.rule == kSupermask)
      stochastic_kernel<P, kSupermask, ST, WT><<<grid, kThreads, smem, stream>>>(p, vec);
    else
      stochastic_kernel<P, kAslp, ST, WT><<<grid, kThreads, smem, stream>>>(p, vec);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace device
}  // namespace sparseprune
