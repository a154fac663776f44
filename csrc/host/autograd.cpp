// Autograd of the fused masking ops, in C++: a Python autograd Function (torch.library's
// register_autograd) cost about 40 us of a masked layer's 100 us forward on small layers, and
// this one node does the same work for every op "X" whose schema has a backward op
// "X_backward(grad, <arguments of X by name>..., bool[D] output_mask) -> D gradients" — the
// gradients of X's first D arguments. Forward saves exactly the arguments the backward op names
// (tensors through save_for_backward, options as values), never the noise, the mask or the
// masked weight; backward regenerates them in its fused passes. Built from the schemas, so a new
// op of that shape needs one line in kOps below and nothing else.
//
// The backward ops themselves are not differentiable: sparseprune/ops/autograd.py gives them a
// formula that raises, so a double backward fails loudly instead of returning wrong values. Only
// a backward with create_graph goes through it: the usual one (grad mode off) calls the backward
// op below the Autograd key, without the trip through Python.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <mutex>
#include <string>
#include <vector>

namespace sparseprune {
namespace host {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using torch::jit::Stack;

// What the backward op takes, read once from the two schemas.
struct Plan : torch::CustomClassHolder {
  c10::OperatorHandle backward;
  size_t differentiable = 0;  // D: the forward's first D arguments may get gradients
  struct Slot {
    size_t forward_index;  // which forward argument
    bool is_tensor;        // saved with save_for_backward, else kept as a value
    bool optional;         // Tensor?: an undefined saved tensor goes back as None
  };
  std::vector<Slot> slots;  // the backward op's arguments between grad and output_mask

