// Autograd for the single-layer ops (linear_forward, linear_backward), in C++, so that
// derivatives of any order stay on pylibnn's kernels (the fused ops: fused_autograd.cpp):
//   linear_forward   y = x Wᵀ + b; its backward is the linear_backward op;
//   linear_backward  (gx, gW, gb) = (gy W, gyᵀ x, gyᵀ 1); its backward is expressed with
//                    the same two ops again, called through the dispatcher, so a
//                    backward run with create_graph=True records them in turn.
// pylibnn.linear and pylibnn.Linear go through here, so a tiny layer costs no Python
// autograd.Function (about as much as the whole F.linear forward+backward at the
// tutorial's sizes). pylibnn.LinearFunction, the public Python autograd.Function, calls the
// same two ops, so there is one backward formula at every order.
#include <torch/autograd.h>
#include <torch/library.h>

#include "autograd.h"
#include "op_calls.h"

namespace pylibnn {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// A stand-in of the right shape that owns no memory, for an operand the backward op
// takes for its shape but will not read. Sizes are SymInts so that torch.compile and
// torch.export can trace the backward with dynamic shapes.
at::Tensor shape_only(const at::Tensor& like, c10::SymIntArrayRef sizes) {
  return at::zeros({}, like.options()).expand_symint(sizes);
}

bool requires_grad(const std::optional<at::Tensor>& t) {
  return t.has_value() && t->defined() && t->requires_grad();
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
    ctx->saved_data["input_sizes"] = input.sym_sizes();
    ctx->saved_data["weight_sizes"] = weight.sym_sizes();
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
        saved[0].defined() ? saved[0] : shape_only(grad_output, ctx->saved_data["input_sizes"].toSymIntVector());
    const at::Tensor weight =
        saved[1].defined() ? saved[1] : shape_only(grad_output, ctx->saved_data["weight_sizes"].toSymIntVector());
    auto [grad_input, grad_weight, grad_bias] = call_linear_backward(grad_output, input, weight, mask);
    return {mask[0] ? grad_input : at::Tensor(), mask[1] ? grad_weight : at::Tensor(),
            mask[2] ? grad_bias : at::Tensor()};
  }
};

