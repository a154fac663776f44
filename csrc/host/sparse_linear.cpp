// sparseprune::sparse_linear: F.linear with a compressed (CSR or bitmap) float32 weight.
// Batch 1 runs the sparse x vector kernel; larger batches transpose the input once so that every
// kept weight scales a contiguous row of it (the sparse x dense kernel), and write the output in
// its usual (batch, out_features) layout directly.
#include "check.h"
#include "ops.h"
#include "sparse_weight.h"

namespace sparseprune {
namespace host {

at::Tensor sparse_linear(const at::Tensor& input, const at::Tensor& values,
                         const at::Tensor& row_ptr, const at::Tensor& indices,
                         const OptTensor& bias, std::string format, at::IntArrayRef weight_shape) {
  const char* op = "sparse_linear";
  TORCH_CHECK_VALUE(weight_shape.size() == 2, "sparseprune::", op,
                    ": weight_shape must be (out_features, in_features), got ", weight_shape);
  const int64_t out_features = weight_shape[0], in_features = weight_shape[1];
  const SparseWeight w =
      sparse_weight(op, values, row_ptr, indices, format, out_features, in_features);
  check_input(op, input, values);
  check_in_features(op, input, in_features);
  at::Tensor bias_holder;
  const float* b = checked_bias(op, bias, out_features, input, bias_holder);

  std::vector<int64_t> out_shape(input.sizes().begin(), input.sizes().end());
  out_shape.back() = out_features;
  const int64_t batch = c10::multiply_integers(input.sizes().begin(), input.sizes().end() - 1);
  const at::Tensor x = input.reshape({batch, in_features}).contiguous();
  at::Tensor y = at::empty({batch, out_features}, input.options());
  if (batch == 1) {
    SpmvParams p;
    p.w = w.matrix;
    p.bias = b;
    p.x = x.data_ptr<float>();
    p.y = y.data_ptr<float>();
    run_spmv(op, p, x.device());
  } else if (batch > 1) {
    const at::Tensor xt = transposed(x);  // (in_features, batch)
    const at::Tensor offsets = strided_rows(in_features, batch, x.device());
    SpmmParams p;
    p.w = w.matrix;
    p.bias = b;
    p.rows_per_group = std::max<int64_t>(out_features, 1);
    p.ncols = batch;
    p.x = xt.data_ptr<float>();
    p.x_offsets = offsets.data_ptr<int64_t>();
    p.y = y.data_ptr<float>();
    p.y_row_stride = 1;  // Y[n, c] of the kernel is output element (c, n)
    p.y_col_stride = out_features;
    run_spmm(op, p, x.device());
  }
  return y.view(out_shape);
}

}  // namespace host
}  // namespace sparseprune
