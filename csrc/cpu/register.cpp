// CPU implementations of the sparseprune ops.
#include "../host/register.h"

TORCH_LIBRARY_IMPL(sparseprune, CPU, m) { sparseprune::host::register_device_impls(m); }
