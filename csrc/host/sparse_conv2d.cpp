// sparseprune::sparse_conv2d: F.conv2d with a compressed float32 weight, flattened to
// out_channels x (in_channels / groups * kh * kw), as a sparse x dense product Y = W X per image.
//
// Stride 1 (the common case) needs no unfold: on the zero-padded image (C x Hp x Wp), the input
// under tap (c, i, j) at output (oh, ow) sits at c * Hp * Wp + i * dh * Wp + j * dw + (oh * Wp + ow),
// so X is the padded image itself read at per-row offsets, with output column oh * Wp + ow. The
// Wp - Wo columns past each output row are computed and dropped (output rows are Wp apart). Other
// strides unfold (im2col) a cache-sized chunk of one image's output positions at a time (CPU), or
// a few images per launch (CUDA), so the unfolded input never exists for the whole batch.
#include <ATen/Parallel.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "../cpu/dispatch.h"
#include "check.h"
#include "ops.h"
#include "sparse_weight.h"

namespace sparseprune {
namespace host {
namespace {

constexpr int64_t kChunkBytes = 1 << 20;         // one CPU chunk of unfolded input (fits L2)
constexpr int64_t kDeviceChunkBytes = 64 << 20;  // one CUDA launch's unfolded images

struct Geometry {
  int64_t batch, channels, height, width, kernel_h, kernel_w, out_h, out_w;
};

// Stride 1: the padded images are X (see the top of the file).
void conv_direct(const char* op, SpmmParams p, const at::Tensor& x, at::Tensor& y,
                 const Geometry& g, at::IntArrayRef padding, at::IntArrayRef dilation) {
  const at::Tensor padded = padding[0] == 0 && padding[1] == 0
      ? x : at::constant_pad_nd(x, {padding[1], padding[1], padding[0], padding[0]});
  const int64_t hp = padded.size(2), wp = padded.size(3);
  std::vector<int64_t> taps;  // X's row offsets, row (c * kh + i) * kw + j
  taps.reserve(g.channels * g.kernel_h * g.kernel_w);
  for (int64_t c = 0; c < g.channels; ++c)
    for (int64_t i = 0; i < g.kernel_h; ++i)
      for (int64_t j = 0; j < g.kernel_w; ++j)
        taps.push_back(c * hp * wp + i * dilation[0] * wp + j * dilation[1]);
  const at::Tensor offsets = at::tensor(taps, at::kLong).to(x.device());
  // Output rows Wp apart: straight into y when Wp == Wo, else into a buffer trimmed afterwards.
  at::Tensor pitched = wp == g.out_w ? y : at::empty({g.batch, y.size(1), g.out_h, wp}, y.options());
  p.x = padded.data_ptr<float>();
  p.x_offsets = offsets.data_ptr<int64_t>();
  p.x_batch_stride = g.channels * hp * wp;
  p.ncols = (g.out_h - 1) * wp + g.out_w;
  p.y = pitched.data_ptr<float>();
  p.y_row_stride = g.out_h * wp;
  p.y_batch_stride = y.size(1) * g.out_h * wp;
  run_spmm(op, p, x.device());
  if (wp != g.out_w) y.copy_(pitched.narrow(3, 0, g.out_w));
}

// Other strides on CPU: unfold each chunk of output positions of each image into a per-thread
// buffer (rows `chunk` floats apart), then multiply.
void conv_cpu_unfolded(SpmmParams p, const Im2colParams& image, const Geometry& g) {
  const cpu::SparseKernels& k = cpu::active<cpu::SparseKernels>();
  const int64_t rows = p.w.rows, unfolded_rows = image.channels * g.kernel_h * g.kernel_w;
  const int64_t positions = g.out_h * g.out_w;
  int64_t chunk = kChunkBytes / (4 * std::max<int64_t>(1, unfolded_rows)) / 16 * 16;
  chunk = std::min(std::max<int64_t>(chunk, 16), positions);
  const int64_t chunks = (positions + chunk - 1) / chunk;
  const at::Tensor offsets = strided_rows(unfolded_rows, chunk, at::kCPU);
  p.x_offsets = offsets.data_ptr<int64_t>();
  const int64_t work = (p.w.row_ptr[rows] + unfolded_rows) * ((chunk + 15) / 16);
  at::parallel_for(0, g.batch * chunks, std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(1, work)),
                   [&](int64_t begin, int64_t end) {
                     std::unique_ptr<float[]> buffer(new float[unfolded_rows * chunk]);
                     for (int64_t t = begin; t < end; ++t) {
                       const int64_t n = t / chunks, c0 = t % chunks * chunk;
                       const int64_t width = std::min(chunk, positions - c0);
                       Im2colParams im = image;
                       im.input += n * g.channels * g.height * g.width;
                       k.im2col(im, c0, c0 + width, buffer.get(), chunk);
                       SpmmParams q = p;
                       q.x = buffer.get();
                       q.ncols = width;
                       q.y += n * p.y_batch_stride + c0;
                       k.spmm(q, 0, rows, 0, width);
                     }
                   });
}

// Other strides on CUDA: ATen's unfold of as many images as fit kDeviceChunkBytes per launch.
void conv_device_unfolded(const char* op, SpmmParams p, const at::Tensor& x, const Geometry& g,
                          at::IntArrayRef stride, at::IntArrayRef padding,
                          at::IntArrayRef dilation) {
  const int64_t unfolded_rows = g.channels * g.kernel_h * g.kernel_w;
  const int64_t positions = g.out_h * g.out_w;
  const at::Tensor offsets = strided_rows(unfolded_rows, positions, x.device());
  p.x_offsets = offsets.data_ptr<int64_t>();
  p.x_batch_stride = unfolded_rows * positions;
  const int64_t step = std::max<int64_t>(1, kDeviceChunkBytes / std::max<int64_t>(1, 4 * p.x_batch_stride));
  for (int64_t n0 = 0; n0 < g.batch; n0 += step) {
    const int64_t count = std::min(step, g.batch - n0);
    const at::Tensor unfolded = at::im2col(x.narrow(0, n0, count), {g.kernel_h, g.kernel_w},
                                           dilation, padding, stride).contiguous();
    SpmmParams q = p;
    q.x = unfolded.data_ptr<float>();
    q.y += n0 * p.y_batch_stride;
    q.batch = count;
    run_spmm(op, q, x.device());
  }
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
  const int64_t out_channels = weight_shape[0], kh = weight_shape[2], kw = weight_shape[3];
  check_conv2d_options(op, stride, padding, dilation, groups, out_channels);
  const int64_t cols = weight_shape[1] * kh * kw;
  const SparseWeight w = sparse_weight(op, values, row_ptr, indices, format, out_channels, cols);
  check_input(op, input, values);
  const at::Tensor x = conv2d_batch(op, input).contiguous();
  Geometry g{x.size(0), x.size(1), x.size(2), x.size(3), kh, kw, 0, 0};
  TORCH_CHECK_VALUE(g.channels == weight_shape[1] * groups, "sparseprune::", op, ": input has ",
                    g.channels, " channels but the weight expects ", weight_shape[1] * groups,
                    " (in_channels / groups = ", weight_shape[1], ", groups = ", groups,
                    "); input shape ", input.sizes());
  TORCH_CHECK_VALUE(g.height + 2 * padding[0] >= dilation[0] * (kh - 1) + 1 &&
                        g.width + 2 * padding[1] >= dilation[1] * (kw - 1) + 1,
                    "sparseprune::", op, ": the padded input (", g.height + 2 * padding[0], " x ",
                    g.width + 2 * padding[1], ") is smaller than the dilated kernel (",
                    dilation[0] * (kh - 1) + 1, " x ", dilation[1] * (kw - 1) + 1, ")");
  g.out_h = (g.height + 2 * padding[0] - dilation[0] * (kh - 1) - 1) / stride[0] + 1;
  g.out_w = (g.width + 2 * padding[1] - dilation[1] * (kw - 1) - 1) / stride[1] + 1;
  at::Tensor bias_holder;
  const float* b = checked_bias(op, bias, out_channels, input, bias_holder);
  at::Tensor y = at::empty({g.batch, out_channels, g.out_h, g.out_w}, x.options());

  SpmmParams p;
  p.w = w.matrix;
  p.bias = b;
  p.rows_per_group = std::max<int64_t>(out_channels / groups, 1);
  p.ncols = g.out_h * g.out_w;
  p.y = y.data_ptr<float>();
  p.y_row_stride = g.out_h * g.out_w;
  p.y_batch_stride = out_channels * g.out_h * g.out_w;
  p.batch = g.batch;
  if (y.numel() > 0) {
    if (stride[0] == 1 && stride[1] == 1) {
      conv_direct(op, p, x, y, g, padding, dilation);
    } else if (x.device().is_cpu()) {
      const Im2colParams im{x.data_ptr<float>(), g.channels, g.height, g.width, kh, kw,
                            stride[0], stride[1], padding[0], padding[1], dilation[0],
                            dilation[1], g.out_h, g.out_w};
      conv_cpu_unfolded(p, im, g);
    } else {
      conv_device_unfolded(op, p, x, g, stride, padding, dilation);
    }
  }
  return input.dim() == 3 ? y.squeeze(0) : y;
}

}  // namespace host
}  // namespace sparseprune
