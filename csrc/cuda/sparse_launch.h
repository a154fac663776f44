// CUDA launchers of the sparse inference kernels (csrc/cuda/sparse.cu, built only with CUDA). Each
// launches on the current stream of `device` under a device guard and checks the launch.
#pragma once
#include <sparseprune/sparse_params.h>

namespace sparseprune {
namespace cuda {

void sparse_spmv(const SpmvParams& p, int device);
void sparse_spmm(const SpmmParams& p, int device);

}  // namespace cuda
}  // namespace sparseprune
