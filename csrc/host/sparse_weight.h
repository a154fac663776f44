// The compressed weight the sparse inference ops take (values, row_ptr, indices, format): its
// checks, its view as the kernels' SparseMatrix, and the device-routed kernel runs shared by
// sparse_linear and sparse_conv2d.
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <string>

#include <sparseprune/sparse_params.h>

namespace sparseprune {
namespace host {

// A validated compressed weight: the tensors stay alive (contiguous) while `matrix` points into them.
struct SparseWeight {
  at::Tensor values, row_ptr, indices;
  SparseMatrix matrix;
};

// Checks the tensors of a rows x cols compressed weight for `op` (dtypes, shapes, devices) and
// views them as a SparseMatrix. format: "csr" or "bitmap".
// And the structure, on every call, so that no input makes a kernel read out of bounds: row_ptr
// rises from 0 to the number of values, CSR columns lie in [0, cols), a bitmap row sets as many
// bits as it has values and none past the last column. O(rows + nnz) (bitmap: one popcount per
// word); on CUDA a few reductions and one host sync. (Ascending CSR columns are checked where a
// weight is built, sparseprune/ops/formats.py: the kernels' sums do not depend on the order.)
SparseWeight sparse_weight(const char* op, const at::Tensor& values, const at::Tensor& row_ptr,
                           const at::Tensor& indices, const std::string& format, int64_t rows,
                           int64_t cols);

// input must be float32 on the weight's device (a TypeError / ValueError naming it otherwise).
void check_input(const char* op, const at::Tensor& input, const at::Tensor& values);

// The optional bias (check_bias against the checked input) as contiguous float32 data kept alive
// by `holder`, or nullptr.
const float* checked_bias(const char* op, const std::optional<at::Tensor>& bias, int64_t rows,
                          const at::Tensor& input, at::Tensor& holder);

// Row offsets 0, stride, 2 stride, ... (rows entries, int64) on `device`: X rows `stride` apart.
at::Tensor strided_rows(int64_t rows, int64_t stride, const at::Device& device);

// The transpose of a contiguous 2-D float32 tensor, contiguous; on CPU by the ISA's tile kernel
// with the rows split among threads.
at::Tensor transposed(const at::Tensor& x);

// y = W x for one vector x (p.x, p.y set), on x's device.
void run_spmv(const char* op, const SpmvParams& p, const at::Device& device);

// Y = W X for p.batch problems, on the device; on CPU spread over all threads in tasks of
// (problem, chunk of columns, block of rows).
void run_spmm(const char* op, const SpmmParams& p, const at::Device& device);

}  // namespace host
}  // namespace sparseprune
