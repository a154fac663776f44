// This ISA's SparseKernelTable (see sparse_table.h). Constant-initialised: no static initialisers.
#include "sparse_kernels.h"

namespace sparseprune {
namespace cpu {

const SparseKernelTable& SP_ISA_FN(sparse_kernels)() {
  static constexpr SparseKernelTable table{SP_ISA_NAME, &spmv, &spmm, &im2col};
  return table;
}

}  // namespace cpu
}  // namespace sparseprune
