// The op layer: each of the six ops as one shared step over a backend that only computes.
//
// OpLayer<Backend>::<op> checks the arguments (op_checks.h: the project's messages and
// exception types), parses the activation, decides the dtype path, allocates the outputs in
// the shapes of the schema (op_list.h) and hands checked tensors and allocated outputs to the
// backend. Sizes are c10::SymInt throughout, so OpLayer<MetaBackend> (meta_backend.h) is the
// Meta kernel and the fake kernel of every op: torch.compile, torch.export and device="meta"
// see the same checks, words and shapes as the CPU and CUDA backends.
//
// A Backend is a struct of static functions:
//   bool computes(at::ScalarType)      the dtypes it computes natively; for any other
//                                      (bfloat16, float16) the op layer widens the operands
//                                      to float32, calls the backend in float32 and rounds
//                                      each result once, as torch's CPU linear does
//   void linear_forward(input, weight, bias, activation, output, preactivation)
//        output (M, N) = act(input @ weight.T + bias), preactivation (M, N) = the
//        pre-activation z when defined; bias undefined when None
//   void linear_backward(grad_output, input, weight, preactivation, activation,
//                        grad_input, grad_weight, grad_bias)
//        the gradients of linear_forward at grad_z = grad_output * act'(preactivation)
//        (preactivation undefined and activation None for the plain layer); an undefined
//        gradient was not requested
//   void mlp_forward(input, weights, biases, activation, output, hidden)
//        hidden (mlp_layout.h) undefined unless saved
//   void mlp_backward(grad_output, input, weights, hidden, activation, grad_input,
//                     grad_weights, grad_biases)
//        grad_input undefined unless requested, grad_biases[l] undefined without a bias
// Outputs are allocated contiguous; the backend writes every element of each defined one.
// PYLIBNN_BACKEND_COMPUTATIONS (ops/backend.h) declares the four inside a backend's struct.
#pragma once

#include <array>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include "mlp_layout.h"
#include "ops/backend.h"
#include "ops/op_checks.h"
#include "ops/op_list.h"

