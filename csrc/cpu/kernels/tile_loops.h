// The tile loops the elementwise CPU kernels share: chunks of kChunk elements in order, whole ones
// with the ISA's vector type and the tensor's last partial one a lane at a time, each chunk's
// Philox words, and per-tile sums in the fixed lane order of sparseprune/tiles.h.
#pragma once
#include <array>

#include "../simd/vec.h"
#include "../tables.h"

SP_NAMESPACE_BEGIN

constexpr int kChunk = 64;  // elements per ChunkGenerator call: 16 Philox blocks
static_assert(kTileElems % kChunk == 0, "a tile holds whole chunks");

// One past the last element of tile t.
inline int64_t end_of_tile(int64_t numel, int64_t t) {
  return (t + 1) * kTileElems < numel ? (t + 1) * kTileElems : numel;
}

// kTileLanes running sums: element e of a tile always goes to lane e % kTileLanes, whatever the
// vector width, so with tree_total the sums are bit-identical on every ISA and thread count. V is
// the vector type (lanes kept in registers) or a scalar (one slot per lane).
template <class V>
struct TileSums {
  static constexpr int kWidth = Lanes<V>::kWidth;
  V acc[kTileLanes / kWidth];

  void clear() {
    for (V& a : acc) a = V(0.0f);
  }
  // Adds the kWidth values of the group that starts at tile element e (e % kWidth == 0).
  void add(int64_t e, V v) {
    V& a = acc[(e % kTileLanes) / kWidth];
    a = a + v;
  }
  template <int N>
  void add(int64_t e, const Multi<V, N>& v) {
    SP_UNROLL for (int k = 0; k < N; ++k) add(e + k * kWidth, v.part[k]);
  }
  // The lane sums, in lane order.
  template <class S>
  void spill(S* lanes) const {
    if constexpr (kWidth == 1) {
      for (int i = 0; i < kTileLanes; ++i) lanes[i] = acc[i];
    } else {
      alignas(64) float tmp[kTileLanes];
      for (int k = 0; k < kTileLanes / kWidth; ++k) IO<V>::store(tmp + k * kWidth, acc[k]);
      for (int i = 0; i < kTileLanes; ++i) lanes[i] = tmp[i];
    }
  }
};

// Each tile t of [tile_begin, tile_end): its chunks in order as group(lane, first, n, pos, sums),
// lane being V() for whole chunks and float() for the tensor's last partial one, pos the chunk's
// position in the tile, sums K per-tile accumulators (in WT's weight lane type) whose totals go
// to finish(t, totals).
template <class V, class WT, int K, class Group, class Finish>
void for_each_tile(int64_t numel, int64_t tile_begin, int64_t tile_end, Group&& group,
                   Finish&& finish) {
  using VectorSum = TileSums<typename PartOf<WeightLane<V, WT>>::type>;
  using LaneSum = TileSums<WeightLane<float, WT>>;
  for (int64_t t = tile_begin; t < tile_end; ++t) {
    const int64_t begin = t * kTileElems, end = end_of_tile(numel, t);
    std::array<VectorSum, K> vector_sums;
    for (VectorSum& s : vector_sums) s.clear();
    int64_t c = begin;
    for (; c + kChunk <= end; c += kChunk) group(V(), c, kChunk, c - begin, vector_sums.data());
    std::array<LaneSum, K> lane_sums;
    for (int k = 0; k < K; ++k) vector_sums[k].spill(lane_sums[k].acc);
    if (c < end) group(float(), c, static_cast<int>(end - c), c - begin, lane_sums.data());
    std::array<double, K> totals;
    for (int k = 0; k < K; ++k) totals[k] = tree_total(lane_sums[k].acc);
    finish(t, totals.data());
  }
}

// for_each_tile for the noise-driven passes: group(lane, first, n, bits, pos, sums) also gets the
// chunk's Philox words under (seed, offset) (element i: word i % 4 of block i / 4).
template <class V, class WT, int K, class Group, class Finish>
void for_each_philox_tile(uint64_t seed, uint64_t offset, int64_t numel, int64_t tile_begin,
                          int64_t tile_end, Group&& group, Finish&& finish) {
  alignas(64) uint32_t bits[kChunk];
  const ChunkGenerator philox(seed, offset);
  auto with_bits = [&](auto lane, int64_t first, int n, int64_t pos, auto* sums) {
    philox(static_cast<uint64_t>(first) / 4, bits);
    group(lane, first, n, bits, pos, sums);
  };
  for_each_tile<V, WT, K>(numel, tile_begin, tile_end, with_bits, finish);
}

// The `finish` of passes without sums (K = 0).
inline constexpr auto kNoTotals = [](int64_t, const double*) {};

SP_NAMESPACE_END
