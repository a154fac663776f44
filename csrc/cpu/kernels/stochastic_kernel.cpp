// Stochastic mask kernels (ASLP, Supermask): forward (scores, weight -> masked weight; with DWR on
// CPU two passes, the kept count before the write that applies r) and backward: one pass without
// rescaling or with Smart Rescale, two with DWR (see ste.h). Every pass that needs the noise
// regenerates it from (seed, offset); nothing is saved.
#include "mask_kernels.h"

SP_NAMESPACE_BEGIN
namespace {

inline float scale_of(const StochasticParams& p) { return p.scale ? *p.scale : 1.0f; }

// p.keep_bits (params.h): the n <= 64 bits of the group that starts at element `first`, a
// multiple of 64, so that a group owns its words.
inline void store_keep_bits(uint32_t* keep_bits, int64_t first, int n, uint64_t bits) {
  uint32_t* word = keep_bits + first / 32;
  word[0] = static_cast<uint32_t>(bits);
  if (n > 32) word[1] = static_cast<uint32_t>(bits >> 32);
}

// The keep mask of elements [i, i + width) from p.keep_bits; i is a multiple of F's width, which
// divides 64, so the lanes never straddle a 64-bit boundary.
template <class F>
typename Lanes<F>::M load_keep_bits(const uint32_t* keep_bits, int64_t i) {
  constexpr int kW = Lanes<F>::kWidth;
  uint64_t b;
  if constexpr (kW == 64)
    b = keep_bits[i / 32] | (static_cast<uint64_t>(keep_bits[i / 32 + 1]) << 32);
  else
    b = keep_bits[i / 32] >> (i % 32);
  return mask_from_bits(b, static_cast<const typename Lanes<F>::M*>(nullptr));
}

// Whether a backward pass writes anything that depends on z beyond the score gradient.
inline bool keep_needed(const StochasticParams& p) { return p.grad_weight || p.masked; }

// A keep mask with every lane set, where an output does not depend on z.
template <class F>
typename Lanes<F>::M every_lane() {
  return F(0.0f) == F(0.0f);
}

// The passes without noise: body(lane, first, end) over the elements of tiles
// [tile_begin, tile_end), whole vectors of V then the last partial one a lane at a time.
template <class V, class Body>
void for_each_lane_range(int64_t numel, int64_t tile_begin, int64_t tile_end, Body&& body) {
  const int64_t begin = tile_begin * kTileElems, end = end_of_tile(numel, tile_end - 1);
  const int64_t vector_end = begin + (end - begin) / Lanes<V>::kWidth * Lanes<V>::kWidth;
  body(V(), begin, vector_end);
  body(float(), vector_end, end);
}

// Which of the backward's outputs this call streams (vec.h): decided once per call.
struct Streams {
  bool grad_scores, grad_weight, masked;
  explicit Streams(const StochasticParams& p)
      : grad_scores(streams(p.grad_scores, p.numel, p.score_dtype)),
        grad_weight(streams(p.grad_weight, p.numel, p.weight_dtype)),
        masked(streams(p.masked, p.numel, p.weight_dtype)) {}
};

template <Stochastic R, class V, class ST, class WT>
bool forward_tiles(const StochasticParams& p, int64_t tile_begin, int64_t tile_end) {
  bool nan_seen = false;
  const bool stream = streams(p.masked, p.numel, p.weight_dtype);
  auto group = [&](auto lane, int64_t first, int n, const uint32_t* bits, int64_t pos,
                   auto* kept) {
    using F = decltype(lane);
    using W = WeightLane<F, WT>;
    const ST* s = in<ST>(p.scores, first);
    const WT* w = in<WT>(p.weight, first);
    WT* masked = out<WT>(p.masked, first);
    const W scale(scale_of(p));
    auto nan = is_nan(F(0.0f));
    for (int j = 0; j < n; j += Lanes<F>::kWidth) {
      const F sv = IO<F>::load(s + j);
      const auto keep =
          stochastic_keep_from_uniform<R>(sv, uniform_open<F>(IO<F>::load_bits(bits + j)));
      stream_out(stream, masked + j, masked_weight(keep, IO<W>::load(w + j), scale));
      kept[0].add(pos + j, select(keep, W(1.0f), W(0.0f)));
      nan = nan | is_nan(sv);
    }
    nan_seen = nan_seen || any(nan);
  };
  auto finish = [&](int64_t t, const double* totals) {
    if (p.partials) p.partials[t] = totals[0];
  };
  for_each_philox_tile<V, WT, 1>(p.seed, p.offset, p.numel, tile_begin, tile_end, group, finish);
  return nan_seen;
}

// DWR forward, pass 1 (count before writing): the samples z as p.keep_bits and the kept count
// per tile into p.partials; reads only the scores.
template <Stochastic R, class V, class ST, class WT>
bool dwr_count_tiles(const StochasticParams& p, int64_t tile_begin, int64_t tile_end) {
  bool nan_seen = false;
  int64_t kept = 0;  // of the current tile
  auto group = [&](auto lane, int64_t first, int n, const uint32_t* bits, int64_t, auto*) {
    using F = decltype(lane);
    const ST* s = in<ST>(p.scores, first);
    auto nan = is_nan(F(0.0f));
    uint64_t word = 0;
    for (int j = 0; j < n; j += Lanes<F>::kWidth) {
      const F sv = IO<F>::load(s + j);
      const auto keep =
          stochastic_keep_from_uniform<R>(sv, uniform_open<F>(IO<F>::load_bits(bits + j)));
      word |= lane_bits(keep) << j;
      nan = nan | is_nan(sv);
    }
    store_keep_bits(p.keep_bits, first, n, word);
    kept += __builtin_popcountll(word);
    nan_seen = nan_seen || any(nan);
  };
  auto finish = [&](int64_t t, const double*) {
    p.partials[t] = static_cast<double>(kept);
    kept = 0;
  };
  for_each_philox_tile<V, WT, 0>(p.seed, p.offset, p.numel, tile_begin, tile_end, group, finish);
  return nan_seen;
}

// DWR forward, pass 2: masked = r * w * z from p.keep_bits, r = p.dwr_factors[0]; no noise.
template <class F, class WT>
void dwr_apply_range(const StochasticParams& p, int64_t first, int64_t end) {
  using W = WeightLane<F, WT>;
  const W r = lane_of<W>(p.dwr_factors[0]);
  const bool stream = streams(p.masked, p.numel, p.weight_dtype);
  for (int64_t i = first; i < end; i += Lanes<F>::kWidth) {
    const auto keep = load_keep_bits<F>(p.keep_bits, i);
    stream_out(stream, out<WT>(p.masked, i),
               masked_weight(keep, IO<W>::load(in<WT>(p.weight, i)), r));
  }
}

template <class V, class WT>
void dwr_apply_tiles(const StochasticParams& p, int64_t tile_begin, int64_t tile_end) {
  for_each_lane_range<V>(p.numel, tile_begin, tile_end, [&](auto lane, int64_t first, int64_t end) {
    dwr_apply_range<decltype(lane), WT>(p, first, end);
  });
}

// Supermask's score gradient alone (no weight gradient, masked weight or Smart Rescale term):
// its slope is noise-free and nothing else needs z, so no Philox words are drawn.
template <class F, class ST, class WT>
bool supermask_scores_range(const StochasticParams& p, int64_t first, int64_t end) {
  using W = WeightLane<F, WT>;
  const bool stream = streams(p.grad_scores, p.numel, p.score_dtype);
  const W scale(scale_of(p));
  const auto keep = every_lane<F>();  // unused by the score gradient
  auto nan = is_nan(F(0.0f));
  for (int64_t i = first; i < end; i += Lanes<F>::kWidth) {
    const F sv = IO<F>::load(in<ST>(p.scores, i));
    nan = nan | is_nan(sv);
    F gs;
    W gw, term;
    stochastic_backward(IO<W>::load(in<WT>(p.grad, i)), IO<W>::load(in<WT>(p.weight, i)), keep,
                        logistic_slope(sv, F(1.0f)), scale, gs, gw, term);
    stream_out(stream, out<ST>(p.grad_scores, i), gs);
  }
  return any(nan);
}

template <Stochastic R, class V, class ST, class WT>
bool backward_tiles(const StochasticParams& p, int64_t tile_begin, int64_t tile_end) {
  if (R == Stochastic::kSupermask && p.grad_scores && !keep_needed(p) && !p.partials) {
    bool nan = false;
    for_each_lane_range<V>(p.numel, tile_begin, tile_end,
                           [&](auto lane, int64_t first, int64_t end) {
                             nan = supermask_scores_range<decltype(lane), ST, WT>(p, first, end) ||
                                   nan;
                           });
    return nan;
  }
  bool nan_seen = false;
  const Streams stream(p);
  auto group = [&](auto lane, int64_t first, int n, const uint32_t* bits, int64_t pos,
                   auto* scale_terms) {
    using F = decltype(lane);
    using W = WeightLane<F, WT>;
    const ST* s = in<ST>(p.scores, first);
    const WT* w = in<WT>(p.weight, first);
    const WT* g = in<WT>(p.grad, first);  // may alias `masked`: each group is read before written
    ST* grad_scores = out<ST>(p.grad_scores, first);
    WT* grad_weight = out<WT>(p.grad_weight, first);
    WT* masked = out<WT>(p.masked, first);
    const W scale(scale_of(p));
    const F inv_tau(p.inv_temperature);
    auto nan = is_nan(F(0.0f));
    for (int j = 0; j < n; j += Lanes<F>::kWidth) {
      const F sv = IO<F>::load(s + j);
      nan = nan | is_nan(sv);
      typename Lanes<F>::M keep;
      F slope;
      keep_and_slope<R>(sv, uniform_open<F>(IO<F>::load_bits(bits + j)), inv_tau, keep, slope);
      const W gv = IO<W>::load(g + j), wv = IO<W>::load(w + j);
      F gs;
      W gw, term;
      stochastic_backward(gv, wv, keep, slope, scale, gs, gw, term);
      if (grad_scores) stream_out(stream.grad_scores, grad_scores + j, gs);
      if (grad_weight) stream_out(stream.grad_weight, grad_weight + j, gw);
      if (masked) stream_out(stream.masked, masked + j, masked_weight(keep, wv, scale));
      scale_terms[0].add(pos + j, term);
    }
    nan_seen = nan_seen || any(nan);
  };
  auto finish = [&](int64_t t, const double* totals) {
    if (p.partials) p.partials[t] = totals[0];
  };
  for_each_philox_tile<V, WT, 1>(p.seed, p.offset, p.numel, tile_begin, tile_end, group, finish);
  return nan_seen;
}

template <Stochastic R, class V, class ST, class WT>
bool dwr_collect_tiles(const StochasticParams& p, int64_t tile_begin, int64_t tile_end) {
  bool nan_seen = false;
  const bool stream_slopes = streams(p.slopes, p.numel, DType::kFloat32);
  auto group = [&](auto lane, int64_t first, int n, const uint32_t* bits, int64_t pos,
                   auto* sums) {
    using F = decltype(lane);
    using W = WeightLane<F, WT>;
    const ST* s = in<ST>(p.scores, first);
    const WT* w = in<WT>(p.weight, first);
    const WT* g = in<WT>(p.grad, first);
    const bool use_bits = R == Stochastic::kSupermask && p.keep_bits;
    float* slopes = use_bits ? nullptr : p.slopes + first;
    const F inv_tau(p.inv_temperature);
    auto nan = is_nan(F(0.0f));
    uint64_t word = 0;
    for (int j = 0; j < n; j += Lanes<F>::kWidth) {
      typename Lanes<F>::M keep;
      F slope;
      const F sv = IO<F>::load(s + j);
      nan = nan | is_nan(sv);
      if (use_bits) {  // Supermask: the slope is noise-free, pass 2 recomputes it from the score
        keep = stochastic_keep_from_uniform<R>(sv, uniform_open<F>(IO<F>::load_bits(bits + j)));
        word |= lane_bits(keep) << j;
      } else {
        keep_and_slope<R>(sv, uniform_open<F>(IO<F>::load_bits(bits + j)), inv_tau, keep, slope);
        stream_out(stream_slopes, slopes + j, pack_slope(slope, keep));
      }
      sums[0].add(pos + j, select(keep, IO<W>::load(w + j) * IO<W>::load(g + j), W(0.0f)));
      sums[1].add(pos + j, select(keep, W(1.0f), W(0.0f)));
    }
    if (use_bits && keep_needed(p)) store_keep_bits(p.keep_bits, first, n, word);
    nan_seen = nan_seen || any(nan);
  };
  auto finish = [&](int64_t t, const double* totals) {
    p.partials[2 * t] = totals[0];
    p.partials[2 * t + 1] = totals[1];
  };
  for_each_philox_tile<V, WT, 2>(p.seed, p.offset, p.numel, tile_begin, tile_end, group, finish);
  return nan_seen;
}

// Pass 2 needs no noise: a plain elementwise loop, vector lanes then one-lane tail.
template <class F, class ST, class WT>
void dwr_finish_range(const StochasticParams& p, int64_t first, int64_t end) {
  using W = WeightLane<F, WT>;
  const W r = lane_of<W>(p.dwr_factors[0]), c = lane_of<W>(p.dwr_factors[1]);
  const Streams stream(p);
  const bool need_keep = keep_needed(p);
  const auto all_kept = every_lane<F>();
  for (int64_t i = first; i < end; i += Lanes<F>::kWidth) {
    const W gv = IO<W>::load(in<WT>(p.grad, i)), wv = IO<W>::load(in<WT>(p.weight, i));
    F gs;
    W gw, masked;
    // With keep bits (Supermask), the same packed slope pass 1 would have stored; z only where
    // an output needs it (the score gradient takes the slope's magnitude).
    const F packed =
        p.keep_bits ? pack_slope(logistic_slope(IO<F>::load(in<ST>(p.scores, i)), F(1.0f)),
                                 need_keep ? load_keep_bits<F>(p.keep_bits, i) : all_kept)
                    : IO<F>::load(p.slopes + i);
    dwr_finish(gv, wv, packed, r, c, gs, gw, masked);
    if (p.grad_scores) stream_out(stream.grad_scores, out<ST>(p.grad_scores, i), gs);
    if (p.grad_weight) stream_out(stream.grad_weight, out<WT>(p.grad_weight, i), gw);
    if (p.masked) stream_out(stream.masked, out<WT>(p.masked, i), masked);
  }
}

template <class V, class ST, class WT>
void dwr_finish_tiles(const StochasticParams& p, int64_t tile_begin, int64_t tile_end) {
  for_each_lane_range<V>(p.numel, tile_begin, tile_end, [&](auto lane, int64_t first, int64_t end) {
    dwr_finish_range<decltype(lane), ST, WT>(p, first, end);
  });
}

// Instantiates body<R, V, ST, WT> for the rule and dtypes of p.
#define SP_STOCHASTIC_ENTRY(name, body, ret)                                             \
  ret name(const StochasticParams& p, int64_t tile_begin, int64_t tile_end) {            \
    const StreamFence fence;                                                              \
    return visit_dtypes(p.score_dtype, p.weight_dtype, [&](auto* st, auto* wt) -> ret {  \
      using ST = std::remove_pointer_t<decltype(st)>;                                     \
      using WT = std::remove_pointer_t<decltype(wt)>;                                     \
      if (p.rule == Stochastic::kSupermask)                                               \
        return body<Stochastic::kSupermask, LaneFor<ST, WT>, ST, WT>(p, tile_begin, tile_end); \
      return body<Stochastic::kAslp, LaneFor<ST, WT>, ST, WT>(p, tile_begin, tile_end);   \
    });                                                                                   \
  }

}  // namespace