namespace pylibnn {

// The op names of the messages.
inline constexpr const char* kLinearForward = "pylibnn.linear_forward";
inline constexpr const char* kLinearBackward = "pylibnn.linear_backward";
inline constexpr const char* kLinearActForward = "pylibnn.linear_act_forward";
inline constexpr const char* kLinearActBackward = "pylibnn.linear_act_backward";
inline constexpr const char* kMlpForward = "pylibnn.mlp_forward";
inline constexpr const char* kMlpBackward = "pylibnn.mlp_backward";

namespace op_layer {

// A float32 copy of t when the kernel reads it; otherwise a float32 stand-in of t's shape
// that owns no memory (a backward takes some operands for their shapes alone). Widening
// runs only for a real backend, so the sizes are concrete here.
inline at::Tensor widen(const at::Tensor& t, bool read = true) {
  if (!t.defined()) return t;
  if (read) return t.to(at::kFloat);
  return at::zeros({}, t.options().dtype(at::kFloat)).expand(t.sizes());
}

inline std::vector<at::Tensor> widen(at::TensorList tensors) {
  std::vector<at::Tensor> wide;
  for (const at::Tensor& t : tensors) wide.push_back(widen(t));
  return wide;
}

// The result in the op's dtype; an undefined (unrequested) one stays undefined.
inline at::Tensor narrow_to(const at::Tensor& t, at::ScalarType dtype) { return t.defined() ? t.to(dtype) : t; }

inline at::Tensor defined_or_empty(const at::Tensor& t, const at::TensorOptions& options) {
  return t.defined() ? t : at::empty({0}, options);
}

// An op's output: from the backend's own allocation where it has one (Backend::empty_output:
// the CPU's output cache, cpu/output_cache.h), else from torch's allocator.
template <typename B, typename = void>
struct HasEmptyOutput : std::false_type {};
template <typename B>
struct HasEmptyOutput<B, std::void_t<decltype(B::empty_output(std::declval<c10::SymIntArrayRef>(),
                                                               std::declval<const at::TensorOptions&>()))>>
    : std::true_type {};

template <typename Backend>
at::Tensor empty_output(c10::SymIntArrayRef sizes, const at::TensorOptions& options) {
  if constexpr (HasEmptyOutput<Backend>::value) return Backend::empty_output(sizes, options);
  else return at::empty_symint(sizes, options);
}

template <typename Backend>
at::Tensor empty_if(bool wanted, c10::SymIntArrayRef sizes, const at::TensorOptions& options) {
  return wanted ? empty_output<Backend>(sizes, options) : at::Tensor();
}

inline bool has_value(const std::optional<at::Tensor>& t) { return t.has_value() && t->defined(); }

template <typename Backend>
std::tuple<at::Tensor, at::Tensor> linear_forward(const LinearSizes& sizes, const at::Tensor& input,
                                                  const at::Tensor& weight, const at::Tensor& bias,
                                                  Activation activation, bool save_preactivation) {
  const at::ScalarType dtype = input.scalar_type();
  if (!Backend::computes(dtype)) {
    auto [output, preactivation] = linear_forward<Backend>(sizes, widen(input), widen(weight), widen(bias),
                                                           activation, save_preactivation);
    return {narrow_to(output, dtype), narrow_to(preactivation, dtype)};
  }
  const auto options = input.options();
  at::Tensor output = empty_output<Backend>({sizes.M, sizes.N}, options);
  at::Tensor preactivation = empty_if<Backend>(save_preactivation, {sizes.M, sizes.N}, options);
  Backend::linear_forward(input, weight, bias, activation, output, preactivation);
  return {output, preactivation};
}

template <typename Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_backward(const LinearSizes& sizes, const at::Tensor& grad_output,
                                                               const at::Tensor& input, const at::Tensor& weight,
                                                               const at::Tensor& preactivation, Activation activation,
                                                               std::array<bool, 3> mask) {
  const at::ScalarType dtype = grad_output.scalar_type();
  if (!Backend::computes(dtype)) {
    // grad_input reads the weight, grad_weight the input, grad_bias neither.
    auto [grad_input, grad_weight, grad_bias] =
        linear_backward<Backend>(sizes, widen(grad_output), widen(input, mask[1]), widen(weight, mask[0]),
                                 widen(preactivation), activation, mask);
    return {narrow_to(grad_input, dtype), narrow_to(grad_weight, dtype), narrow_to(grad_bias, dtype)};
  }
  const auto options = grad_output.options();
  at::Tensor grad_input = empty_if<Backend>(mask[0], {sizes.M, sizes.K}, options);
  at::Tensor grad_weight = empty_if<Backend>(mask[1], {sizes.N, sizes.K}, options);
  at::Tensor grad_bias = empty_if<Backend>(mask[2], {sizes.N}, options);
  if (mask[0] || mask[1] || mask[2]) {
    Backend::linear_backward(grad_output, input, weight, preactivation, activation, grad_input, grad_weight,
                             grad_bias);
  }
  return {grad_input, grad_weight, grad_bias};
}

template <typename Backend>
std::tuple<at::Tensor, at::Tensor> mlp_forward(const std::vector<c10::SymInt>& widths, const at::Tensor& input,
                                               at::TensorList weights,
                                               const c10::List<std::optional<at::Tensor>>& biases,
                                               Activation activation, bool save_hidden) {
  const at::ScalarType dtype = input.scalar_type();
  if (!Backend::computes(dtype)) {
    c10::List<std::optional<at::Tensor>> wide_biases;
    for (size_t l = 0; l < biases.size(); ++l) {
      const std::optional<at::Tensor> b = biases.get(l);
      wide_biases.push_back(has_value(b) ? std::optional<at::Tensor>(widen(*b)) : std::nullopt);
    }
    auto [output, hidden] =
        mlp_forward<Backend>(widths, widen(input), widen(weights), wide_biases, activation, save_hidden);
    return {narrow_to(output, dtype), narrow_to(hidden, dtype)};
  }
  const auto options = input.options();
  const c10::SymInt M = input.sym_size(0);
  at::Tensor output = empty_output<Backend>({M, widths.back()}, options);
  at::Tensor hidden;
  if (save_hidden) {  // the layout allocates vectors: not for a forward that saves nothing
    const BasicMlpHiddenLayout<c10::SymInt> layout(M, widths, activation != Activation::None);
    hidden = empty_output<Backend>({layout.rows, layout.cols}, options);
  }
  Backend::mlp_forward(input, weights, biases, activation, output, hidden);
  return {output, hidden};
}

template <typename Backend>
MlpGradients mlp_backward(const std::vector<c10::SymInt>& widths, const at::Tensor& grad_output,
                          const at::Tensor& input, at::TensorList weights, const at::Tensor& hidden,
                          Activation activation, const c10::List<bool>& has_bias, bool input_grad) {
  const at::ScalarType dtype = input.scalar_type();
  if (!Backend::computes(dtype)) {
    auto [grad_input, grad_weights, grad_biases] =
        mlp_backward<Backend>(widths, widen(grad_output), widen(input), widen(weights), widen(hidden), activation,
                              has_bias, input_grad);
    for (at::Tensor& g : grad_weights) g = narrow_to(g, dtype);
    for (at::Tensor& g : grad_biases) g = narrow_to(g, dtype);
    return {narrow_to(grad_input, dtype), std::move(grad_weights), std::move(grad_biases)};
  }
  const auto options = input.options();
  at::Tensor grad_input = empty_if<Backend>(input_grad, {input.sym_size(0), input.sym_size(1)}, options);
  std::vector<at::Tensor> grad_weights, grad_biases;
  for (size_t l = 0; l < weights.size(); ++l) {
    grad_weights.push_back(empty_output<Backend>({widths[l], weights[l].sym_size(1)}, options));
    grad_biases.push_back(empty_if<Backend>(has_bias.get(l), {widths[l]}, options));
  }
  Backend::mlp_backward(grad_output, input, weights, hidden, activation, grad_input, grad_weights, grad_biases);
  return {grad_input, std::move(grad_weights), std::move(grad_biases)};
}

}  // namespace op_layer

template <typename Backend>
struct OpLayer {
  static at::Tensor linear_forward(const at::Tensor& input, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias) {
    const LinearSizes sizes = check_linear_forward_args(kLinearForward, input, weight, bias);
    const at::Tensor b = op_layer::has_value(bias) ? *bias : at::Tensor();
    return std::get<0>(op_layer::linear_forward<Backend>(sizes, input, weight, b, Activation::None, false));
  }

