// Autograd for the fused ops, in C++ (as linear_autograd.cpp for the plain layer):
//   linear_act_forward  y = act(x Wᵀ + b); its backward is the linear_act_backward op on the
//                       saved pre-activation z.
//   mlp_forward         the whole network; its backward is the mlp_backward op on the saved
//                       hidden activations.
// First-order backward (the usual case) runs the fused kernels. A backward that must itself
// be differentiable (create_graph=True, gradgradcheck, gradient penalties) is instead written
// with differentiable pieces: the forward's pre-activations are recomputed with the
// linear_forward op (so they depend on x, W and b), activation derivatives are composed from
// elementwise torch ops, and the products are the linear_backward op, whose own autograd
// (linear_autograd.cpp) carries derivatives of any order. The same composition is the
// Autograd kernel of the two backward ops when their inputs require grad.
#include <string>

#include <ATen/TensorOperators.h>
#include <ATen/ops/erf.h>
#include <ATen/ops/exp.h>
#include <ATen/ops/sigmoid.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/tanh.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "autograd.h"
#include "mlp_layout.h"
#include "op_calls.h"
#include "ops/op_checks.h"
#include "ops/op_layer.h"

namespace pylibnn {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

bool requires_grad(const at::Tensor& t) { return t.defined() && t.requires_grad(); }
bool requires_grad(const std::optional<at::Tensor>& t) { return t.has_value() && requires_grad(*t); }

// The arithmetic of activation.h's formulas on tensors, with differentiable ATen ops, so
// act(z) and grad * act'(z) recorded by autograd carry derivatives of any order. Constants
// stay doubles (a Scalar operand), so the results keep z's dtype.
struct TensorMath {
  static double c(double value) { return value; }
  template <typename A, typename B>
  static at::Tensor add(const A& a, const B& b) { return a + b; }
  template <typename A, typename B>
  static at::Tensor sub(const A& a, const B& b) { return a - b; }
  template <typename A, typename B>
  static at::Tensor mul(const A& a, const B& b) { return a * b; }
  template <typename A, typename B>
  static at::Tensor div(const A& a, const B& b) { return a / b; }
  template <typename A, typename B, typename C>
  static at::Tensor fmadd(const A& a, const B& b, const C& c) { return a * b + c; }
  static at::Tensor exp(const at::Tensor& x) { return at::exp(x); }
  static at::Tensor tanh(const at::Tensor& x) { return at::tanh(x); }
  static at::Tensor erf(const at::Tensor& x) { return at::erf(x); }
  // at::sigmoid rather than 1 / (1 + exp(-x)): its derivative stays finite where exp(-x)
  // overflows.
  static at::Tensor sigmoid(const at::Tensor& x) { return at::sigmoid(x); }
  static at::Tensor zero_where_not_positive(const at::Tensor& z, const at::Tensor& v) {
    return at::where(z.le(0), at::zeros({}, v.options()), v);
  }
};

at::Tensor activation_of(Activation act, const at::Tensor& z) {
  return with_activation(act, [&](auto formula) { return decltype(formula)::template value<TensorMath>(z); });
}

// grad * act'(z), y = act(z) recomputed from z where the formula reads it.
at::Tensor activation_gradient_of(Activation act, const at::Tensor& grad, const at::Tensor& z) {
  return with_activation(act, [&](auto formula) {
    using Formula = decltype(formula);
    const at::Tensor y = Formula::uses_output ? Formula::template value<TensorMath>(z) : z;
    return Formula::template gradient<TensorMath>(grad, z, y);
  });
}

// grad_output * act'(z), then linear_backward: differentiable in all of its inputs.
std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_act_backward_composite(const at::Tensor& grad_output,
                                                                             const at::Tensor& input,
                                                                             const at::Tensor& weight,
                                                                             const at::Tensor& preactivation,
                                                                             Activation act,
                                                                             std::array<bool, 3> output_mask) {
  const at::Tensor grad_z = activation_gradient_of(act, grad_output, preactivation);
  return call_linear_backward(grad_z, input, weight, output_mask);
}

std::optional<at::Tensor> optional_of(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

class LinearActForwardFunction : public torch::autograd::Function<LinearActForwardFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias, const std::string& activation,
                               bool save_preactivation) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [output, preactivation] = call_linear_act_forward(input, weight, bias, activation, true);
    const bool has_bias = bias.has_value() && bias->defined();
    ctx->save_for_backward({input, weight, preactivation, has_bias ? *bias : at::Tensor()});
    ctx->saved_data["activation"] = activation;
    ctx->saved_data["has_bias"] = has_bias;
    at::Tensor returned_preactivation = save_preactivation ? preactivation : at::empty({0}, output.options());
    ctx->mark_non_differentiable({returned_preactivation});
    return {output, returned_preactivation};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    const std::array<bool, 3> mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                      has_bias && ctx->needs_input_grad(2)};
    variable_list none(5);
    if (!grad_outputs[0].defined() || (!mask[0] && !mask[1] && !mask[2])) return none;
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &input = saved[0], &weight = saved[1], &bias = saved[3];
    at::Tensor preactivation = saved[2];
    const std::string activation = ctx->saved_data["activation"].toStringRef();
    if (at::GradMode::is_enabled()) {
      // create_graph: a pre-activation that depends on x, W and b, so that the derivative
      // of act' reaches them.
      preactivation = call_linear_forward(input, weight, optional_of(bias));
    }
    auto [grad_input, grad_weight, grad_bias] =
        call_linear_act_backward(grad_outputs[0], input, weight, preactivation, activation, mask);
    return {mask[0] ? grad_input : at::Tensor(), mask[1] ? grad_weight : at::Tensor(),
            mask[2] ? grad_bias : at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> linear_act_forward_autograd(const at::Tensor& input, const at::Tensor& weight,
                                                               const std::optional<at::Tensor>& bias,
                                                               c10::string_view activation, bool save_preactivation) {
  if (!at::GradMode::is_enabled() || !(requires_grad(input) || requires_grad(weight) || requires_grad(bias))) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return call_linear_act_forward(input, weight, bias, activation, save_preactivation);
  }
  const variable_list outputs =
      LinearActForwardFunction::apply(input, weight, bias, std::string(activation), save_preactivation);
  return {outputs[0], outputs[1]};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_act_backward_autograd(const at::Tensor& grad_output,
                                                                            const at::Tensor& input,
                                                                            const at::Tensor& weight,
                                                                            const at::Tensor& preactivation,
                                                                            c10::string_view activation,
                                                                            std::array<bool, 3> output_mask) {
  if (!at::GradMode::is_enabled() || !(requires_grad(grad_output) || requires_grad(input) || requires_grad(weight) ||
                                       requires_grad(preactivation))) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return call_linear_act_backward(grad_output, input, weight, preactivation, activation, output_mask);
  }
  check_linear_backward_args(kLinearActBackward, grad_output, input, weight, &preactivation);
  const Activation act = activation_from_name(kLinearActBackward, activation);
  return linear_act_backward_composite(grad_output, input, weight, preactivation, act, output_mask);
}

