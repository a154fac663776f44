// Registers the device-agnostic op implementations for one dispatch key (CPU or CUDA).
#pragma once
#include <torch/library.h>

namespace sparseprune {
namespace host {

void register_device_impls(torch::Library& m);

}  // namespace host
}  // namespace sparseprune
