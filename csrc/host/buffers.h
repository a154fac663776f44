// Large CPU buffers of the mask ops, from a small pool of huge-page blocks
// (Note [Large CPU buffers] in buffers.cpp).
#pragma once
#include <ATen/ATen.h>

namespace sparseprune {
namespace host {

// A contiguous tensor with `like`'s shape, dtype and device; its values are unspecified. CPU
// tensors of kPooledMinBytes or more come from the pool, everything else from at::empty_like.
at::Tensor empty_buffer(const at::Tensor& like);

constexpr int64_t kPooledMinBytes = int64_t{4} << 20;

}  // namespace host
}  // namespace sparseprune
