// sparseprune::hard_concrete_sample / hard_concrete_sample_backward: hard-concrete gates from
// log_alpha and the logistic noise of rng (include/sparseprune/hard_concrete.h), one fused pass
// each way. Backward regenerates the noise from rng: nothing but log_alpha and rng is saved.
#include <cmath>

#include "check.h"
#include "ops.h"
#include "route.h"

namespace sparseprune {
namespace host {
namespace {

void check_hard_concrete(const char* op, const at::Tensor& log_alpha, double beta, double gamma,
                         double zeta, const at::Tensor& rng) {
  kernel_dtype(op, "log_alpha", log_alpha);
  check_cpu_or_cuda(op, "log_alpha", log_alpha.device());
  // The same conditions and wording as sparseprune/_args.py hard_concrete.
  TORCH_CHECK_VALUE(std::isfinite(beta) && beta > 0, "sparseprune::", op,
                    ": beta must be a finite number > 0, got ", beta);
  TORCH_CHECK_VALUE(std::isfinite(gamma) && gamma < 0, "sparseprune::", op,
                    ": gamma must be a finite number < 0 (exact zeros need it), got ", gamma);
  TORCH_CHECK_VALUE(std::isfinite(zeta) && zeta > 1, "sparseprune::", op,
                    ": zeta must be a finite number > 1 (exact ones need it), got ", zeta);
  check_rng(op, rng);
}

HardConcreteParams params_for(const at::Tensor& log_alpha, double beta, double gamma,
                              double zeta, const at::Tensor& rng) {
  HardConcreteParams p;
  p.numel = log_alpha.numel();
  const int64_t* seed_offset = rng.data_ptr<int64_t>();
  p.seed = static_cast<uint64_t>(seed_offset[0]);
  p.offset = static_cast<uint64_t>(seed_offset[1]);
  p.inv_beta = 1.0 / beta;
  p.width = zeta - gamma;
  p.gamma = gamma;
  p.dtype = kernel_dtype("hard_concrete", "log_alpha", log_alpha);
  p.log_alpha = log_alpha.data_ptr();
  return p;
}

// A NaN log_alpha has no gate: refused on CPU, as NaN scores are (CUDA does not look: a sync).
template <bool kBackward>
void run_hard_concrete(const char* op, const HardConcreteParams& p, const at::Device& device) {
  check_no_nan(op, run_tiles(op, device, p,
                             kBackward ? &cpu::HardConcreteKernels::backward
                                       : &cpu::HardConcreteKernels::forward,
                             kBackward ? SP_CUDA(hard_concrete_backward)
                                       : SP_CUDA(hard_concrete_forward)),
               "log_alpha");
}

}  // namespace

at::Tensor hard_concrete_sample(const at::Tensor& log_alpha, double beta, double gamma,
                                double zeta, const at::Tensor& rng) {
  constexpr const char* op = "hard_concrete_sample";
  check_hard_concrete(op, log_alpha, beta, gamma, zeta, rng);
  // Element i in row-major order takes Philox element i, whatever the memory layout.
  const at::Tensor la = log_alpha.contiguous();
  at::Tensor z = at::empty_like(la, at::MemoryFormat::Contiguous);
  HardConcreteParams p = params_for(la, beta, gamma, zeta, rng);
  p.z = z.data_ptr();
  run_hard_concrete<false>(op, p, la.device());
  return z;
}

at::Tensor hard_concrete_sample_backward(const at::Tensor& grad, const at::Tensor& log_alpha,
                                         double beta, double gamma, double zeta,
                                         const at::Tensor& rng, std::array<bool, 1> output_mask) {
  constexpr const char* op = "hard_concrete_sample_backward";
  check_hard_concrete(op, log_alpha, beta, gamma, zeta, rng);
  TORCH_CHECK_VALUE(grad.sizes() == log_alpha.sizes(), "sparseprune::", op,
                    ": grad must have log_alpha's shape ", log_alpha.sizes(), ", got ",
                    grad.sizes());
  TORCH_CHECK_TYPE(grad.scalar_type() == log_alpha.scalar_type(), "sparseprune::", op,
                   ": grad must have log_alpha's dtype ", log_alpha.scalar_type(), ", got ",
                   grad.scalar_type());
  check_same_device(op, "grad", grad, "log_alpha", log_alpha);
  if (!output_mask[0]) return at::Tensor();
  const at::Tensor la = log_alpha.contiguous(), g = grad.contiguous();
  at::Tensor grad_log_alpha = at::empty_like(la, at::MemoryFormat::Contiguous);
  HardConcreteParams p = params_for(la, beta, gamma, zeta, rng);
  p.grad = g.data_ptr();
  p.grad_log_alpha = grad_log_alpha.data_ptr();
  run_hard_concrete<true>(op, p, la.device());
  return grad_log_alpha;
}

}  // namespace host
}  // namespace sparseprune
