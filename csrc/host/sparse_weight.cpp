#include "sparse_weight.h"

#include <ATen/Parallel.h>

#include <algorithm>

#include "check.h"
#include "route.h"

namespace sparseprune {
namespace host {
namespace {

constexpr int64_t kRowBlock = 16;          // rows per CPU task: one cache line of a Linear output
constexpr int64_t kMinTaskWork = 1 << 14;  // vector FMAs below which a second thread costs more
constexpr int64_t kCacheBytes = 1 << 20;   // the slice of X one CPU task reuses across rows (L2)

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The number of tasks per thread chunk so that each chunk does at least kMinTaskWork.
int64_t grain_for(int64_t work_per_task) {
  return std::max<int64_t>(1, kMinTaskWork / std::max<int64_t>(1, work_per_task));
}

}  // namespace

SparseWeight sparse_weight(const char* op, const at::Tensor& values, const at::Tensor& row_ptr,
                           const at::Tensor& indices, const std::string& format, int64_t rows,
                           int64_t cols) {
  const bool csr = choice(op, "format", format, {"csr", "bitmap"}, /*quoted=*/true) == 0;
  TORCH_CHECK_VALUE(rows >= 0 && cols >= 0, "sparseprune::", op,
                    ": the weight shape must not be negative, got ", rows, " x ", cols);
  TORCH_CHECK_TYPE(values.scalar_type() == at::kFloat, "sparseprune::", op,
                   ": values must be float32, got ", values.scalar_type());
  TORCH_CHECK_TYPE(row_ptr.scalar_type() == at::kInt, "sparseprune::", op,
                   ": row_ptr must be int32, got ", row_ptr.scalar_type());
  TORCH_CHECK_TYPE(indices.scalar_type() == at::kInt, "sparseprune::", op,
                   ": indices must be int32, got ", indices.scalar_type());
  check_same_device(op, "row_ptr", row_ptr, "values", values);
  check_same_device(op, "indices", indices, "values", values);
  check_cpu_or_cuda(op, "tensors", values.device());
  TORCH_CHECK_VALUE(values.dim() == 1, "sparseprune::", op,
                    ": values must be 1-D (the kept weights), got shape ", values.sizes());
  TORCH_CHECK_VALUE(row_ptr.dim() == 1 && row_ptr.numel() == rows + 1, "sparseprune::", op,
                    ": row_ptr must have shape (", rows + 1, ",) for ", rows, " rows, got ",
                    row_ptr.sizes());
  const int64_t words = ceil_div(cols, 32);
  if (csr) {
    TORCH_CHECK_VALUE(indices.dim() == 1 && indices.numel() == values.numel(), "sparseprune::", op,
                      ": csr indices must be 1-D with one column per value (", values.numel(),
                      "), got shape ", indices.sizes());
  } else {
    TORCH_CHECK_VALUE(indices.dim() == 2 && indices.size(0) == rows && indices.size(1) == words,
                      "sparseprune::", op, ": bitmap indices must have shape (", rows, ", ", words,
                      ") (32 columns per word), got ", indices.sizes());
  }
  SparseWeight w{values.contiguous(), row_ptr.contiguous(), indices.contiguous(), {}};
  if (w.values.device().is_cpu()) {  // two reads; on CUDA they would cost a host sync
    const int32_t* rp = w.row_ptr.data_ptr<int32_t>();
    TORCH_CHECK_VALUE(rp[0] == 0 && rp[rows] == values.numel(), "sparseprune::", op,
                      ": row_ptr must run from 0 to the number of values (", values.numel(),
                      "), got ", rp[0], " .. ", rp[rows]);
  }
  SparseMatrix& m = w.matrix;
  m.format = csr ? SparseFormat::kCsr : SparseFormat::kBitmap;
  m.rows = rows;
  m.cols = cols;
  m.row_ptr = w.row_ptr.data_ptr<int32_t>();
  m.values = w.values.data_ptr<float>();
  if (csr) {
    m.col_idx = w.indices.data_ptr<int32_t>();
  } else {
    m.bitmap = reinterpret_cast<const uint32_t*>(w.indices.data_ptr<int32_t>());
    m.words_per_row = words;
  }
  return w;
}

void check_input(const char* op, const at::Tensor& input, const at::Tensor& values) {
  TORCH_CHECK_TYPE(input.scalar_type() == at::kFloat, "sparseprune::", op,
                   ": input must be float32 (the sparse kernels compute in float32), got ",
                   input.scalar_type());
  check_same_device(op, "input", input, "values", values);
}

const float* checked_bias(const char* op, const std::optional<at::Tensor>& bias, int64_t rows,
                          const at::Tensor& input, at::Tensor& holder) {
  check_bias(op, bias, rows, "input", input);
  if (!bias.has_value()) return nullptr;
  holder = bias->contiguous();
  return holder.data_ptr<float>();
}

at::Tensor strided_rows(int64_t rows, int64_t stride, const at::Device& device) {
  return at::arange(rows, at::TensorOptions().dtype(at::kLong).device(device)).mul_(stride);
}

void run_spmv(const char* op, const SpmvParams& p, const at::Device& device) {
  if (p.w.rows == 0) return;
  if (on_cuda(op, device)) return launch(SP_CUDA(sparse_spmv), device, p);
  const cpu::SparseKernels& k = cpu::active<cpu::SparseKernels>();
  const int64_t nnz = p.w.row_ptr[p.w.rows];
  // CSR costs per kept weight; the bitmap format per group of 16 weights, kept or not.
  const int64_t per_row = 4 + (p.w.format == SparseFormat::kCsr ? nnz / p.w.rows : p.w.cols / 16);
  at::parallel_for(0, ceil_div(p.w.rows, kRowBlock), grain_for(per_row * kRowBlock),
                   [&](int64_t begin, int64_t end) {
                     k.spmv(p, begin * kRowBlock, std::min(end * kRowBlock, p.w.rows));
                   });
}

void run_spmm(const char* op, const SpmmParams& p, const at::Device& device) {
  if (p.w.rows == 0 || p.ncols == 0 || p.batch == 0) return;
  if (on_cuda(op, device)) return launch(SP_CUDA(sparse_spmm), device, p);
  const cpu::SparseKernels& k = cpu::active<cpu::SparseKernels>();
  // Tasks: (problem, column chunk, row block), column-chunk-major so that a thread sweeps the
  // rows against one cache-resident slice of X.
  const int64_t x_rows = p.w.cols * (p.w.rows / p.rows_per_group);
  int64_t chunk = kCacheBytes / (4 * std::max<int64_t>(1, x_rows)) / 16 * 16;
  chunk = std::min<int64_t>(std::max<int64_t>(chunk, 16), 512);
  const int64_t col_chunks = ceil_div(p.ncols, chunk), row_blocks = ceil_div(p.w.rows, kRowBlock);
  const int64_t nnz = p.w.row_ptr[p.w.rows];
  const int64_t work = (nnz / p.w.rows + 1) * kRowBlock * ceil_div(std::min(chunk, p.ncols), 16);
  at::parallel_for(0, p.batch * col_chunks * row_blocks, grain_for(work),
                   [&](int64_t begin, int64_t end) {
                     for (int64_t t = begin; t < end; ++t) {
                       const int64_t b = t / (col_chunks * row_blocks);
                       const int64_t c = t / row_blocks % col_chunks, r = t % row_blocks;
                       SpmmParams q = p;
                       q.x += b * p.x_batch_stride;
                       q.y += b * p.y_batch_stride;
                       k.spmm(q, r * kRowBlock, std::min((r + 1) * kRowBlock, p.w.rows),
                              c * chunk, std::min((c + 1) * chunk, p.ncols));
                     }
                   });
}

}  // namespace host
}  // namespace sparseprune
