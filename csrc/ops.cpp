// The one list of operator schemas, and the pybind11 module sparseprune._C with its small helpers.
// Implementations: csrc/host (device-agnostic), registered in csrc/host/register.cpp; autograd in
// csrc/host/autograd.cpp (reparam_weight's in sparseprune/ops/autograd.py). Fake (meta) kernels
// live in sparseprune/ops/.
#include <torch/extension.h>
#include <torch/library.h>

#include "cpu/dispatch.h"
#include "host/route.h"  // kWithCuda

#ifndef SP_TORCH_VERSION
#define SP_TORCH_VERSION "unknown"
#endif
#ifndef SP_CUDA_VERSION
#define SP_CUDA_VERSION ""
#endif
#ifndef SP_CUDA_ARCHS
#define SP_CUDA_ARCHS ""
#endif

TORCH_LIBRARY(sparseprune, m) {
  // Every masking op takes the same mask arguments (csrc/host/ops.h): scale (the Smart Rescale
  // scalar), method ("aslp", "supermask", "edge_popup"), rescale ("none", "smart", "dwr"),
  // temperature (ASLP), density (Edge-Popup: fraction kept) and rng, a CPU int64 tensor
  // [seed, offset]: a tensor rather than two ints so that torch.compile neither specialises on
  // its values nor breaks the graph to read them. The forward ops take all of them, because
  // their backward (csrc/host/autograd.cpp) needs them.
  m.def(
      "masked_weight(Tensor weight, Tensor scores, Tensor? scale, str method, str rescale, "
      "float temperature, float density, Tensor rng) -> Tensor");
  m.def(
      "masked_weight_backward(Tensor grad, Tensor weight, Tensor scores, Tensor? scale, "
      "str method, str rescale, float temperature, float density, Tensor rng, "
      "bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  m.def(
      "masked_linear(Tensor input, Tensor weight, Tensor scores, Tensor? bias, Tensor? scale, "
      "str method, str rescale, float temperature, float density, Tensor rng) -> Tensor");
  m.def(
      "masked_linear_backward(Tensor grad_output, Tensor input, Tensor weight, Tensor scores, "
      "Tensor? scale, str method, str rescale, float temperature, float density, Tensor rng, "
      "bool[5] output_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "masked_conv2d(Tensor input, Tensor weight, Tensor scores, Tensor? bias, Tensor? scale, "
      "int[2] stride, int[2] padding, int[2] dilation, int groups, str method, str rescale, "
      "float temperature, float density, Tensor rng) -> Tensor");
  m.def(
      "masked_conv2d_backward(Tensor grad_output, Tensor input, Tensor weight, Tensor scores, "
      "Tensor? scale, int[2] stride, int[2] padding, int[2] dilation, int groups, str method, "
      "str rescale, float temperature, float density, Tensor rng, bool[5] output_mask) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // Budget-aware weight reparametrisation: (w_hat, sum of h) from the weight and the layer's
  // scalar t, power = n; the sum is computed only when compute_sum is set (else empty).
  m.def("reparam_weight(Tensor weight, Tensor t, int power, bool compute_sum) -> (Tensor, Tensor)");
  m.def(
      "reparam_weight_backward(Tensor grad, Tensor? grad_sum, Tensor weight, Tensor t, int power, "
      "bool[2] output_mask) -> (Tensor, Tensor)");
  // Hard-concrete gates z = clamp(sigmoid((L + log_alpha) / beta) * (zeta - gamma) + gamma, 0, 1)
  // with L the logistic noise of rng (element i of log_alpha takes Philox element i).
  m.def("hard_concrete_sample(Tensor log_alpha, float beta, float gamma, float zeta, Tensor rng) "
        "-> Tensor");
  m.def(
      "hard_concrete_sample_backward(Tensor grad, Tensor log_alpha, float beta, float gamma, "
      "float zeta, Tensor rng, bool[1] output_mask) -> Tensor");
  // N:M pattern masks (include/sparseprune/nm.h, docs/METHODS.md 13): n kept of every m weights
  // along dimension 1 (the input). method "nm_gumbel": scores are the (groups, C(m, n)) pattern
  // logits, a sampled pattern per group (hard, or MaskLLM's soft mask), scale (Smart Rescale);
  // "nm_topk": weight-shaped scores, the top n |s|; "srste": the top n |w|, decay (lambda_w) in
  // the weight gradient, scores unused. schedule: a CPU float64 tensor [temperature, logit_scale]
  // (kappa), a tensor like rng so that torch.compile does not specialise on the values a training
  // schedule changes every step.
  m.def(
      "nm_masked_weight(Tensor weight, Tensor scores, Tensor? scale, str method, int n, int m, "
      "Tensor schedule, bool hard, float decay, Tensor rng) -> Tensor");
  m.def(
      "nm_masked_weight_backward(Tensor grad, Tensor weight, Tensor scores, Tensor? scale, "
      "str method, int n, int m, Tensor schedule, bool hard, float decay, Tensor rng, "
      "bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  m.def(
      "nm_masked_linear(Tensor input, Tensor weight, Tensor scores, Tensor? bias, Tensor? scale, "
      "str method, int n, int m, Tensor schedule, bool hard, float decay, Tensor rng) -> Tensor");
  m.def(
      "nm_masked_linear_backward(Tensor grad_output, Tensor input, Tensor weight, Tensor scores, "
      "Tensor? scale, str method, int n, int m, Tensor schedule, bool hard, float decay, "
      "Tensor rng, bool[5] output_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // Edge-Popup's selection alone: the threshold t of the top round(density * numel) |scores|
  // (float32, 0-dim, on the scores' device): |s| > t is kept, |s| == t kept in index order up to
  // the count, the rest dropped (t = 0 when everything is kept). What masked_weight's forward
  // and backward run before their pass over the weight (NaN when it keeps nothing); the
  // benchmarks time it (T6).
  m.def("topk_threshold(Tensor scores, float density) -> Tensor");
  // The random stream itself: raw Philox words (int32 bit patterns) and logistic noise.
  m.def("philox_bits(int numel, int seed, int offset, Device device) -> Tensor");
  m.def("logistic_noise(int numel, int seed, int offset, Device device) -> Tensor");

  // ---- Sparse inference (issue 7) ----
  // A compressed float32 weight: `values` (the kept weights, row-major), `row_ptr` (int32, rows + 1
  // offsets into values) and `indices`: format "csr" -> int32 column per value; "bitmap" -> int32
  // words (rows, ceil(cols / 32)), bit b of word w marks column 32 w + b. weight_shape is the
  // dense weight's shape. Inference only: no backward.
  m.def(
      "sparse_linear(Tensor input, Tensor values, Tensor row_ptr, Tensor indices, Tensor? bias, "
      "str format, int[2] weight_shape) -> Tensor");
  m.def(
      "sparse_conv2d(Tensor input, Tensor values, Tensor row_ptr, Tensor indices, Tensor? bias, "
      "str format, int[4] weight_shape, int[2] stride, int[2] padding, int[2] dilation, "
      "int groups) -> Tensor");
  // N:M weights (format "nm"): `values` holds n slots per group of m consecutive inputs (a pruned
  // slot holds 0), row after row; `indices` (int32, (out, words)) packs each slot's in-group
  // position in 1 (m = 2), 2 (m <= 4) or 4 (m <= 8) bits, slot j of a row at bit (j % (32 / bits))
  // * bits of word j / (32 / bits). CPU only.
  m.def(
      "nm_linear(Tensor input, Tensor values, Tensor indices, Tensor? bias, int n, int m, "
      "int[2] weight_shape) -> Tensor");
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace cpu = sparseprune::cpu;
  m.doc() = "sparseprune compiled kernels (ops are registered as torch.ops.sparseprune.*)";
  m.def("active_cpu_isa", &cpu::active_isa, "The CPU ISA the kernels currently run with.");
  m.def("compiled_cpu_isas", &cpu::compiled_isas, "CPU ISAs built into this extension.");
  m.def("supported_cpu_isas", &cpu::supported_isas, "Built CPU ISAs this CPU can run.");
  m.def("set_cpu_isa", &cpu::set_isa, "Force a CPU ISA for this process (scalar, avx2, avx512).");
  m.def("build_info", []() {
    pybind11::dict info;
    info["torch_version"] = SP_TORCH_VERSION;
    info["cuda"] = sparseprune::host::kWithCuda;
    info["cuda_version"] = SP_CUDA_VERSION;
    info["cuda_archs"] = SP_CUDA_ARCHS;
    info["compiler"] = __VERSION__;
    info["compiled_cpu_isas"] = cpu::compiled_isas();
    return info;
  });
}