  explicit Plan(const c10::OperatorHandle& forward)
      : backward(c10::Dispatcher::singleton().findSchemaOrThrow(
            (forward.schema().name() + "_backward").c_str(), "")) {
    const auto& fwd = forward.schema().arguments();
    const auto& bwd = backward.schema().arguments();
    const auto& mask = bwd.back();
    TORCH_CHECK(mask.name() == "output_mask" && mask.N().has_value(),
                backward.schema().name(), ": the last argument must be bool[D] output_mask");
    differentiable = static_cast<size_t>(*mask.N());
    for (size_t i = 0; i < differentiable; ++i) {
      TORCH_CHECK(fwd.at(i).type()->kind() == c10::TypeKind::TensorType ||
                      fwd.at(i).type()->kind() == c10::TypeKind::OptionalType,
                  forward.schema().name(), ": argument ", i, " must be a tensor");
    }
    for (size_t b = 1; b + 1 < bwd.size(); ++b) {
      size_t f = 0;
      while (f < fwd.size() && fwd[f].name() != bwd[b].name()) ++f;
      TORCH_CHECK(f < fwd.size(), backward.schema().name(), ": argument ", bwd[b].name(),
                  " is not an argument of ", forward.schema().name());
      const auto& type = fwd[f].type();
      const bool optional = type->kind() == c10::TypeKind::OptionalType;
      const auto& inner = optional ? type->castRaw<c10::OptionalType>()->getElementType() : type;
      slots.push_back({f, inner->kind() == c10::TypeKind::TensorType, optional});
    }
  }
};

// The forward call in flight: the op, the dispatcher stack holding its arguments, and for each of
// the first D arguments its index among autograd's inputs (-1 for an absent optional tensor,
// which autograd must not see: it has no device).
struct Call {
  const c10::OperatorHandle& op;
  Stack* stack;
  const c10::intrusive_ptr<Plan>& plan;
  std::vector<int64_t> input_index;
};

class FusedMaskFunction : public torch::autograd::Function<FusedMaskFunction> {
 public:
  // `differentiable` repeats the call's defined first D arguments so that autograd sees them as
  // inputs.
  static at::Tensor forward(AutogradContext* ctx, at::TensorList differentiable,
                            const Call& call) {
    const Plan& plan = *call.plan;
    const auto args = torch::jit::last(*call.stack, call.op.schema().arguments().size());
    std::vector<at::Tensor> tensors;
    std::vector<c10::IValue> values;
    for (const auto& slot : plan.slots) {
      const c10::IValue& arg = args[slot.forward_index];
      if (!slot.is_tensor) {
        values.push_back(arg);
      } else {
        tensors.push_back(arg.isNone() ? at::Tensor() : arg.toTensor());
      }
    }
    ctx->save_for_backward(tensors);
    ctx->saved_data["values"] = c10::ivalue::Tuple::create(std::move(values));
    ctx->saved_data["plan"] = c10::IValue::make_capsule(call.plan);
    ctx->saved_data["inputs"] = call.input_index;
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    call.op.callBoxed(call.stack);
    return torch::jit::pop(*call.stack).toTensor();
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto plan = c10::static_intrusive_pointer_cast<Plan>(ctx->saved_data["plan"].toCapsule());
    const auto tensors = ctx->get_saved_variables();
    const auto values = ctx->saved_data["values"].toTuple();
    const std::vector<int64_t> input_index = ctx->saved_data["inputs"].toIntVector();
    Stack stack;
    stack.reserve(plan->slots.size() + 2);
    stack.emplace_back(std::move(grad_outputs[0]));
    size_t t = 0, v = 0;
    for (const auto& slot : plan->slots) {
      if (!slot.is_tensor) {
        stack.push_back(values->elements()[v++]);
      } else if (slot.optional && !tensors[t].defined()) {
        stack.emplace_back();
        ++t;
      } else {
        stack.emplace_back(tensors[t++]);
      }
    }
    c10::List<bool> output_mask;
    for (const int64_t input : input_index) {
      output_mask.push_back(input >= 0 && ctx->needs_input_grad(static_cast<size_t>(input)));
    }
    stack.emplace_back(std::move(output_mask));
    if (at::GradMode::is_enabled()) {  // create_graph: through the formula that refuses it
      plan->backward.callBoxed(stack);
    } else {  // the usual backward: past that Python formula, which cost ~20 us a call
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      plan->backward.callBoxed(stack);
    }
    // One per autograd input, + the Call argument, which gets none.
    const size_t inputs = static_cast<size_t>(
        std::count_if(input_index.begin(), input_index.end(), [](int64_t i) { return i >= 0; }));
    variable_list grads(inputs + 1);
    for (size_t i = 0; i < plan->differentiable; ++i) {
      if (input_index[i] >= 0 && stack[i].isTensor()) {
        grads[static_cast<size_t>(input_index[i])] = std::move(stack[i]).toTensor();
      }
    }
    return grads;
  }
};

// The boxed Autograd kernel of one op: builds its Plan on the first call (every schema is
// registered by then), then runs FusedMaskFunction over the arguments on the stack.
class AutogradKernel : public c10::OperatorKernel {
 public:
  void operator()(const c10::OperatorHandle& op, c10::DispatchKeySet, Stack* stack) {
    std::call_once(once_, [&] { plan_ = c10::make_intrusive<Plan>(op); });
    const auto args = torch::jit::last(*stack, op.schema().arguments().size());
    std::vector<at::Tensor> differentiable;
    std::vector<int64_t> input_index(plan_->differentiable, -1);
    for (size_t i = 0; i < plan_->differentiable; ++i) {
      if (args[i].isNone()) continue;
      input_index[i] = static_cast<int64_t>(differentiable.size());
      differentiable.push_back(args[i].toTensor());
    }
    at::Tensor out = FusedMaskFunction::apply(at::TensorList(differentiable),
                                              Call{op, stack, plan_, std::move(input_index)});
    torch::jit::push(*stack, std::move(out));
  }

 private:
  std::once_flag once_;
  c10::intrusive_ptr<Plan> plan_;
};

constexpr const char* kOps[] = {"masked_weight",        "masked_linear",    "masked_conv2d",
                                "hard_concrete_sample", "nm_masked_weight", "nm_masked_linear"};

}  // namespace
}  // namespace host
}  // namespace sparseprune

TORCH_LIBRARY_IMPL(sparseprune, Autograd, m) {
  for (const char* name : sparseprune::host::kOps) {
    m.impl(name, torch::CppFunction::makeFromBoxedFunctor(
                     std::make_unique<sparseprune::host::AutogradKernel>()));
  }
}
