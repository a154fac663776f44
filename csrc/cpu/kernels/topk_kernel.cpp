// Edge-Popup kernels: the radix-select histogram steps and the one-pass band gather (the sampled
// selection) that find a layer's top-k threshold of |scores| without sorting (csrc/host/topk.cpp
// drives them), and the forward and backward passes
// that apply it. The keep rule, with key = magnitude_key(s):
//   key > threshold, or key == threshold and among the first tie_quota[tile] such keys of the tile.
#include "mask_kernels.h"

SP_NAMESPACE_BEGIN
namespace {

template <class V, class ST>
void histogram_tiles(const TopkParams& p, const DigitHistogram& step, int64_t tile_begin,
                     int64_t tile_end, int64_t* hist) {
  using U = typename Lanes<V>::U;
  constexpr int kW = Lanes<V>::kWidth;
  const bool filtered = step.prefix_shift < 32;
  const uint32_t digit_mask = (1u << (step.prefix_shift - step.shift)) - 1u;
  // Four interleaved histograms: runs of equal digits do not serialise on one counter.
  int64_t local[4][kHistogramBins] = {};
  alignas(64) uint32_t keys[kW];
  auto count = [&](uint32_t key, int lane) {
    if (!filtered || (key >> step.prefix_shift) == step.prefix)
      ++local[lane & 3][(key >> step.shift) & digit_mask];
  };
  const ST* s = static_cast<const ST*>(p.scores);
  const int64_t begin = tile_begin * kTileElems, end = end_of_tile(p.numel, tile_end - 1);
  int64_t i = begin;
  for (; i + kW <= end; i += kW) {
    const U key = magnitude_key(IO<V>::load(s + i));
    if (filtered && !any((key >> step.prefix_shift) == U(step.prefix))) continue;
    IO<V>::store_bits(keys, key);
    for (int l = 0; l < kW; ++l) count(keys[l], l);
  }
  for (; i < end; ++i) count(magnitude_key(IO<float>::load(s + i)), 0);
  for (int b = 0; b < kHistogramBins; ++b) hist[b] += local[0][b] + local[1][b] + local[2][b] + local[3][b];
}

template <class V, class ST>
void count_ties_tiles(const TopkParams& p, int64_t tile_begin, int64_t tile_end,
                      int64_t* per_tile) {
  using U = typename Lanes<V>::U;
  constexpr int kW = Lanes<V>::kWidth;
  alignas(64) uint32_t keys[kW];
  const ST* s = static_cast<const ST*>(p.scores);
  for (int64_t t = tile_begin; t < tile_end; ++t) {
    int64_t ties = 0, i = t * kTileElems;
    const int64_t end = end_of_tile(p.numel, t);
    for (; i + kW <= end; i += kW) {
      const U key = magnitude_key(IO<V>::load(s + i));
      if (!any(key == U(p.threshold))) continue;
      IO<V>::store_bits(keys, key);
      for (int l = 0; l < kW; ++l) ties += keys[l] == p.threshold;
    }
    for (; i < end; ++i) ties += magnitude_key(IO<float>::load(s + i)) == p.threshold;
    per_tile[t] = ties;
  }
}

// One pass of the sampled selection (TopkBand in tables.h): counts the keys above band.hi and
// gathers those in [band.lo, band.hi] in index order, with how many each tile gave.
template <class V, class ST>
void band_tiles(const TopkParams& p, cpu::TopkBand& band, int64_t tile_begin, int64_t tile_end) {
  using U = typename Lanes<V>::U;
  constexpr int kW = Lanes<V>::kWidth;
  static_assert(kW <= 64, "lane_bits holds at most 64 lanes");
  alignas(64) uint32_t keys[kW];
  // Signed lane comparisons (keys < 2^31): lo - 1 wraps to -1 for lo = 0, below every key.
  const uint32_t lo_minus_1 = band.lo - 1u, hi = band.hi;
  const ST* s = static_cast<const ST*>(p.scores);
  int64_t above = 0, gathered = 0;
  auto gather = [&](uint32_t key) {
    if (gathered < band.capacity) band.keys[gathered] = key;
    ++gathered;
  };
  for (int64_t t = tile_begin; t < tile_end; ++t) {
    const int64_t tile_start = gathered;
    int64_t i = t * kTileElems;
    const int64_t end = end_of_tile(p.numel, t);
    for (; i + kW <= end; i += kW) {
      const U key = magnitude_key(IO<V>::load(s + i));
      const uint64_t over = lane_bits(key > U(hi));
      uint64_t in = lane_bits(key > U(lo_minus_1)) & ~over;
      above += __builtin_popcountll(over);
      if (in == 0) continue;
      IO<V>::store_bits(keys, key);
      for (; in != 0; in &= in - 1) gather(keys[__builtin_ctzll(in)]);
    }
    for (; i < end; ++i) {
      const uint32_t key = magnitude_key(IO<float>::load(s + i));
      if (key > hi)
        ++above;
      else if (key >= band.lo)
        gather(key);
    }
    band.per_tile[t] = gathered - tile_start;
  }
  band.above = above;
  band.gathered = gathered;
}

// Applies the keep rule to elements [first, first + n) (F lanes at a time): forward writes the
// masked weight, backward the gradients. `taken` counts the tile's ties kept so far; groups with a
// tie under a quota go one lane at a time so that ties are taken in index order.
template <bool kBackward, class F, class ST, class WT>
bool apply_group(const TopkParams& p, int64_t first, int64_t n, int64_t quota, int64_t& taken) {
  using U = typename Lanes<F>::U;
  using W = WeightLane<F, WT>;
  const ST* s = in<ST>(p.scores, first);
  const WT* w = in<WT>(p.weight, first);
  const WT* g = kBackward ? in<WT>(p.grad, first) : nullptr;  // may alias `masked`
  WT* masked = out<WT>(p.masked, first);
  auto nan = is_nan(F(0.0f));
  for (int64_t j = 0; j < n; j += Lanes<F>::kWidth) {
    const F sv = IO<F>::load(s + j);
    const U key = magnitude_key(sv);
    const auto tie = key == U(p.threshold);
    if (quota >= 0 && any(tie)) {
      if constexpr (Lanes<F>::kWidth > 1) {  // redo this group one lane at a time
        nan = nan | is_nan(sv);
        apply_group<kBackward, float, ST, WT>(p, first + j, Lanes<F>::kWidth, quota, taken);
        continue;
      }
    }
    auto keep = (key > U(p.threshold)) | tie;
    if constexpr (Lanes<F>::kWidth == 1) {
      if (quota >= 0 && tie) keep = taken++ < quota;
    }
    const W wv = IO<W>::load(w + j);
    if constexpr (kBackward) {
      const W gv = IO<W>::load(g + j);
      if (p.grad_scores) IO<F>::store(out<ST>(p.grad_scores, first + j), edge_popup_grad_scores(gv, wv, sv));
      if (p.grad_weight) IO<W>::store(out<WT>(p.grad_weight, first + j), select(keep, gv, W(0.0f)));
    }
    if (masked) IO<W>::store(masked + j, select(keep, wv, W(0.0f)));
    nan = nan | is_nan(sv);
  }
  return any(nan);
}

template <bool kBackward, class V, class ST, class WT>
bool apply_tiles(const TopkParams& p, int64_t tile_begin, int64_t tile_end) {
  bool nan_seen = false;
  for (int64_t t = tile_begin; t < tile_end; ++t) {
    const int64_t begin = t * kTileElems, end = end_of_tile(p.numel, t);
    const int64_t quota = p.tie_quota ? p.tie_quota[t] : -1;  // -1: keep every tie
    const int64_t vector_n = (end - begin) / Lanes<V>::kWidth * Lanes<V>::kWidth;
    int64_t taken = 0;
    nan_seen |= apply_group<kBackward, V, ST, WT>(p, begin, vector_n, quota, taken);
    nan_seen |= apply_group<kBackward, float, ST, WT>(p, begin + vector_n, end - begin - vector_n,
                                                      quota, taken);
  }
  return nan_seen;
}

template <class Fn>
decltype(auto) visit(const TopkParams& p, Fn&& fn) {
  return visit_dtypes(p.score_dtype, p.weight_dtype, [&](auto* st, auto* wt) {
    using ST = std::remove_pointer_t<decltype(st)>;
    using WT = std::remove_pointer_t<decltype(wt)>;
    return fn(static_cast<LaneFor<ST, WT>*>(nullptr), st, wt);
  });
}

}  // namespace

