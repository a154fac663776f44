// CUDA kernels of the sparse inference ops (the same jobs as csrc/cpu/kernels/sp*_kernel.cpp).
//   spmv: one warp per output row; lanes stride over the row's kept weights (CSR) or its bitmap
//         words (a warp scan of the words' bit counts gives each lane its first value), then a
//         warp reduction.
//   spmm: one thread per (row, column) of Y; a warp covers 32 consecutive columns, so its reads of
//         X are coalesced and the row's kept weights and X's row offsets are read once per warp
//         (a broadcast).
#include <c10/cuda/CUDAException.h>

#include <algorithm>

#include <sparseprune/sparse_params.h>

#include "common.cuh"
#include "launch.h"

namespace sparseprune {
namespace device {
namespace {

constexpr int kSpmvThreads = 256;  // 8 rows per block
constexpr int kSpmmThreads = 128;  // columns per block
constexpr unsigned kFullWarp = 0xFFFFFFFFu;
constexpr int64_t kMaxGridYZ = 65535;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int d = 16; d > 0; d /= 2) v += __shfl_xor_sync(kFullWarp, v, d);
  return v;
}

// This lane's share of row n's dot product with x.
__device__ __forceinline__ float spmv_lane(const SparseMatrix& w, const float* __restrict__ x,
                                           int64_t n, int lane) {
  float acc = 0.0f;
  const int64_t begin = w.row_ptr[n], end = w.row_ptr[n + 1];
  if (w.format == SparseFormat::kCsr) {
    for (int64_t j = begin + lane; j < end; j += 32) acc += w.values[j] * __ldg(x + w.col_idx[j]);
    return acc;
  }
  const uint32_t* words = w.bitmap + n * w.words_per_row;
  int64_t consumed = begin;  // values used by the previous rounds of 32 words
  for (int64_t w0 = 0; w0 < w.words_per_row; w0 += 32) {
    const int64_t word = w0 + lane;
    uint32_t bits = word < w.words_per_row ? words[word] : 0u;
    const int count = __popc(bits);
    int inclusive = count;
#pragma unroll
    for (int d = 1; d < 32; d *= 2) {
      const int other = __shfl_up_sync(kFullWarp, inclusive, d);
      if (lane >= d) inclusive += other;
    }
    const float* v = w.values + consumed + (inclusive - count);
    for (; bits; bits &= bits - 1) acc += *v++ * __ldg(x + 32 * word + (__ffs(bits) - 1));
    consumed += __shfl_sync(kFullWarp, inclusive, 31);
  }
  return acc;
}

__global__ void __launch_bounds__(kSpmvThreads) spmv_kernel(SpmvParams p) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t n = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
       n < p.w.rows; n += warps) {
    const float dot = warp_sum(spmv_lane(p.w, p.x, n, lane));
    if (lane == 0) p.y[n] = p.bias ? dot + p.bias[n] : dot;
  }
}

// Sum over row n's kept weights (column k, value v) of v * x[offsets[k]].
__device__ __forceinline__ float spmm_dot(const SparseMatrix& w, const float* __restrict__ x,
                                          const int64_t* __restrict__ offsets, int64_t n) {
  float acc = 0.0f;
  const int64_t begin = w.row_ptr[n], end = w.row_ptr[n + 1];
  if (w.format == SparseFormat::kCsr) {
    for (int64_t j = begin; j < end; ++j) acc += w.values[j] * __ldg(x + offsets[w.col_idx[j]]);
    return acc;
  }
  const uint32_t* words = w.bitmap + n * w.words_per_row;
  const float* v = w.values + begin;
  for (int64_t word = 0; word < w.words_per_row; ++word)
    for (uint32_t bits = words[word]; bits; bits &= bits - 1)
      acc += *v++ * __ldg(x + offsets[32 * word + __ffs(bits) - 1]);
  return acc;
}

__global__ void __launch_bounds__(kSpmmThreads) spmm_kernel(SpmmParams p) {
  const int64_t columns = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < p.ncols;
       c += columns) {
    for (int64_t b = blockIdx.z; b < p.batch; b += gridDim.z) {
      for (int64_t n = blockIdx.y; n < p.w.rows; n += gridDim.y) {
        const int64_t* offsets = p.x_offsets + (n / p.rows_per_group) * p.w.cols;  // n's group
        const float dot = spmm_dot(p.w, p.x + b * p.x_batch_stride + c, offsets, n);
        p.y[b * p.y_batch_stride + n * p.y_row_stride + c * p.y_col_stride] =
            p.bias ? dot + p.bias[n] : dot;
      }
    }
  }
}

}  // namespace
}  // namespace device

namespace cuda {

void sparse_spmv(const SpmvParams& p, int device_index) {
  if (p.w.rows <= 0) return;
  device::on_device(device_index, [&](cudaStream_t stream) {
    const unsigned grid = device::grid_for(p.w.rows, device::kSpmvThreads / 32);
    device::spmv_kernel<<<grid, device::kSpmvThreads, 0, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void sparse_spmm(const SpmmParams& p, int device_index) {
  if (p.w.rows <= 0 || p.ncols <= 0 || p.batch <= 0) return;
  device::on_device(device_index, [&](cudaStream_t stream) {
    const dim3 grid(device::grid_for(p.ncols, device::kSpmmThreads),
                    static_cast<unsigned>(std::min(p.w.rows, device::kMaxGridYZ)),
                    static_cast<unsigned>(std::min(p.batch, device::kMaxGridYZ)));
    device::spmm_kernel<<<grid, device::kSpmmThreads, 0, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace cuda
}  // namespace sparseprune
