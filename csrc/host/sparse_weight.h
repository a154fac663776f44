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

// Checks the tensors of a rows x cols compressed weight for `op` (dtypes, shapes, devices, and on
// CPU the two ends of row_ptr) and views them as a SparseMatrix. format: "csr" or "bitmap".
// The structure in between (ascending columns, offsets, bit counts) is checked once, when the
// weight is built or loaded (sparseprune/sparse.py), not on every call.
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

// y = W x for one vector x (p.x, p.y set), on x's device.
void run_spmv(const char* op, const SpmvParams& p, const at::Device& device);

// Y = W X for p.batch problems, on the device; on CPU spread over all threads in tasks of
// (problem, chunk of columns, block of rows).
void run_spmm(const char* op, const SpmmParams& p, const at::Device& device);

}  // namespace host
}  // namespace sparseprune
