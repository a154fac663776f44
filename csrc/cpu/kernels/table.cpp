// This ISA's KernelTable (see kernel_table.h). Constant-initialised: no static initialisers run.
#include "kernels.h"

namespace sparseprune {
namespace cpu {

const KernelTable& SP_ISA_FN(kernels)() {
  static constexpr KernelTable table{SP_ISA_NAME, &aslp_forward, &aslp_backward, &noise};
  return table;
}

}  // namespace cpu
}  // namespace sparseprune