SP_STOCHASTIC_ENTRY(run_stochastic_forward, forward_tiles, bool)
SP_STOCHASTIC_ENTRY(run_stochastic_backward, backward_tiles, bool)
SP_STOCHASTIC_ENTRY(run_dwr_collect, dwr_collect_tiles, bool)
SP_STOCHASTIC_ENTRY(run_dwr_count, dwr_count_tiles, bool)

void run_dwr_apply(const StochasticParams& p, int64_t tile_begin, int64_t tile_end) {
  const StreamFence fence;
  visit_dtypes(p.score_dtype, p.weight_dtype, [&](auto* st, auto* wt) {
    using ST = std::remove_pointer_t<decltype(st)>;
    using WT = std::remove_pointer_t<decltype(wt)>;
    dwr_apply_tiles<LaneFor<ST, WT>, WT>(p, tile_begin, tile_end);
  });
}

void run_dwr_finish(const StochasticParams& p, int64_t tile_begin, int64_t tile_end) {
  const StreamFence fence;
  visit_dtypes(p.score_dtype, p.weight_dtype, [&](auto* st, auto* wt) {
    using ST = std::remove_pointer_t<decltype(st)>;
    using WT = std::remove_pointer_t<decltype(wt)>;
    dwr_finish_tiles<LaneFor<ST, WT>, ST, WT>(p, tile_begin, tile_end);
  });
}

SP_NAMESPACE_END
