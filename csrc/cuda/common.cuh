// Device helpers shared by the CUDA kernels (aslp.cu, noise.cu): packs of the four consecutive
// elements that one Philox block feeds, loaded and stored with one vector access when the host
// has checked the alignment, and launch sizing. Device code sees raw pointers and POD only.
#pragma once
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // not ATen/cuda/CUDAContext.h: that pulls in cuBLAS/cuSPARSE
#include <stdint.h>

#include <type_traits>

#include <sparseprune/params.h>

namespace sparseprune {
namespace device {

constexpr int kThreads = 256;            // threads per block of the element kernels
constexpr int64_t kMaxBlocks = 1 << 16;  // grid cap; the kernels loop (grid-stride) beyond it

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

// The vector type of one access to a pack: 8 bytes for 16-bit types, else 16 (two for double).
// Stores go through __stwb (st.global.wb, the default cache policy, as inline asm): left to
// itself, nvcc splits some pack stores back into scalar stores.
template <class T>
using PackWord = std::conditional_t<sizeof(Pack4<T>) == 8, uint2, uint4>;
template <class T>
constexpr int kPackWords = sizeof(Pack4<T>) / sizeof(PackWord<T>);

// Elements [0, n) of the pack starting at p (1 <= n <= 4); the rest are zero. kVec: the caller
// checked pack_aligned, so a full pack is one vector load (two for double).
template <bool kVec, class T>
__device__ __forceinline__ Pack4<T> load_pack(const T* p, int n) {
  Pack4<T> r{};
  if (kVec && n == 4) {
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

template <bool kVec, class T>
__device__ __forceinline__ void store_pack(T* p, const Pack4<T>& x, int n) {
  if (kVec && n == 4) {
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

// A score (any storage type) as float, the type of all score math (as on the CPU).
template <class T>
__device__ __forceinline__ float load_float(const T* p) {
  return static_cast<float>(load_lane(p));
}

// Elements left in the pack that starts at element e.
__device__ __forceinline__ int pack_size(int64_t numel, int64_t e) {
  return numel - e < 4 ? static_cast<int>(numel - e) : 4;
}

// Grid-stride loop over Philox blocks 0, 1, ... (one per thread and iteration).
#define SP_FOR_EACH_PHILOX_BLOCK(b, num_blocks)                                        \
  for (int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;       \
       b < (num_blocks); b += static_cast<int64_t>(gridDim.x) * blockDim.x)

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