  static std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_backward(const at::Tensor& grad_output,
                                                                        const at::Tensor& input,
                                                                        const at::Tensor& weight,
                                                                        std::array<bool, 3> output_mask) {
    const LinearSizes sizes = check_linear_backward_args(kLinearBackward, grad_output, input, weight, nullptr);
    return with_empty_outputs(op_layer::linear_backward<Backend>(sizes, grad_output, input, weight, at::Tensor(),
                                                                 Activation::None, output_mask),
                              grad_output.options());
  }

  static std::tuple<at::Tensor, at::Tensor> linear_act_forward(const at::Tensor& input, const at::Tensor& weight,
                                                               const std::optional<at::Tensor>& bias,
                                                               c10::string_view activation, bool save_preactivation) {
    const LinearSizes sizes = check_linear_forward_args(kLinearActForward, input, weight, bias);
    const Activation act = activation_from_name(kLinearActForward, activation);
    const at::Tensor b = op_layer::has_value(bias) ? *bias : at::Tensor();
    auto [output, preactivation] = op_layer::linear_forward<Backend>(sizes, input, weight, b, act, save_preactivation);
    return {output, op_layer::defined_or_empty(preactivation, input.options())};
  }

  static std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_act_backward(
      const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
      const at::Tensor& preactivation, c10::string_view activation, std::array<bool, 3> output_mask) {
    const LinearSizes sizes = check_linear_backward_args(kLinearActBackward, grad_output, input, weight, &preactivation);
    const Activation act = activation_from_name(kLinearActBackward, activation);
    return with_empty_outputs(op_layer::linear_backward<Backend>(sizes, grad_output, input, weight,
                                                                 act == Activation::None ? at::Tensor() : preactivation,
                                                                 act, output_mask),
                              grad_output.options());
  }

  static std::tuple<at::Tensor, at::Tensor> mlp_forward(const at::Tensor& input, at::TensorList weights,
                                                        const c10::List<std::optional<at::Tensor>>& biases,
                                                        c10::string_view activation, bool save_hidden) {
    const std::vector<c10::SymInt> widths = check_mlp_forward_args(kMlpForward, input, weights, biases);
    const Activation act = activation_from_name(kMlpForward, activation);
    auto [output, hidden] = op_layer::mlp_forward<Backend>(widths, input, weights, biases, act, save_hidden);
    return {output, op_layer::defined_or_empty(hidden, input.options())};
  }

  static MlpGradients mlp_backward(const at::Tensor& grad_output, const at::Tensor& input, at::TensorList weights,
                                   const at::Tensor& hidden, c10::string_view activation,
                                   const c10::List<bool>& has_bias, bool input_grad) {
    const Activation act = activation_from_name(kMlpBackward, activation);
    const std::vector<c10::SymInt> widths =
        check_mlp_backward_args(kMlpBackward, grad_output, input, weights, hidden, act, has_bias);
    auto [grad_input, grad_weights, grad_biases] =
        op_layer::mlp_backward<Backend>(widths, grad_output, input, weights, hidden, act, has_bias, input_grad);
    const auto options = input.options();
    for (at::Tensor& g : grad_biases) g = op_layer::defined_or_empty(g, options);
    return {op_layer::defined_or_empty(grad_input, options), std::move(grad_weights), std::move(grad_biases)};
  }

 private:
  static std::tuple<at::Tensor, at::Tensor, at::Tensor> with_empty_outputs(
      std::tuple<at::Tensor, at::Tensor, at::Tensor> grads, const at::TensorOptions& options) {
    auto& [grad_input, grad_weight, grad_bias] = grads;
    return {op_layer::defined_or_empty(grad_input, options), op_layer::defined_or_empty(grad_weight, options),
            op_layer::defined_or_empty(grad_bias, options)};
  }
};

}  // namespace pylibnn