void run_topk_histogram(const TopkParams& p, const DigitHistogram& step, int64_t tile_begin,
                        int64_t tile_end, int64_t* hist) {
  visit(p, [&](auto* v, auto* st, auto*) {
    using V = std::remove_pointer_t<decltype(v)>;
    using ST = std::remove_pointer_t<decltype(st)>;
    histogram_tiles<V, ST>(p, step, tile_begin, tile_end, hist);
  });
}

void run_topk_band(const TopkParams& p, cpu::TopkBand& band, int64_t tile_begin, int64_t tile_end) {
  visit(p, [&](auto* v, auto* st, auto*) {
    using V = std::remove_pointer_t<decltype(v)>;
    using ST = std::remove_pointer_t<decltype(st)>;
    band_tiles<V, ST>(p, band, tile_begin, tile_end);
  });
}

void run_topk_count_ties(const TopkParams& p, int64_t tile_begin, int64_t tile_end,
                         int64_t* per_tile) {
  visit(p, [&](auto* v, auto* st, auto*) {
    using V = std::remove_pointer_t<decltype(v)>;
    using ST = std::remove_pointer_t<decltype(st)>;
    count_ties_tiles<V, ST>(p, tile_begin, tile_end, per_tile);
  });
}

bool run_topk_forward(const TopkParams& p, int64_t tile_begin, int64_t tile_end) {
  return visit(p, [&](auto* v, auto* st, auto* wt) {
    return apply_tiles<false, std::remove_pointer_t<decltype(v)>, std::remove_pointer_t<decltype(st)>,
                       std::remove_pointer_t<decltype(wt)>>(p, tile_begin, tile_end);
  });
}

bool run_topk_backward(const TopkParams& p, int64_t tile_begin, int64_t tile_end) {
  return visit(p, [&](auto* v, auto* st, auto* wt) {
    return apply_tiles<true, std::remove_pointer_t<decltype(v)>, std::remove_pointer_t<decltype(st)>,
                std::remove_pointer_t<decltype(wt)>>(p, tile_begin, tile_end);
  });
}

SP_NAMESPACE_END
