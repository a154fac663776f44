// CUDA implementations of the sparseprune ops: the same host functions, whose fused passes launch
// the kernels of csrc/cuda/*.cu.
#include "../host/register.h"

TORCH_LIBRARY_IMPL(sparseprune, CUDA, m) { sparseprune::host::register_device_impls(m); }
