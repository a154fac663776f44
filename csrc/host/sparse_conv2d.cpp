// sparseprune::sparse_conv2d: F.conv2d with a compressed float32 weight, flattened to
// out_channels x (in_channels / groups * kh * kw). A 1x1 convolution with stride 1 and no padding
// is already a sparse x dense product on each image (channels x pixels); any other one unfolds
// (im2col) a cache-sized chunk of one image's output positions at a time, so the unfolded input
// never exists for the whole batch.
#include <ATen/Parallel.h>

#include <algorithm>
#include <memory>

#include "../cpu/kernels/sparse_table.h"
#include "ops.h"
#include "sparse_weight.h"

namespace sparseprune {
namespace host {
namespace {

constexpr int64_t kChunkBytes = 1 << 20;       // one CPU chunk of unfolded input (fits L2)
constexpr int64_t kDeviceChunkBytes = 64 << 20;  // one CUDA launch's unfolded images

struct Geometry {
  int64_t batch, channels, height, width, out_h, out_w;
};

void check_pair(const char* op, const char* arg, at::IntArrayRef v, int64_t min) {
  TORCH_CHECK_VALUE(v.size() == 2 && v[0] >= min && v[1] >= min, "sparseprune::", op, ": ", arg,
                    " must be two integers >= ", min, ", got ", v);
}

// Unfolds each chunk of output positions of each image into a per-thread buffer, then multiplies.
void conv_cpu_unfolded(const SpmmParams& base, const Im2colParams& image, const Geometry& g,
                       int64_t rows) {
  const cpu::SparseKernelTable& k = cpu::sparse_kernels();
  const int64_t unfolded_rows = base.w.cols * (rows / base.rows_per_group);
  const int64_t positions = g.out_h * g.out_w;
  int64_t chunk = kChunkBytes / (4 * std::max<int64_t>(1, unfolded_rows)) / 16 * 16;
  chunk = std::min(std::max<int64_t>(chunk, 16), positions);
  const int64_t chunks = (positions + chunk - 1) / chunk;
  const int64_t nnz = base.w.row_ptr[rows];
  const int64_t work = (nnz + unfolded_rows) * ((chunk + 15) / 16);
  at::parallel_for(0, g.batch * chunks, std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(1, work)),
                   [&](int64_t begin, int64_t end) {
                     std::unique_ptr<float[]> buffer(new float[unfolded_rows * chunk]);
                     for (int64_t t = begin; t < end; ++t) {
                       const int64_t n = t / chunks, c0 = t % chunks * chunk;
                       const int64_t width = std::min(chunk, positions - c0);
                       Im2colParams im = image;
                       im.input += n * g.channels * g.height * g.width;
                       k.im2col(im, c0, c0 + width, buffer.get(), width);
                       SpmmParams q = base;
                       q.x = buffer.get();
                       q.x_stride = width;
                       q.ncols = width;
                       q.y += n * base.y_batch_stride + c0;
                       k.spmm(q, 0, rows, 0, width);
                     }
                   });
}

}  // namespace

at::Tensor sparse_conv2d(const at::Tensor& input, const at::Tensor& values,
                         const at::Tensor& row_ptr, const at::Tensor& indices,
                         const OptTensor& bias, std::string format, at::IntArrayRef weight_shape,
                         at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                         int64_t groups) {
  const char* op = "sparse_conv2d";
  TORCH_CHECK_VALUE(weight_shape.size() == 4 && weight_shape[0] >= 0 && weight_shape[1] >= 1 &&
                        weight_shape[2] >= 1 && weight_shape[3] >= 1,
                    "sparseprune::", op,
                    ": weight_shape must be (out_channels, in_channels / groups, kh, kw) with "
                    "positive in_channels and kernel size, got ", weight_shape);
  check_pair(op, "stride", stride, 1);
  check_pair(op, "padding", padding, 0);
  check_pair(op, "dilation", dilation, 1);
  const int64_t out_channels = weight_shape[0], kh = weight_shape[2], kw = weight_shape[3];
  TORCH_CHECK_VALUE(groups >= 1 && out_channels % groups == 0, "sparseprune::", op,
                    ": groups must be >= 1 and divide out_channels = ", out_channels, ", got ",
                    groups);
  const int64_t cols = weight_shape[1] * kh * kw;
  const SparseWeight w = sparse_weight(op, values, row_ptr, indices, format, out_channels, cols);
  check_input(op, input, values);
  TORCH_CHECK_VALUE(input.dim() == 3 || input.dim() == 4, "sparseprune::", op,
                    ": input must be 3-D (C, H, W) or 4-D (N, C, H, W), got shape ",
                    input.sizes());
  const at::Tensor x = (input.dim() == 3 ? input.unsqueeze(0) : input).contiguous();
  Geometry g{x.size(0), x.size(1), x.size(2), x.size(3), 0, 0};
  TORCH_CHECK_VALUE(g.channels == weight_shape[1] * groups, "sparseprune::", op, ": input has ",
                    g.channels, " channels but the weight expects ", weight_shape[1] * groups,
                    " (in_channels / groups = ", weight_shape[1], ", groups = ", groups,
                    "); input shape ", input.sizes());
  g.out_h = (g.height + 2 * padding[0] - dilation[0] * (kh - 1) - 1) / stride[0] + 1;
  g.out_w = (g.width + 2 * padding[1] - dilation[1] * (kw - 1) - 1) / stride[1] + 1;
  TORCH_CHECK_VALUE(g.height + 2 * padding[0] >= dilation[0] * (kh - 1) + 1 &&
                        g.width + 2 * padding[1] >= dilation[1] * (kw - 1) + 1,
                    "sparseprune::", op, ": the padded input (", g.height + 2 * padding[0], " x ",
                    g.width + 2 * padding[1], ") is smaller than the dilated kernel (",
                    dilation[0] * (kh - 1) + 1, " x ", dilation[1] * (kw - 1) + 1, ")");
  at::Tensor bias_holder;
  const float* b = checked_bias(op, bias, out_channels, values, bias_holder);
  at::Tensor y = at::empty({g.batch, out_channels, g.out_h, g.out_w}, x.options());
  const int64_t positions = g.out_h * g.out_w;

  SpmmParams p;
  p.w = w.matrix;
  p.bias = b;
  p.rows_per_group = std::max<int64_t>(out_channels / groups, 1);
  p.ncols = positions;
  p.y = y.data_ptr<float>();
  p.y_row_stride = positions;
  p.y_batch_stride = out_channels * positions;
  p.batch = g.batch;
  const bool pointwise = kh == 1 && kw == 1 && stride[0] == 1 && stride[1] == 1 &&
                         padding[0] == 0 && padding[1] == 0;
  if (y.numel() == 0) {
  } else if (pointwise) {  // each image is already the (channels, pixels) right-hand side
    p.x = x.data_ptr<float>();
    p.x_stride = positions;
    p.x_batch_stride = g.channels * positions;
    run_spmm(p, x.device());
  } else if (x.device().is_cpu()) {
    Im2colParams im{x.data_ptr<float>(), weight_shape[1] * groups, g.height, g.width, kh, kw,
                    stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
                    g.out_h, g.out_w};
    conv_cpu_unfolded(p, im, g, out_channels);
  } else {  // CUDA: ATen's unfold of as many images as fit kDeviceChunkBytes, one launch each
    const int64_t per_image = 4 * cols * groups * positions;
    const int64_t step = std::max<int64_t>(1, kDeviceChunkBytes / std::max<int64_t>(1, per_image));
    for (int64_t n0 = 0; n0 < g.batch; n0 += step) {
      const int64_t count = std::min(step, g.batch - n0);
      const at::Tensor unfolded =
          at::im2col(x.narrow(0, n0, count), {kh, kw}, dilation, padding, stride).contiguous();
      SpmmParams q = p;
      q.x = unfolded.data_ptr<float>();
      q.x_stride = positions;
      q.x_batch_stride = cols * groups * positions;
      q.y += n0 * p.y_batch_stride;
      q.batch = count;
      run_spmm(q, x.device());
    }
  }
  return input.dim() == 3 ? y.squeeze(0) : y;
}

}  // namespace host
}  // namespace sparseprune