// The MLP's gradients from differentiable pieces, given each layer's input a_{l-1} and
// pre-activation z_l (l < L - 1).
MlpGradients mlp_backward_composite(const at::Tensor& grad_output, const std::vector<at::Tensor>& layer_inputs,
                                    at::TensorList weights, const std::vector<at::Tensor>& preactivations,
                                    Activation act, const c10::List<bool>& has_bias, bool input_grad) {
  const int64_t L = static_cast<int64_t>(weights.size());
  std::vector<at::Tensor> grad_weights(L), grad_biases(L);
  at::Tensor grad_input = at::empty({0}, grad_output.options());
  at::Tensor grad_z = grad_output;
  for (int64_t l = L - 1; l >= 0; --l) {
    const bool needs_grad_a = l > 0 || input_grad;
    const bool has_bias_l = has_bias.get(l);
    auto [grad_a, grad_w, grad_b] =
        call_linear_backward(grad_z, layer_inputs[l], weights[l], {needs_grad_a, true, has_bias_l});
    grad_weights[l] = grad_w;
    grad_biases[l] = has_bias_l ? grad_b : at::empty({0}, grad_output.options());
    if (l == 0) {
      if (input_grad) grad_input = grad_a;
    } else {
      grad_z = activation_gradient_of(act, grad_a, preactivations[l - 1]);
    }
  }
  return {grad_input, grad_weights, grad_biases};
}

