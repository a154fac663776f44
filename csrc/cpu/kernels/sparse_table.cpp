// This ISA's SparseKernels table (csrc/cpu/tables.h).
#include "sparse_kernels.h"

SP_KERNEL_TABLE(SparseKernels, &spmv, &spmm, &im2col, &transpose)
