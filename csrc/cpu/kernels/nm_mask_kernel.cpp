// N:M pattern mask kernels (include/sparseprune/nm.h): nm_gumbel (a sampled candidate pattern per
// group), nm_topk and srste (the top n of each group), one pass forward and one backward, the
// noise regenerated from (seed, offset) in both. A tile of kNmTileGroups groups runs as sub-blocks
// of kBlock groups:
//   - the elementwise work (Philox words, Gumbel noise, perturbed logits, w * g, the masked weight,
//     the weight gradient) runs over the sub-block's contiguous elements with the ISA's vector type
//     (the tensor's last few elements one lane at a time);
//   - the per-group work runs on the sub-block's scratch: the hard pattern and top-n (a few
//     compares per group) one group at a time, the softmax and the logit gradient with one group
//     per vector lane after a transpose ([c][kBlock] rows).
// Every step is the same IEEE operation on every ISA, so the results are the same bits. float64
// scores or weights run the math in double, one lane at a time (it exists for gradcheck); the
// noise is float32 in every case.
#include <sparseprune/nm.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "tile_loops.h"

SP_NAMESPACE_BEGIN
namespace {

constexpr int kBlock = 64;  // groups per sub-block: kBlock * c Philox elements are c whole chunks
static_assert(kNmTileGroups % kBlock == 0, "a tile holds whole sub-blocks");
static_assert(kBlock % kChunk == 0 || kChunk % kBlock == 0, "sub-blocks start on chunks");

inline bool is_nan(double x) { return x != x; }

template <class ST, class WT>
constexpr bool kDoubleMath = std::is_same<ST, double>::value || std::is_same<WT, double>::value;

// The whole-vector lane type and the one-lane type of the math.
template <class ST, class WT>
using VectorOf = std::conditional_t<kDoubleMath<ST, WT>, double, Vec>;
template <class ST, class WT>
using ScalarOf = std::conditional_t<kDoubleMath<ST, WT>, double, float>;

template <class F, class T>
F load_as(const T* p) {
  if constexpr (std::is_same<F, double>::value)
    return static_cast<double>(load_lane(p));
  else
    return IO<F>::load(p);
}

template <class F, class T>
void store_as(T* p, F v) {
  if constexpr (std::is_same<F, double>::value) {
    if constexpr (std::is_same<T, double>::value)
      *p = v;
    else
      store_lane(p, static_cast<float>(v));
  } else {
    IO<F>::store(p, v);
  }
}

// The uint32 lanes of F's noise (double math draws float32 noise one lane at a time).
template <class F>
using NoiseLane = std::conditional_t<std::is_same<F, double>::value, float, F>;

// fn(lane, j) over [0, count): whole vectors V, then one lane S at a time.
template <class V, class S, class Fn>
void elementwise(int64_t count, Fn&& fn) {
  constexpr int kW = Lanes<V>::kWidth;
  int64_t j = 0;
  for (; j + kW <= count; j += kW) fn(V(), j);
  for (; j < count; ++j) fn(S(), j);
}

// One sub-block's scratch, sized once per call.
template <class S>
struct Scratch {
  std::vector<uint32_t> bits;  // kBlock * c Philox words
  std::vector<S> a;            // kBlock * c perturbed logits, group-major
  std::vector<S> rows;         // [c][kBlock]: a, then dLoss/dpi
  std::vector<S> y;            // [c][kBlock]: the softmax
  std::vector<S> hw;           // kBlock * m: w * g, group-major
  std::vector<S> hw_rows;      // [m][kBlock]: w * g
  std::vector<S> m_rows;       // [m][kBlock]: the soft mask
  std::vector<S> keep;         // kBlock * m: 1 / 0 (hard) or the soft mask, group-major
  alignas(64) uint32_t kb[kBlock];  // each group's pattern bits

