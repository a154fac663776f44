// Device helpers shared by the CUDA kernels: packs of the four consecutive elements that one
// Philox block feeds, loaded and stored with one vector access when the host has checked the
// alignment; the block-wide reductions (integer scans, the per-tile float sum in the CPU's lane
// order, the partials in tile order); launch sizing and the launch frame. Device code sees raw
// pointers and POD only.
#pragma once
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // not ATen/cuda/CUDAContext.h: that pulls in cuBLAS/cuSPARSE
#include <stdint.h>

#include <type_traits>

#include <sparseprune/params.h>

namespace sparseprune {
namespace device {

constexpr int kThreads = 256;            // threads per block of every kernel
constexpr int64_t kMaxBlocks = 1 << 16;  // grid cap; the kernels loop (grid-stride) beyond it
// Tile kernels run one block per tile; each thread takes the tile's packs threadIdx.x,
// threadIdx.x + kThreads, ... (kTilePacks / kThreads rounds, the same for every thread).
constexpr int kTilePacks = static_cast<int>(kTileElems / 4);
static_assert(kTilePacks % kThreads == 0, "every thread runs the same number of rounds");

// Weight math in double for float64 weights, else in float (the CPU's WeightLane rule).
template <class WT>
using WeightMath = std::conditional_t<std::is_same<WT, double>::value, double, float>;

// The four elements of one Philox block. Aligned to their size, capped at 16 bytes (the widest
// vector access): 8 bytes for 16-bit types, 16 for float and uint32, 16 (two accesses) for double.
template <class T>
struct alignas(4 * sizeof(T) < 16 ? 4 * sizeof(T) : 16) Pack4 {
  T v[4];
};

// Host side: whether `p` (nullptr allowed) may be accessed as Pack4<T> at every multiple of 4
// elements. Tensors are usually 256-byte aligned, but a storage offset can break that.
template <class T>
inline bool pack_aligned(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % alignof(Pack4<T>) == 0;
}

// Whether every tensor a mask pass may touch allows vector accesses (StochasticParams and
// TopkParams share these fields).
template <class ST, class WT, class Params>
bool packs_aligned(const Params& p) {
  return pack_aligned<ST>(p.scores) && pack_aligned<WT>(p.weight) && pack_aligned<WT>(p.masked) &&
         pack_aligned<WT>(p.grad) && pack_aligned<ST>(p.grad_scores) &&
         pack_aligned<WT>(p.grad_weight);
}

// The vector type of one access to a pack: 8 bytes for 16-bit types, else 16 (two for double).
// Stores go through __stwb (st.global.wb, the default cache policy, as inline asm): left to
// itself, nvcc splits some pack stores back into scalar stores.
template <class T>
using PackWord = std::conditional_t<sizeof(Pack4<T>) == 8, uint2, uint4>;
template <class T>
constexpr int kPackWords = sizeof(Pack4<T>) / sizeof(PackWord<T>);

// Elements [0, n) of the pack starting at p (1 <= n <= 4); the rest are zero. `vec`: the host
// checked pack_aligned, so a full pack is one vector load (two for double). A runtime flag rather
// than a template parameter: one kernel body per dtype pair keeps the build time down, and the
// branch is uniform over the grid.
template <class T>
__device__ __forceinline__ Pack4<T> load_pack(const T* p, int n, bool vec) {
  Pack4<T> r{};
  if (vec && n == 4) {
    PackWord<T> words[kPackWords<T>];
#pragma unroll
    for (int k = 0; k < kPackWords<T>; ++k) words[k] = reinterpret_cast<const PackWord<T>*>(p)[k];
    __builtin_memcpy(&r, words, sizeof r);
    return r;
  }
#pragma unroll
  for (int i = 0; i < 4; ++i)
    if (i < n) r.v[i] = p[i];
  return r;
}

template <class T>
__device__ __forceinline__ void store_pack(T* p, const Pack4<T>& x, int n, bool vec) {
  if (vec && n == 4) {
    PackWord<T> words[kPackWords<T>];
    __builtin_memcpy(words, &x, sizeof x);
#pragma unroll
    for (int k = 0; k < kPackWords<T>; ++k)
      __stwb(reinterpret_cast<PackWord<T>*>(p) + k, words[k]);
    return;
  }
#pragma unroll
  for (int i = 0; i < 4; ++i)
    if (i < n) p[i] = x.v[i];
}

template <class T>
__device__ __forceinline__ const T* in(const void* p, int64_t e) {
  return static_cast<const T*>(p) + e;
}
template <class T>
__device__ __forceinline__ T* out(void* p, int64_t e) {
  return static_cast<T*>(p) + e;
}

// A score (any storage type) as float, the type of all score math (as on the CPU).
template <class T>
__device__ __forceinline__ float load_float(const T* p) {
  return static_cast<float>(load_lane(p));
}

// Elements of the tensor in the pack that starts at element e (0 past the end).
__device__ __forceinline__ int pack_size(int64_t numel, int64_t e) {
  return e >= numel ? 0 : numel - e < 4 ? static_cast<int>(numel - e) : 4;
}

// Grid-stride loops over Philox blocks (= packs) and over tiles (one block per tile).
#define SP_FOR_EACH_PHILOX_BLOCK(b, num_blocks)                                        \
  for (int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;       \
       b < (num_blocks); b += static_cast<int64_t>(gridDim.x) * blockDim.x)
#define SP_FOR_EACH_TILE(t, numel) \
  for (int64_t t = blockIdx.x; t < num_tiles(numel); t += gridDim.x)

// Exclusive prefix sum of v over the block's threads in thread order; `total` gets the block's
// sum. Integers, so exact whatever the order. Every thread of the block must call it.
__device__ __forceinline__ int block_scan(int v, int& total) {
  __shared__ int warp_totals[kThreads / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int inclusive = v;
#pragma unroll
  for (int d = 1; d < 32; d *= 2) {
    const int x = __shfl_up_sync(0xFFFFFFFFu, inclusive, d);
    if (lane >= d) inclusive += x;
  }
  if (lane == 31) warp_totals[warp] = inclusive;
  __syncthreads();
  int before = 0;
  total = 0;
#pragma unroll
  for (int w = 0; w < kThreads / 32; ++w) {
    before += w < warp ? warp_totals[w] : 0;
    total += warp_totals[w];
  }
  __syncthreads();  // the next call overwrites warp_totals
  return before + inclusive - v;
}

// A tile's float sum exactly as the CPU kernels compute it (the lane order and tree of
// sparseprune/tiles.h), so partials match the CPU bit for bit: `terms` (shared memory) holds the
// tile's kTileElems terms in element order; lane j (0..15) of warp 0 adds terms j, j + 16,
// j + 32, ... in order from +0; then the 16 lane sums meet in tree_total's tree (j += j + 8,
// j += j + 4, ...). Terms past the end of the tensor must be +0: a lane sum started from +0 is
// never -0, so adding +0 leaves it unchanged. Nothing depends on scheduling. Every thread of the
// block must call it; the result is valid in thread 0. The 256-add chain costs ~1-2k cycles per
// tile, hidden behind the other resident blocks' loads.
template <class W>
__device__ __forceinline__ double tile_sum(const W* terms) {
  constexpr int kLanes = kTileLanes;
  __syncthreads();
  double total = 0.0;
  if (threadIdx.x < kLanes) {
    W acc = W(0.0f);
    for (int r = 0; r < kTileElems / kLanes; ++r) acc = acc + terms[r * kLanes + threadIdx.x];
    // Lanes >= w also add (a value of their own segment of 16), but their sums are never read.
#pragma unroll
    for (int w = kLanes / 2; w >= 1; w /= 2) acc = acc + __shfl_down_sync(0xFFFFu, acc, w, kLanes);
    total = static_cast<double>(acc);
  }
  __syncthreads();  // the next tile overwrites `terms`
  return total;
}

// *out = sum_in_tile_order (sparseprune/tiles.h) rounded to T: the CPU host's reduction, without
// a host sync. One thread, because that order is a single dependency chain; a layer of n tiles
// costs about n dependent double additions.
template <class T>
__global__ void sum_in_tile_order_kernel(const double* partials, int64_t n, T* out) {
  *out = static_cast<T>(sum_in_tile_order(partials, n));
}

template <class T>
void launch_sum_in_tile_order(const double* partials, int64_t n, T* out, cudaStream_t stream) {
  sum_in_tile_order_kernel<T><<<1, 1, 0, stream>>>(partials, n, out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Every launcher's frame: launch(stream) on the current stream of `device`, under a device guard.
template <class Launch>
void on_device(int device_index, Launch&& launch) {
  const auto index = static_cast<c10::DeviceIndex>(device_index);
  c10::cuda::CUDAGuard guard(index);
  launch(c10::cuda::getCurrentCUDAStream(index).stream());
}

inline unsigned grid_for(int64_t items, int64_t per_block) {
  const int64_t blocks = (items + per_block - 1) / per_block;
  return static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

}  // namespace device
}  // namespace sparseprune
