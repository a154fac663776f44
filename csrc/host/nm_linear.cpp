// sparseprune::nm_linear: F.linear with an N:M weight (format "nm": n value slots and their packed
// in-group positions per group of m inputs, include/sparseprune/nm_params.h), bias fused. CPU
// only: on CUDA, 2:4 layers run PyTorch's semi-structured kernels instead (format
// "semi_structured"). Batch 1 runs the gemv kernel on the input as is; larger batches (any leading
// shape, flattened) transpose the input once so that every kept weight scales a contiguous run.
#include <ATen/Parallel.h>

#include <algorithm>

#include "check.h"
#include "ops.h"
#include "route.h"

namespace sparseprune {
namespace host {
namespace {

constexpr int64_t kRowBlock = 16;          // outputs per CPU task (one cache line of y)
constexpr int64_t kBatchChunk = kNmBatchChunk;  // batch rows per CPU task (every ISA's tile divides it)
constexpr int64_t kMinTaskWork = 1 << 14;  // vector FMAs below which a second thread costs more

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

int index_bits(int64_t m) { return m <= 2 ? 1 : m <= 4 ? 2 : 4; }

// Every stored position lies in [0, m): only patterns whose field can hold more (m = 3, 5..8 in
// 2 or 4 bits) need a look. One pass over the words, a fraction of the kernel's own pass.
void check_positions(const char* op, const at::Tensor& indices, int64_t m, int bits,
                     int64_t slots_per_row) {
  if ((int64_t{1} << bits) == m || indices.numel() == 0) return;
  const uint32_t* words = reinterpret_cast<const uint32_t*>(indices.data_ptr<int32_t>());
  const int64_t rows = indices.size(0), per_row = indices.size(1), per_word = 32 / bits;
  const uint32_t field = (1u << bits) - 1u;
  int64_t bad = -1;
  for (int64_t r = 0; r < rows && bad < 0; ++r)
    for (int64_t j = 0; j < slots_per_row; ++j) {
      const uint32_t pos = (words[r * per_row + j / per_word] >> ((j % per_word) * bits)) & field;
      if (pos >= static_cast<uint32_t>(m)) {
        bad = r;
        break;
      }
    }
  TORCH_CHECK_VALUE(bad < 0, "sparseprune::", op, ": nm indices of row ", bad,
                    " hold an in-group position >= m = ", m);
}

}  // namespace

at::Tensor nm_linear(const at::Tensor& input, const at::Tensor& values, const at::Tensor& indices,
                     const OptTensor& bias, int64_t n, int64_t m, at::IntArrayRef weight_shape) {
  const char* op = "nm_linear";
  TORCH_CHECK_VALUE(weight_shape.size() == 2 && weight_shape[0] >= 0 && weight_shape[1] >= 0,
                    "sparseprune::", op, ": weight_shape must be (out_features, in_features) >= 0, got ",
                    weight_shape);
  const int64_t rows = weight_shape[0], cols = weight_shape[1];
  TORCH_CHECK_VALUE(1 <= n && n < m && m <= 8, "sparseprune::", op,
                    ": the pattern must have 1 <= n < m <= 8, got n = ", n, ", m = ", m);
  TORCH_CHECK_VALUE(cols % m == 0, "sparseprune::", op, ": in_features (", cols,
                    ") must be a multiple of m = ", m);
  TORCH_CHECK_TYPE(values.scalar_type() == at::kFloat || values.scalar_type() == at::kBFloat16,
                   "sparseprune::", op, ": values must be float32 or bfloat16, got ",
                   values.scalar_type());
  TORCH_CHECK_TYPE(indices.scalar_type() == at::kInt, "sparseprune::", op,
                   ": indices must be int32, got ", indices.scalar_type());
  TORCH_CHECK_TYPE(input.scalar_type() == at::kFloat || input.scalar_type() == at::kBFloat16,
                   "sparseprune::", op, ": input must be float32 or bfloat16, got ",
                   input.scalar_type());
  check_same_device(op, "indices", indices, "values", values);
  check_same_device(op, "input", input, "values", values);
  check_same_device(op, "bias", bias, "values", values);
  TORCH_CHECK_VALUE(values.device().is_cpu(), "sparseprune::", op,
                    ": the nm format runs on the CPU; on CUDA convert 2:4 layers with "
                    "format='semi_structured', got tensors on ", values.device());
  const int bits = index_bits(m);
  const int64_t slots = cols / m * n, words = ceil_div(slots * bits, 32);
  TORCH_CHECK_VALUE(values.dim() == 1 && values.numel() == rows * slots, "sparseprune::", op,
                    ": values must be 1-D with ", n, " slots per group of ", m, " (", rows * slots,
                    "), got shape ", values.sizes());
  TORCH_CHECK_VALUE(indices.dim() == 2 && indices.size(0) == rows && indices.size(1) == words,
                    "sparseprune::", op, ": indices must have shape (", rows, ", ", words, ") (",
                    bits, "-bit positions), got ", indices.sizes());
  check_in_features(op, input, cols);
  if (bias.has_value()) {
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == rows, "sparseprune::", op,
                      ": bias must have shape (", rows, ",), got ", bias->sizes());
    TORCH_CHECK_TYPE(bias->scalar_type() == at::kFloat || bias->scalar_type() == input.scalar_type(),
                     "sparseprune::", op, ": bias must be float32 or the input's dtype (",
                     input.scalar_type(), "), got ", bias->scalar_type());
  }
  const at::Tensor vals = values.contiguous(), idx = indices.contiguous();
  check_positions(op, idx, m, bits, slots);
  const at::Tensor b = bias.has_value() ? bias->to(at::kFloat).contiguous() : at::Tensor();

