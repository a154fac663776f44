#include "sparse_weight.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <vector>

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

// Popcount of a bitmap range; hardware popcnt where the CPU has it (the baseline build cannot
// assume it), so that the check stays a fraction of the kernel's own pass over the words.
__attribute__((target("popcnt"))) int64_t popcount_hw(const uint32_t* w, int64_t n) {
  int64_t c = 0;
  for (int64_t i = 0; i < n; ++i) c += __builtin_popcount(w[i]);
  return c;
}
int64_t popcount_sw(const uint32_t* w, int64_t n) {
  int64_t c = 0;
  for (int64_t i = 0; i < n; ++i) c += __builtin_popcount(w[i]);
  return c;
}
const bool kHasPopcnt = __builtin_cpu_supports("popcnt");

// The structure between the ends of row_ptr, on CPU: offsets rise from 0 to nnz, CSR columns lie
// in [0, cols), a bitmap row has as many bits as values and none past the last column. O(rows +
// nnz) for CSR, one popcount per bitmap word: a fraction of what the kernels then read.
void check_structure_cpu(const char* op, const SparseWeight& w, bool csr, int64_t rows,
                         int64_t cols) {
  const int32_t* rp = w.row_ptr.data_ptr<int32_t>();
  const int64_t nnz = w.values.numel();
  TORCH_CHECK_VALUE(rp[0] == 0 && rp[rows] == nnz, "sparseprune::", op,
                    ": row_ptr must run from 0 to the number of values (", nnz, "), got ", rp[0],
                    " .. ", rp[rows]);
  int64_t bad_row = -1;
  for (int64_t n = 0; n < rows && bad_row < 0; ++n)
    if (rp[n + 1] < rp[n]) bad_row = n;
  TORCH_CHECK_VALUE(bad_row < 0, "sparseprune::", op,
                    ": row_ptr must not decrease, got row_ptr[", bad_row, "] = ", rp[bad_row],
                    " > row_ptr[", bad_row + 1, "] = ", rp[bad_row + 1]);
  std::atomic<int64_t> bad{-1};
  if (csr) {
    const int32_t* col = w.indices.data_ptr<int32_t>();
    auto outside = [cols](int32_t c) { return c < 0 || c >= cols; };
    at::parallel_for(0, nnz, 1 << 16, [&](int64_t begin, int64_t end) {
      bool out = false;
      for (int64_t j = begin; j < end; ++j) out |= outside(col[j]);
      if (out)
        for (int64_t j = begin; j < end; ++j)
          if (outside(col[j])) {
            bad = j;
            break;
          }
    });
    const int64_t j = bad.load();
    TORCH_CHECK_VALUE(j < 0, "sparseprune::", op, ": csr column indices must lie in [0, ", cols,
                      "), got ", j < 0 ? 0 : col[j], " at position ", j);
    return;
  }
  const uint32_t* words = reinterpret_cast<const uint32_t*>(w.indices.data_ptr<int32_t>());
  const int64_t per_row = ceil_div(cols, 32);
  const uint32_t tail = cols % 32 == 0 ? 0u : ~((1u << (cols % 32)) - 1u);  // bits past cols
  at::parallel_for(0, rows, std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(1, per_row)),
                   [&](int64_t begin, int64_t end) {
                     for (int64_t n = begin; n < end; ++n) {
                       const uint32_t* row = words + n * per_row;
                       const int64_t bits =
                           kHasPopcnt ? popcount_hw(row, per_row) : popcount_sw(row, per_row);
                       if (bits != rp[n + 1] - rp[n] || (per_row > 0 && (row[per_row - 1] & tail))) {
                         bad = n;
                         return;
                       }
                     }
                   });
  const int64_t n = bad.load();
  TORCH_CHECK_VALUE(n < 0, "sparseprune::", op, ": bitmap row ", n,
                    " must set one bit per value of the row (row_ptr gives ",
                    n < 0 ? 0 : rp[n + 1] - rp[n], ") and none past column ", cols - 1);
}

// The same conditions on CUDA, as a few ATen reductions on the device and one host sync.
void check_structure_device(const char* op, const SparseWeight& w, bool csr, int64_t rows,
                            int64_t cols) {
  const at::Tensor rp = w.row_ptr.to(at::kLong);
  const int64_t nnz = w.values.numel();
  const at::Tensor counts = rp.narrow(0, 1, rows) - rp.narrow(0, 0, rows);
  std::vector<at::Tensor> bad{rp[0].ne(0), rp[rows].ne(nnz)};
  if (rows > 0) bad.push_back(counts.lt(0).any());
  if (csr && nnz > 0) bad.push_back(w.indices.lt(0).logical_or(w.indices.ge(cols)).any());
  if (!csr && w.indices.numel() > 0) {
    // Popcount of every word (SWAR on int64 holding the 32-bit pattern).
    at::Tensor x = w.indices.to(at::kLong).bitwise_and(0xFFFFFFFFLL);
    const int64_t per_row = x.size(1);
    const uint32_t tail = cols % 32 == 0 ? 0u : ~((1u << (cols % 32)) - 1u);
    if (tail) bad.push_back(x.select(1, per_row - 1).bitwise_and(int64_t{tail}).ne(0).any());
    x = x - x.__rshift__(1).bitwise_and(0x55555555LL);
    x = x.bitwise_and(0x33333333LL) + x.__rshift__(2).bitwise_and(0x33333333LL);
    x = (x + x.__rshift__(4)).bitwise_and(0x0F0F0F0FLL);
    x = (x * 0x01010101LL).__rshift__(24).bitwise_and(0xFF);
    bad.push_back(x.sum(1).ne(counts).any());
  }
  const bool ok = !at::stack(bad).any().item<bool>();
  TORCH_CHECK_VALUE(ok, "sparseprune::", op,
                    ": malformed compressed weight: row_ptr must rise from 0 to the number of "
                    "values (", nnz, "), csr columns lie in [0, ", cols,
                    "), bitmap rows set one bit per value and none past the last column");
}

void check_structure(const char* op, const SparseWeight& w, bool csr, int64_t rows,
                     int64_t cols) {
  if (w.values.device().is_cpu())
    check_structure_cpu(op, w, csr, rows, cols);
  else
    check_structure_device(op, w, csr, rows, cols);
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
  check_structure(op, w, csr, rows, cols);
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

at::Tensor transposed(const at::Tensor& x) {
  if (!x.device().is_cpu()) return x.t().contiguous();
  const int64_t rows = x.size(0), cols = x.size(1);
  at::Tensor out = at::empty({cols, rows}, x.options());
  if (x.numel() == 0) return out;
  const cpu::SparseKernels& k = cpu::active<cpu::SparseKernels>();
  const float* src = x.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  at::parallel_for(0, ceil_div(rows, kRowBlock), grain_for(kRowBlock * cols),
                   [&](int64_t begin, int64_t end) {
                     const int64_t r0 = begin * kRowBlock, r1 = std::min(end * kRowBlock, rows);
                     k.transpose(src + r0 * cols, r1 - r0, cols, cols, dst + r0, rows);
                   });
  return out;
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
