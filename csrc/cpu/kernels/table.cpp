// This ISA's KernelTable (see kernel_table.h). Constant-initialised: no static initialisers run.
#include "kernels.h"

namespace sparseprune {
namespace cpu {

const KernelTable& SP_ISA_FN(kernels)() {
  static constexpr KernelTable table{SP_ISA_NAME,
                                     &run_stochastic_forward,
                                     &run_stochastic_backward,
                                     &run_dwr_collect,
                                     &run_dwr_finish,
                                     &run_topk_histogram,
                                     &run_topk_count_ties,
                                     &run_topk_forward,
                                     &run_topk_backward,
                                     &run_noise};
  return table;
}

}  // namespace cpu
}  // namespace sparseprune