// The derivative of linear_backward. With gx = gy W, gW = gyᵀ x, gb = gyᵀ 1 and the
// gradients (ggx, ggW, ggb) flowing into them:
//   d gy = ggx Wᵀ + x ggWᵀ + 1 ggbᵀ = linear_forward(ggx, W, ggb) + linear_forward(x, ggW)
//   d x  = gy ggW                   = linear_backward(gy, x, ggW, [1, 0, 0]).grad_input
//   d W  = gyᵀ ggx                  = linear_backward(gy, ggx, W, [0, 1, 0]).grad_weight
// A gradient the forward did not compute (its mask entry false, returned empty) or that
// nothing flows into (undefined) contributes nothing.
class LinearBackwardFunction : public torch::autograd::Function<LinearBackwardFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& grad_output, const at::Tensor& input,
                               const at::Tensor& weight, std::array<bool, 3> output_mask) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [grad_input, grad_weight, grad_bias] = call_linear_backward(grad_output, input, weight, output_mask);
    // Undefined incoming gradients stay undefined: materializing them would cost GEMMs of zeros.
    ctx->set_materialize_grads(false);
    // d gy reads W (through ggx) and x (through ggW); d x and d W read gy.
    const bool needs_grad_output_grad = grad_output.requires_grad();
    ctx->save_for_backward({input.requires_grad() || weight.requires_grad() ? grad_output : at::Tensor(),
                            needs_grad_output_grad && output_mask[1] ? input : at::Tensor(),
                            needs_grad_output_grad && output_mask[0] ? weight : at::Tensor()});
    ctx->saved_data["output_mask"] = c10::List<bool>({output_mask[0], output_mask[1], output_mask[2]});
    ctx->saved_data["grad_output_sizes"] = grad_output.sym_sizes();
    ctx->saved_data["input_sizes"] = input.sym_sizes();
    ctx->saved_data["weight_sizes"] = weight.sym_sizes();
    return {grad_input, grad_weight, grad_bias};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const c10::List<bool> output_mask = ctx->saved_data["output_mask"].toBoolList();
    const auto incoming = [&](size_t i) { return output_mask[i] ? grads[i] : at::Tensor(); };
    const at::Tensor grad_grad_input = incoming(0), grad_grad_weight = incoming(1), grad_grad_bias = incoming(2);
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor& grad_output = saved[0];
    // d x and d W read x and W for their shapes alone; unsaved ones (grad_output needs no
    // gradient) travel as stand-ins.
    const auto saved_or_stand_in = [&](const at::Tensor& t, const char* sizes) {
      return t.defined() || !grad_output.defined() ? t
                                                   : shape_only(grad_output, ctx->saved_data[sizes].toSymIntVector());
    };
    const at::Tensor input = saved_or_stand_in(saved[1], "input_sizes");
    const at::Tensor weight = saved_or_stand_in(saved[2], "weight_sizes");

    at::Tensor d_grad_output, d_input, d_weight;
    if (ctx->needs_input_grad(0)) {
      std::optional<at::Tensor> bias_term = grad_grad_bias.defined() ? std::optional(grad_grad_bias) : std::nullopt;
      if (grad_grad_input.defined()) {
        d_grad_output = call_linear_forward(grad_grad_input, weight, bias_term);
        bias_term = std::nullopt;
      }
      if (grad_grad_weight.defined()) {
        at::Tensor term = call_linear_forward(input, grad_grad_weight, bias_term);
        d_grad_output = d_grad_output.defined() ? d_grad_output.add(term) : term;
        bias_term = std::nullopt;
      }
      if (bias_term.has_value()) {
        // Only ggb flows in: d gy = 1 ggbᵀ, broadcast over the rows of gy.
        d_grad_output = bias_term->expand_symint(ctx->saved_data["grad_output_sizes"].toSymIntVector());
      }
    }
    if (ctx->needs_input_grad(1) && grad_grad_weight.defined()) {
      d_input = std::get<0>(call_linear_backward(grad_output, input, grad_grad_weight, {true, false, false}));
    }
    if (ctx->needs_input_grad(2) && grad_grad_input.defined()) {
      d_weight = std::get<1>(call_linear_backward(grad_output, grad_grad_input, weight, {false, true, false}));
    }
    return {d_grad_output, d_input, d_weight, at::Tensor()};
  }
};

}  // namespace

at::Tensor AutogradOps::linear_forward(const at::Tensor& input, const at::Tensor& weight,
                                       const std::optional<at::Tensor>& bias) {
  if (!at::GradMode::is_enabled() || !(input.requires_grad() || weight.requires_grad() || requires_grad(bias))) {
    // Nothing to record (inference, frozen layers): skip building an autograd context.
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return call_linear_forward(input, weight, bias);
  }
  return LinearForwardFunction::apply(input, weight, bias);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> AutogradOps::linear_backward(const at::Tensor& grad_output,
                                                                            const at::Tensor& input,
                                                                            const at::Tensor& weight,
                                                                            std::array<bool, 3> output_mask) {
  if (!at::GradMode::is_enabled() || !(grad_output.requires_grad() || input.requires_grad() || weight.requires_grad())) {
    // The usual case: a first-order backward (create_graph=False) records nothing.
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return call_linear_backward(grad_output, input, weight, output_mask);
  }
  variable_list grads = LinearBackwardFunction::apply(grad_output, input, weight, output_mask);
  return {grads[0], grads[1], grads[2]};
}

}  // namespace pylibnn

PYLIBNN_REGISTER_OPS(pylibnn, Autograd, pylibnn::AutogradOps)