  std::vector<int64_t> out_shape(input.sizes().begin(), input.sizes().end());
  out_shape.back() = rows;
  const int64_t batch = c10::multiply_integers(input.sizes().begin(), input.sizes().end() - 1);
  const at::Tensor x = input.reshape({batch, cols}).to(at::kFloat).contiguous();
  at::Tensor y = at::empty({batch, rows}, x.options());

  NmSpmmParams p;
  p.w.rows = rows;
  p.w.cols = cols;
  p.w.n = static_cast<int32_t>(n);
  p.w.m = static_cast<int32_t>(m);
  p.w.bits = bits;
  p.w.slots_per_row = slots;
  p.w.words_per_row = words;
  p.w.values = vals.data_ptr();
  p.w.bf16 = vals.scalar_type() == at::kBFloat16;
  p.w.indices = reinterpret_cast<const uint32_t*>(idx.data_ptr<int32_t>());
  p.bias = b.defined() ? b.data_ptr<float>() : nullptr;
  p.batch = batch;
  p.y = y.data_ptr<float>();
  const cpu::NmSpmmKernels& k = cpu::active<cpu::NmSpmmKernels>();
  const int64_t row_blocks = ceil_div(rows, kRowBlock);
  if (rows > 0 && batch == 1) {
    p.x = x.data_ptr<float>();
    const int64_t work = kRowBlock * (4 + slots / 16);
    at::parallel_for(0, row_blocks, std::max<int64_t>(1, kMinTaskWork / work),
                     [&](int64_t begin, int64_t end) {
                       k.gemv(p, begin * kRowBlock, std::min(end * kRowBlock, rows));
                     });
  } else if (rows > 0 && batch > 1) {
    // (chunks, cols, kNmBatchChunk): each chunk of batch rows transposed, the last zero-padded.
    const int64_t chunks = ceil_div(batch, kBatchChunk);
    // Chunk by chunk, by the sparse kernels' SIMD tile transpose (ATen's copy of the same
    // transpose moves one float at a time).
    const at::Tensor xt = at::empty({chunks, cols, kBatchChunk}, x.options());
    const int64_t tail = batch - (chunks - 1) * kBatchChunk;  // batch rows in the last chunk
    if (tail < kBatchChunk) xt.select(0, chunks - 1).narrow(1, tail, kBatchChunk - tail).zero_();
    const cpu::SparseKernels& transposer = cpu::active<cpu::SparseKernels>();
    const float* src = x.data_ptr<float>();
    float* dst = xt.data_ptr<float>();
    at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        const int64_t b0 = c * kBatchChunk, n = std::min(kBatchChunk, batch - b0);
        transposer.transpose(src + b0 * cols, n, cols, cols, dst + c * cols * kBatchChunk,
                             kBatchChunk);
      }
    });
    p.xt = xt.data_ptr<float>();
    const int64_t work = kRowBlock * (4 + slots) * ceil_div(std::min(batch, kBatchChunk), 16);
    // Tasks: (batch chunk, row block), chunk-major so a thread sweeps the rows against one slice
    // of xt.
    at::parallel_for(0, chunks * row_blocks, std::max<int64_t>(1, kMinTaskWork / work),
                     [&](int64_t begin, int64_t end) {
                       for (int64_t t = begin; t < end; ++t) {
                         const int64_t c = t / row_blocks, r = t % row_blocks;
                         k.gemm(p, r * kRowBlock, std::min((r + 1) * kRowBlock, rows),
                                c * kBatchChunk, std::min((c + 1) * kBatchChunk, batch));
                       }
                     });
  }
  return y.to(input.scalar_type()).view(out_shape);
}

}  // namespace host
}  // namespace sparseprune