  explicit Scratch(const NmParams& p) {
    const size_t c = p.rule == NmRule::kGumbel ? p.c : 0;
    bits.resize(kBlock * c);
    a.resize(kBlock * c);
    rows.resize(kBlock * c);
    y.resize(kBlock * c);
    hw.resize(kBlock * p.m);
    hw_rows.resize(kBlock * p.m);
    m_rows.resize(kBlock * p.m);
    keep.resize(kBlock * p.m);
  }
};

// Group-major [n][cols] -> rows [cols][kBlock].
template <class S>
void to_rows(const S* src, int n, int cols, S* dst) {
  for (int k = 0; k < cols; ++k)
    for (int q = 0; q < n; ++q) dst[k * kBlock + q] = src[q * cols + k];
}

template <class S>
void expand_bits(const uint32_t* kb, int n, int m, S* keep) {
  for (int q = 0; q < n; ++q)
    for (int j = 0; j < m; ++j) keep[q * m + j] = (kb[q] >> j) & 1u ? S(1.0f) : S(0.0f);
}

// ---- nm_gumbel ------------------------------------------------------------------------------------

// The sub-block's perturbed logits a = kappa * pi + G, group-major; true if a logit is NaN.
template <class V, class S, class ST>
bool perturbed_logits(const NmParams& p, const ChunkGenerator& philox, int64_t g0, int n,
                      Scratch<S>& sc) {
  const int64_t e0 = g0 * p.c, count = static_cast<int64_t>(n) * p.c;
  for (int64_t ch = 0; ch < count; ch += kChunk)
    philox(static_cast<uint64_t>(e0 + ch) / 4, sc.bits.data() + ch);
  const ST* pi = in<ST>(p.scores, e0);
  bool nan_seen = false;
  elementwise<V, S>(count, [&](auto lane, int64_t j) {
    using F = decltype(lane);
    using N = NoiseLane<F>;
    const F noise(gumbel_noise(uniform_open<N>(IO<N>::load_bits(sc.bits.data() + j))));
    const F piv = load_as<F>(pi + j);
    store_as<F>(sc.a.data() + j, nm_perturbed(lane_of<F>(p.logit_scale), piv, noise));
    nan_seen = nan_seen || any(is_nan(piv));
  });
  return nan_seen;
}

// The softmax of one lane-block of groups [q, q + width) from the rows of a into sc.y.
template <class F, class S>
void softmax_lanes(const NmParams& p, Scratch<S>& sc, int q) {
  const F inv_tau = lane_of<F>(p.inv_temperature);
  F zmax = load_as<F>(sc.rows.data() + q) * inv_tau;
  for (int k = 1; k < p.c; ++k) {
    const F z = load_as<F>(sc.rows.data() + k * kBlock + q) * inv_tau;
    zmax = select(z > zmax, z, zmax);
  }
  F sum(0.0f);
  for (int k = 0; k < p.c; ++k) {
    const F e = nm_softmax_term(load_as<F>(sc.rows.data() + k * kBlock + q) * inv_tau, zmax);
    store_as<F>(sc.y.data() + k * kBlock + q, e);
    sum = sum + e;
  }
  for (int k = 0; k < p.c; ++k)
    store_as<F>(sc.y.data() + k * kBlock + q, load_as<F>(sc.y.data() + k * kBlock + q) / sum);
}

// The soft mask m_j = sum of y_k over the candidates keeping j (k in order), into m_rows.
template <class F, class S>
void soft_mask_lanes(const NmParams& p, Scratch<S>& sc, int q) {
  for (int j = 0; j < p.m; ++j) {
    F mj(0.0f);
    for (int k = 0; k < p.c; ++k)
      if ((p.patterns[k] >> j) & 1u) mj = mj + load_as<F>(sc.y.data() + k * kBlock + q);
    store_as<F>(sc.m_rows.data() + j * kBlock + q, mj);
  }
}

template <class V, class S, class ST, class WT>
bool gumbel_forward(const NmParams& p, int64_t tile_begin, int64_t tile_end) {
  const ChunkGenerator philox(p.seed, p.offset);
  Scratch<S> sc(p);
  const S scale = p.scale ? static_cast<S>(*p.scale) : S(1.0f);
  bool nan_seen = false;
  const int64_t end_group = std::min(tile_end * kNmTileGroups, p.groups);
  for (int64_t g0 = tile_begin * kNmTileGroups; g0 < end_group; g0 += kBlock) {
    const int n = static_cast<int>(std::min<int64_t>(kBlock, end_group - g0));
    nan_seen |= perturbed_logits<V, S, ST>(p, philox, g0, n, sc);
    if (p.hard) {
      for (int q = 0; q < n; ++q) sc.kb[q] = nm_argmax_bits(sc.a.data() + q * p.c, p.c, p.patterns);
      expand_bits(sc.kb, n, p.m, sc.keep.data());
    } else {
      to_rows(sc.a.data(), n, p.c, sc.rows.data());
      elementwise<V, S>(n, [&](auto lane, int64_t q) {
        using F = decltype(lane);
        softmax_lanes<F>(p, sc, static_cast<int>(q));
        soft_mask_lanes<F>(p, sc, static_cast<int>(q));
      });
      for (int j = 0; j < p.m; ++j)
        for (int q = 0; q < n; ++q) sc.keep[q * p.m + j] = sc.m_rows[j * kBlock + q];
    }
    const WT* w = in<WT>(p.weight, g0 * p.m);
    WT* masked = out<WT>(p.masked, g0 * p.m);
    elementwise<V, S>(static_cast<int64_t>(n) * p.m, [&](auto lane, int64_t j) {
      using F = decltype(lane);
      const F wv = load_as<F>(w + j), kv = load_as<F>(sc.keep.data() + j);
      const F sv(scale);
      store_as<F>(masked + j, p.hard ? masked_weight(kv > F(0.0f), wv, sv) : (wv * kv) * sv);
    });
  }
  return nan_seen;
}

// Per-tile lane sums of the Smart Rescale terms (tiles.h order, group q of the tile in lane
// q % kTileLanes): whole-vector lane-blocks first, then the tensor's last groups one at a time.
template <class V, class S>
struct GroupSums {
  TileSums<typename PartOf<V>::type> vector;
  TileSums<S> lane;
  bool spilled = false;

