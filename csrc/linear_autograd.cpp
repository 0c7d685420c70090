// Autograd for the linear_forward op, in C++: calling torch.ops.pylibnn.linear_forward on
// tensors that require grad records a node whose backward is the linear_backward op.
// pylibnn.linear and pylibnn.Linear go through here, so a tiny layer costs no Python
// autograd.Function (about as much as the whole F.linear forward+backward at the
// tutorial's sizes). pylibnn.LinearFunction, the public Python autograd.Function, calls the
// same two ops, so there is one backward formula.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

namespace pylibnn {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor call_linear_forward(const at::Tensor& input, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("pylibnn::linear_forward", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&)>();
  return op.call(input, weight, bias);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> call_linear_backward(const at::Tensor& grad_output,
                                                                    const at::Tensor& input,
                                                                    const at::Tensor& weight,
                                                                    std::array<bool, 3> output_mask) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("pylibnn::linear_backward", "")
          .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                const at::Tensor&, std::array<bool, 3>)>();
  return op.call(grad_output, input, weight, output_mask);
}

// A stand-in of the right shape that owns no memory, for an operand the backward op
// takes for its shape but will not read.
at::Tensor shape_only(const at::Tensor& like, at::IntArrayRef sizes) {
  return at::zeros({}, like.options()).expand(sizes);
}

class LinearForwardFunction : public torch::autograd::Function<LinearForwardFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    at::Tensor output = call_linear_forward(input, weight, bias);
    // Save only what the requested gradients read: grad_input needs the weight,
    // grad_weight the input, grad_bias neither.
    ctx->save_for_backward({weight.requires_grad() ? input : at::Tensor(),
                            input.requires_grad() ? weight : at::Tensor()});
    ctx->saved_data["input_sizes"] = input.sizes();
    ctx->saved_data["weight_sizes"] = weight.sizes();
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    return output;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    // A missing bias is not an input edge of the node: ask about it only when it exists.
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    const std::array<bool, 3> mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                      has_bias && ctx->needs_input_grad(2)};
    if (!mask[0] && !mask[1] && !mask[2]) return {at::Tensor(), at::Tensor(), at::Tensor()};
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& grad_output = grad_outputs[0];
    const at::Tensor input =
        saved[0].defined() ? saved[0] : shape_only(grad_output, ctx->saved_data["input_sizes"].toIntVector());
    const at::Tensor weight =
        saved[1].defined() ? saved[1] : shape_only(grad_output, ctx->saved_data["weight_sizes"].toIntVector());
    auto [grad_input, grad_weight, grad_bias] = call_linear_backward(grad_output, input, weight, mask);
    return {mask[0] ? grad_input : at::Tensor(), mask[1] ? grad_weight : at::Tensor(),
            mask[2] ? grad_bias : at::Tensor()};
  }
};

at::Tensor linear_forward_autograd(const at::Tensor& input, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias) {
  const bool bias_requires_grad = bias.has_value() && bias->defined() && bias->requires_grad();
  if (!at::GradMode::is_enabled() || !(input.requires_grad() || weight.requires_grad() || bias_requires_grad)) {
    // Nothing to record (inference, frozen layers): skip building an autograd context.
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return call_linear_forward(input, weight, bias);
  }
  return LinearForwardFunction::apply(input, weight, bias);
}

}  // namespace
}  // namespace pylibnn

TORCH_LIBRARY_IMPL(pylibnn, Autograd, m) {
  m.impl("linear_forward", &pylibnn::linear_forward_autograd);
}