class MlpForwardFunction : public torch::autograd::Function<MlpForwardFunction> {
 public:
  // present_biases: the biases of the layers whose has_bias entry is true, in order. (The
  // op's Tensor?[] does not fit: autograd::Function makes input edges of TensorList
  // elements only, and every one of those must be a defined tensor.)
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, at::TensorList weights,
                               at::TensorList present_biases, const c10::List<bool>& has_bias,
                               const std::string& activation, bool save_hidden) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    c10::List<std::optional<at::Tensor>> bias_list;
    size_t next = 0;
    for (size_t l = 0; l < has_bias.size(); ++l)
      bias_list.push_back(has_bias.get(l) ? std::optional<at::Tensor>(present_biases[next++]) : std::nullopt);
    auto [output, hidden] = call_mlp_forward(input, weights, bias_list, activation, true);
    // The first weight's values are read only for grad_input (grad_z_0 W_0). Without an
    // input gradient it is kept outside save_for_backward, as nn.Linear does not save it:
    // an in-place update between forward and backward (an optimizer step on that layer)
    // is then no error. The backward still takes it for its shape; a double backward,
    // which recomputes layer 0 from it, checks its version itself.
    const bool input_requires_grad = requires_grad(input);
    variable_list saved = {input, hidden};
    saved.push_back(input_requires_grad ? weights[0] : at::Tensor());
    for (size_t l = 1; l < weights.size(); ++l) saved.push_back(weights[l]);
    for (const at::Tensor& b : present_biases) saved.push_back(b);
    ctx->save_for_backward(saved);
    if (!input_requires_grad) {
      ctx->saved_data["first_weight"] = weights[0];
      ctx->saved_data["first_weight_version"] = static_cast<int64_t>(weights[0]._version());
    }
    ctx->saved_data["activation"] = activation;
    ctx->saved_data["has_bias"] = has_bias;
    at::Tensor returned_hidden = save_hidden ? hidden : at::empty({0}, output.options());
    ctx->mark_non_differentiable({returned_hidden});
    return {output, returned_hidden};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const c10::List<bool> has_bias_list = ctx->saved_data["has_bias"].toBoolList();
    const int64_t L = static_cast<int64_t>(has_bias_list.size());
    const variable_list saved = ctx->get_saved_variables();
    const int64_t present = static_cast<int64_t>(saved.size()) - 2 - L;
    // Inputs as the node sees them: input, the weights, the present biases, then the three
    // non-tensor arguments.
    variable_list result(1 + L + present + 3);
    if (!grad_outputs[0].defined()) return result;
    const at::Tensor &input = saved[0], &hidden = saved[1];
    std::vector<at::Tensor> weights(saved.begin() + 2, saved.begin() + 2 + L);
    const bool first_weight_unsaved = !weights[0].defined();
    if (first_weight_unsaved) weights[0] = ctx->saved_data["first_weight"].toTensor();
    const std::string activation = ctx->saved_data["activation"].toStringRef();
    const Activation act = activation_from_name(kMlpForward, activation);
    const bool input_grad = ctx->needs_input_grad(0);

    MlpGradients grads;
    if (at::GradMode::is_enabled()) {
      TORCH_CHECK(!first_weight_unsaved ||
                      weights[0]._version() == ctx->saved_data["first_weight_version"].toInt(),
                  "pylibnn.MLP: the first layer's weight was modified by an inplace operation after the forward; "
                  "a double backward (create_graph=True) recomputes that layer from it, so call it before the update");
      // create_graph: recompute every layer with differentiable ops, then differentiate.
      std::vector<at::Tensor> layer_inputs = {input}, preactivations;
      int64_t next_bias = 2 + L;
      for (int64_t l = 0; l + 1 < L; ++l) {
        const at::Tensor bias = has_bias_list.get(l) ? saved[next_bias++] : at::Tensor();
        preactivations.push_back(call_linear_forward(layer_inputs.back(), weights[l], optional_of(bias)));
        layer_inputs.push_back(activation_of(act, preactivations.back()));
      }
      grads = mlp_backward_composite(grad_outputs[0], layer_inputs, weights, preactivations, act, has_bias_list,
                                     input_grad);
    } else {
      grads = call_mlp_backward(grad_outputs[0], input, weights, hidden, activation, has_bias_list, input_grad);
    }
    auto& [grad_input, grad_weights, grad_biases] = grads;
    result[0] = input_grad ? grad_input : at::Tensor();
    int64_t bias_index = 1 + L;
    for (int64_t l = 0; l < L; ++l) {
      result[1 + l] = ctx->needs_input_grad(1 + l) ? grad_weights[l] : at::Tensor();
      if (has_bias_list.get(l)) {
        if (ctx->needs_input_grad(bias_index)) result[bias_index] = grad_biases[l];
        ++bias_index;
      }
    }
    return result;
  }
};