  void clear() {
    vector.clear();
    lane.clear();
    spilled = false;
  }
  template <class F>
  void add(int64_t q, F v) {
    if constexpr (std::is_same<F, V>::value) {
      vector.add(q, v);
    } else {
      if (!spilled) {
        vector.spill(lane.acc);
        spilled = true;
      }
      lane.add(q, v);
    }
  }
  double total() {
    if constexpr (std::is_same<V, S>::value) {
      return tree_total(vector.acc);
    } else {
      if (!spilled) vector.spill(lane.acc);
      spilled = true;
      return tree_total(lane.acc);
    }
  }
};

template <class V, class S, class ST, class WT>
bool gumbel_backward(const NmParams& p, int64_t tile_begin, int64_t tile_end) {
  const ChunkGenerator philox(p.seed, p.offset);
  Scratch<S> sc(p);
  const S scale = p.scale ? static_cast<S>(*p.scale) : S(1.0f);
  const S coef = static_cast<S>(p.logit_scale) * static_cast<S>(p.inv_temperature);
  bool nan_seen = false;
  GroupSums<V, S> sums;
  for (int64_t t = tile_begin; t < tile_end; ++t) {
    sums.clear();
    const int64_t tile_start = t * kNmTileGroups;
    const int64_t end_group = std::min(tile_start + kNmTileGroups, p.groups);
    for (int64_t g0 = tile_start; g0 < end_group; g0 += kBlock) {
      const int n = static_cast<int>(std::min<int64_t>(kBlock, end_group - g0));
      nan_seen |= perturbed_logits<V, S, ST>(p, philox, g0, n, sc);
      if (p.hard) {
        for (int q = 0; q < n; ++q)
          sc.kb[q] = nm_argmax_bits(sc.a.data() + q * p.c, p.c, p.patterns);
        expand_bits(sc.kb, n, p.m, sc.keep.data());
      }
      to_rows(sc.a.data(), n, p.c, sc.rows.data());
      const WT* w = in<WT>(p.weight, g0 * p.m);
      const WT* g = in<WT>(p.grad, g0 * p.m);  // may alias masked: read here, written last
      elementwise<V, S>(static_cast<int64_t>(n) * p.m, [&](auto lane, int64_t j) {
        using F = decltype(lane);
        store_as<F>(sc.hw.data() + j, load_as<F>(w + j) * load_as<F>(g + j));
      });
      to_rows(sc.hw.data(), n, p.m, sc.hw_rows.data());
      elementwise<V, S>(n, [&](auto lane, int64_t q64) {
        using F = decltype(lane);
        using U = typename Lanes<NoiseLane<F>>::U;
        const int q = static_cast<int>(q64);
        softmax_lanes<F>(p, sc, q);
        const F sv(scale), cv(coef);
        // mean = sum_k y_k s_k, s_k = sum over the kept positions of candidate k of h_j.
        auto s_of = [&](int k) {
          F s(0.0f);
          for (int j = 0; j < p.m; ++j)
            if ((p.patterns[k] >> j) & 1u) s = s + load_as<F>(sc.hw_rows.data() + j * kBlock + q) * sv;
          return s;
        };
        F mean(0.0f);
        for (int k = 0; k < p.c; ++k) mean = mean + load_as<F>(sc.y.data() + k * kBlock + q) * s_of(k);
        for (int k = 0; k < p.c; ++k)
          store_as<F>(sc.rows.data() + k * kBlock + q,
                      nm_logit_grad(cv, load_as<F>(sc.y.data() + k * kBlock + q), s_of(k), mean));
        // The Smart Rescale term of each group: sum over j of w_j g_j m_j, j in order.
        F term(0.0f);
        if (p.hard) {
          U bits;
          if constexpr (std::is_same<F, double>::value)
            bits = sc.kb[q];
          else
            bits = IO<F>::load_bits(sc.kb + q);
          for (int j = 0; j < p.m; ++j) {
            const auto kept = (bits & U(1u << j)) == U(1u << j);
            term = term + select(kept, load_as<F>(sc.hw_rows.data() + j * kBlock + q), F(0.0f));
          }
        } else {
          soft_mask_lanes<F>(p, sc, q);
          for (int j = 0; j < p.m; ++j)
            term = term + load_as<F>(sc.hw_rows.data() + j * kBlock + q) *
                              load_as<F>(sc.m_rows.data() + j * kBlock + q);
        }
        sums.add(g0 - tile_start + q, term);
      });
      // dLoss/dpi, group-major.
      if (p.grad_scores) {
        ST* gs = out<ST>(p.grad_scores, g0 * p.c);
        for (int q = 0; q < n; ++q)
          for (int k = 0; k < p.c; ++k)
            store_as<S>(gs + q * p.c + k, sc.rows[k * kBlock + q]);
      }
      if (!p.hard)
        for (int j = 0; j < p.m; ++j)
          for (int q = 0; q < n; ++q) sc.keep[q * p.m + j] = sc.m_rows[j * kBlock + q];
      WT* grad_weight = out<WT>(p.grad_weight, g0 * p.m);
      WT* masked = out<WT>(p.masked, g0 * p.m);
      if (grad_weight || masked) {
        elementwise<V, S>(static_cast<int64_t>(n) * p.m, [&](auto lane, int64_t j) {
          using F = decltype(lane);
          const F gv = load_as<F>(g + j), wv = load_as<F>(w + j), kv = load_as<F>(sc.keep.data() + j);
          const F sv(scale);
          const auto kept = kv > F(0.0f);
          if (grad_weight)
            store_as<F>(grad_weight + j, p.hard ? select(kept, gv * sv, F(0.0f)) : (gv * kv) * sv);
          if (masked)
            store_as<F>(masked + j, p.hard ? masked_weight(kept, wv, sv) : (wv * kv) * sv);
        });
      }
    }
    if (p.partials) p.partials[t] = sums.total();
  }
  return nan_seen;
}

// ---- nm_topk and srste ------------------------------------------------------------------------------

// Each group's top-n bits of |key| (scores for nm_topk, the weight for srste); true on NaN.
template <class S, class KT>
bool top_bits(const NmParams& p, const KT* key, int n, uint32_t* kb) {
  using K = decltype(nm_magnitude_key(S()));
  bool nan_seen = false;
  K keys[kNmMaxM];
  for (int q = 0; q < n; ++q) {
    for (int j = 0; j < p.m; ++j) {
      const S v = static_cast<S>(load_lane(key + q * p.m + j));
      nan_seen = nan_seen || is_nan(v);
      keys[j] = nm_magnitude_key(v);
    }
    kb[q] = nm_top_bits(keys, p.n, p.m);
  }
  return nan_seen;
}

template <bool kBackward, class V, class S, class ST, class WT>
bool topk_tiles(const NmParams& p, int64_t tile_begin, int64_t tile_end) {
  Scratch<S> sc(p);
  const bool srste = p.rule == NmRule::kSrste;
  const S decay = static_cast<S>(p.decay);
  bool nan_seen = false;
  const int64_t end_group = std::min(tile_end * kNmTileGroups, p.groups);
  for (int64_t g0 = tile_begin * kNmTileGroups; g0 < end_group; g0 += kBlock) {
    const int n = static_cast<int>(std::min<int64_t>(kBlock, end_group - g0));
    const int64_t e0 = g0 * p.m;
    nan_seen |= srste ? top_bits<S>(p, in<WT>(p.weight, e0), n, sc.kb)
                      : top_bits<S>(p, in<ST>(p.scores, e0), n, sc.kb);
    expand_bits(sc.kb, n, p.m, sc.keep.data());
    const WT* w = in<WT>(p.weight, e0);
    const WT* g = kBackward ? in<WT>(p.grad, e0) : nullptr;  // may alias masked
    const ST* s = srste ? nullptr : in<ST>(p.scores, e0);
    ST* grad_scores = kBackward ? out<ST>(p.grad_scores, e0) : nullptr;
    WT* grad_weight = kBackward ? out<WT>(p.grad_weight, e0) : nullptr;
    WT* masked = out<WT>(p.masked, e0);
    elementwise<V, S>(static_cast<int64_t>(n) * p.m, [&](auto lane, int64_t j) {
      using F = decltype(lane);
      const F wv = load_as<F>(w + j);
      const auto kept = load_as<F>(sc.keep.data() + j) > F(0.0f);
      if constexpr (kBackward) {
        const F gv = load_as<F>(g + j);
        if (grad_scores) {
          const F sv = load_as<F>(s + j);
          if constexpr (std::is_same<F, double>::value)
            store_as<F>(grad_scores + j, nm_topk_grad_scores(gv, wv, sv));
          else
            store_as<F>(grad_scores + j, edge_popup_grad_scores(gv, wv, sv));
        }
        if (grad_weight)
          store_as<F>(grad_weight + j,
                      srste ? srste_grad_weight(kept, gv, wv, F(decay)) : select(kept, gv, F(0.0f)));
      }
      if (masked) store_as<F>(masked + j, select(kept, wv, F(0.0f)));
    });
  }
  return nan_seen;
}

template <bool kBackward>
bool run_nm(const NmParams& p, int64_t tile_begin, int64_t tile_end) {
  return visit_dtypes(p.score_dtype, p.weight_dtype, [&](auto* st, auto* wt) -> bool {
    using ST = std::remove_pointer_t<decltype(st)>;
    using WT = std::remove_pointer_t<decltype(wt)>;
    using V = VectorOf<ST, WT>;
    using S = ScalarOf<ST, WT>;
    if (p.rule != NmRule::kGumbel) return topk_tiles<kBackward, V, S, ST, WT>(p, tile_begin, tile_end);
    if constexpr (kBackward)
      return gumbel_backward<V, S, ST, WT>(p, tile_begin, tile_end);
    else
      return gumbel_forward<V, S, ST, WT>(p, tile_begin, tile_end);
  });
}

bool run_nm_forward(const NmParams& p, int64_t tile_begin, int64_t tile_end) {
  return run_nm<false>(p, tile_begin, tile_end);
}
bool run_nm_backward(const NmParams& p, int64_t tile_begin, int64_t tile_end) {
  return run_nm<true>(p, tile_begin, tile_end);
}

}  // namespace
SP_NAMESPACE_END

SP_KERNEL_TABLE(NmKernels, &run_nm_forward, &run_nm_backward)
