// ASLP mask kernels: one pass forward (scores, weight -> masked weight) and one pass backward
// (grad of masked weight -> grad scores, grad weight, Smart Rescale partial sums, and optionally
// the masked weight again, written over the gradient buffer). The noise is regenerated from
// (seed, offset) in both passes; nothing is saved in between.
#include <sparseprune/ste.h>

#include "kernels.h"

SP_NAMESPACE_BEGIN
namespace {

template <class T>
const T* in(const void* p, int64_t first) {
  return static_cast<const T*>(p) + first;
}
template <class T>
T* out(void* p, int64_t first) {
  return p ? static_cast<T*>(p) + first : nullptr;
}

inline float scale_of(const AslpParams& p) { return p.scale ? *p.scale : 1.0f; }

// Elements [first, first + n) of one chunk whose Philox words are `bits`, F lanes at a time.
template <class F, class ST, class WT>
bool forward_group(const AslpParams& p, int64_t first, int n, const uint32_t* bits) {
  using W = WeightLane<F, WT>;
  const ST* s = in<ST>(p.scores, first);
  const WT* w = in<WT>(p.weight, first);
  WT* masked = out<WT>(p.masked, first);
  const W scale(scale_of(p));
  auto nan_seen = is_nan(F(0.0f));
  for (int j = 0; j < n; j += Lanes<F>::kWidth) {
    const F sv = IO<F>::load(s + j);
    const auto keep = aslp_keep_from_uniform(sv, uniform_open<F>(IO<F>::load_bits(bits + j)));
    IO<W>::store(masked + j, masked_weight(keep, IO<W>::load(w + j), scale));
    nan_seen = nan_seen | is_nan(sv);
  }
  return any(nan_seen);
}

template <class F, class ST, class WT>
void backward_group(const AslpParams& p, int64_t first, int n, const uint32_t* bits,
                    int64_t tile_pos, TileSums<typename PartOf<WeightLane<F, WT>>::type>& sums) {
  using W = WeightLane<F, WT>;
  const ST* s = in<ST>(p.scores, first);
  const WT* w = in<WT>(p.weight, first);
  const WT* g = in<WT>(p.grad, first);  // may alias `masked`: each group is read before written
  ST* grad_scores = out<ST>(p.grad_scores, first);
  WT* grad_weight = out<WT>(p.grad_weight, first);
  WT* masked = out<WT>(p.masked, first);
  const W scale(scale_of(p));
  const F inv_tau(p.inv_temperature);
  for (int j = 0; j < n; j += Lanes<F>::kWidth) {
    const F sv = IO<F>::load(s + j);
    const F noise = logistic_noise(uniform_open<F>(IO<F>::load_bits(bits + j)));
    const W gv = IO<W>::load(g + j), wv = IO<W>::load(w + j);
    F gs;
    W gw, term;
    aslp_backward(gv, wv, sv, noise, scale, inv_tau, gs, gw, term);
    if (grad_scores) IO<F>::store(grad_scores + j, gs);
    if (grad_weight) IO<W>::store(grad_weight + j, gw);
    if (masked) IO<W>::store(masked + j, masked_weight(aslp_keep(sv, noise), wv, scale));
    sums.add(tile_pos + j, term);
  }
}

template <class V, class ST, class WT>
bool forward_tiles(const AslpParams& p, int64_t tile_begin, int64_t tile_end) {
  alignas(64) uint32_t bits[kChunk];
  const ChunkGenerator philox(p.seed, p.offset);
  const int64_t end = tile_end * kTileElems < p.numel ? tile_end * kTileElems : p.numel;
  bool nan_seen = false;
  for (int64_t c = tile_begin * kTileElems; c < end; c += kChunk) {
    philox(static_cast<uint64_t>(c) / 4, bits);
    if (end - c >= kChunk)
      nan_seen |= forward_group<V, ST, WT>(p, c, kChunk, bits);
    else
      nan_seen |= forward_group<float, ST, WT>(p, c, static_cast<int>(end - c), bits);
  }
  return nan_seen;
}

template <class V, class ST, class WT>
void backward_tiles(const AslpParams& p, int64_t tile_begin, int64_t tile_end) {
  alignas(64) uint32_t bits[kChunk];
  const ChunkGenerator philox(p.seed, p.offset);
  for (int64_t t = tile_begin; t < tile_end; ++t) {
    const int64_t begin = t * kTileElems;
    const int64_t end = begin + kTileElems < p.numel ? begin + kTileElems : p.numel;
    TileSums<typename PartOf<WeightLane<V, WT>>::type> vector_sums;
    vector_sums.clear();
    int64_t c = begin;
    for (; c + kChunk <= end; c += kChunk) {
      philox(static_cast<uint64_t>(c) / 4, bits);
      backward_group<V, ST, WT>(p, c, kChunk, bits, c - begin, vector_sums);
    }
    TileSums<WeightLane<float, WT>> lane_sums;
    vector_sums.spill(lane_sums.acc);
    if (c < end) {  // the last partial chunk of the tensor, one lane at a time
      philox(static_cast<uint64_t>(c) / 4, bits);
      backward_group<float, ST, WT>(p, c, static_cast<int>(end - c), bits, c - begin, lane_sums);
    }
    if (p.scale_partials) p.scale_partials[t] = tree_total(lane_sums.acc);
  }
}

}  // namespace

bool aslp_forward(const AslpParams& p, int64_t tile_begin, int64_t tile_end) {
  return visit_dtypes(p.score_dtype, p.weight_dtype, [&](auto* st, auto* wt) {
    using ST = std::remove_pointer_t<decltype(st)>;
    using WT = std::remove_pointer_t<decltype(wt)>;
    return forward_tiles<LaneFor<ST, WT>, ST, WT>(p, tile_begin, tile_end);
  });
}

void aslp_backward(const AslpParams& p, int64_t tile_begin, int64_t tile_end) {
  visit_dtypes(p.score_dtype, p.weight_dtype, [&](auto* st, auto* wt) {
    using ST = std::remove_pointer_t<decltype(st)>;
    using WT = std::remove_pointer_t<decltype(wt)>;
    backward_tiles<LaneFor<ST, WT>, ST, WT>(p, tile_begin, tile_end);
  });
}

SP_NAMESPACE_END