std::tuple<at::Tensor, at::Tensor> mlp_forward_autograd(const at::Tensor& input, at::TensorList weights,
                                                        const c10::List<std::optional<at::Tensor>>& biases,
                                                        c10::string_view activation, bool save_hidden) {
  bool any_requires_grad = requires_grad(input);
  for (const at::Tensor& w : weights) any_requires_grad |= requires_grad(w);
  for (size_t l = 0; l < biases.size(); ++l) any_requires_grad |= requires_grad(biases.get(l));
  if (!at::GradMode::is_enabled() || !any_requires_grad) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return call_mlp_forward(input, weights, biases, activation, save_hidden);
  }
  std::vector<at::Tensor> present_biases;
  c10::List<bool> has_bias;
  for (size_t l = 0; l < biases.size(); ++l) {
    const std::optional<at::Tensor> b = biases.get(l);
    has_bias.push_back(b.has_value() && b->defined());
    if (has_bias.get(l)) present_biases.push_back(*b);
  }
  const variable_list outputs = MlpForwardFunction::apply(input, weights, at::TensorList(present_biases), has_bias,
                                                          std::string(activation), save_hidden);
  return {outputs[0], outputs[1]};
}

MlpGradients mlp_backward_autograd(const at::Tensor& grad_output, const at::Tensor& input, at::TensorList weights,
                                   const at::Tensor& hidden, c10::string_view activation, const c10::List<bool>& has_bias,
                                   bool input_grad) {
  bool any_requires_grad = requires_grad(grad_output) || requires_grad(input) || requires_grad(hidden);
  for (const at::Tensor& w : weights) any_requires_grad |= requires_grad(w);
  if (!at::GradMode::is_enabled() || !any_requires_grad) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return call_mlp_backward(grad_output, input, weights, hidden, activation, has_bias, input_grad);
  }
  // Differentiable in every input, hidden included: its bands are sliced, not copied.
  const Activation act = activation_from_name(kMlpBackward, activation);
  const std::vector<c10::SymInt> widths =
      check_mlp_backward_args(kMlpBackward, grad_output, input, weights, hidden, act, has_bias);
  const c10::SymInt M = input.sym_size(0);
  const BasicMlpHiddenLayout<c10::SymInt> layout(M, widths, act != Activation::None);
  std::vector<at::Tensor> layer_inputs = {input}, preactivations;
  for (size_t l = 0; l + 1 < widths.size(); ++l) {
    const auto band = [&](const c10::SymInt& offset) {
      return hidden.slice_symint(0, 0, M).slice_symint(1, offset, offset + widths[l]);
    };
    preactivations.push_back(band(layout.z_offset[l]));
    layer_inputs.push_back(band(layout.y_offset[l]));
  }
  return mlp_backward_composite(grad_output, layer_inputs, weights, preactivations, act, has_bias, input_grad);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> AutogradOps::linear_act_forward(const at::Tensor& input, const at::Tensor& weight,
                                                                   const std::optional<at::Tensor>& bias,
                                                                   c10::string_view activation,
                                                                   bool save_preactivation) {
  return linear_act_forward_autograd(input, weight, bias, activation, save_preactivation);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> AutogradOps::linear_act_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    const at::Tensor& preactivation, c10::string_view activation, std::array<bool, 3> output_mask) {
  return linear_act_backward_autograd(grad_output, input, weight, preactivation, activation, output_mask);
}

std::tuple<at::Tensor, at::Tensor> AutogradOps::mlp_forward(const at::Tensor& input, at::TensorList weights,
                                                            const c10::List<std::optional<at::Tensor>>& biases,
                                                            c10::string_view activation, bool save_hidden) {
  return mlp_forward_autograd(input, weights, biases, activation, save_hidden);
}

MlpGradients AutogradOps::mlp_backward(const at::Tensor& grad_output, const at::Tensor& input, at::TensorList weights,
                                       const at::Tensor& hidden, c10::string_view activation,
                                       const c10::List<bool>& has_bias, bool input_grad) {
  return mlp_backward_autograd(grad_output, input, weights, hidden, activation, has_bias, input_grad);
}

}  // namespace pylibnn
