// This ISA's MaskKernels table (csrc/cpu/tables.h).
#include "mask_kernels.h"

SP_KERNEL_TABLE(MaskKernels, &run_stochastic_forward, &run_stochastic_backward, &run_dwr_collect,
                &run_dwr_finish, &run_dwr_count, &run_dwr_apply, &run_topk_histogram,
                &run_topk_count_ties, &run_topk_band, &run_topk_forward, &run_topk_backward,
                &run_noise)
