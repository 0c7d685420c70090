// Typed handles to the pylibnn ops for C++ code that calls them through the dispatcher
// (the autograd and autocast kernels), so each call passes the remaining dispatch keys
// instead of jumping straight to one backend.
#pragma once

#include <array>
#include <optional>
#include <tuple>
#include <vector>

#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include "ops/op_list.h"

namespace pylibnn {

inline at::Tensor call_linear_forward(const at::Tensor& input, const at::Tensor& weight,
                                      const std::optional<at::Tensor>& bias) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("pylibnn::linear_forward", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&)>();
  return op.call(input, weight, bias);
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> call_linear_backward(const at::Tensor& grad_output,
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

inline std::tuple<at::Tensor, at::Tensor> call_linear_act_forward(const at::Tensor& input, const at::Tensor& weight,
                                                                  const std::optional<at::Tensor>& bias,
                                                                  c10::string_view activation, bool save_preactivation) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("pylibnn::linear_act_forward", "")
                             .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                       const std::optional<at::Tensor>&,
                                                                       c10::string_view, bool)>();
  return op.call(input, weight, bias, activation, save_preactivation);
}

inline std::tuple<at::Tensor, at::Tensor, at::Tensor> call_linear_act_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& preactivation,
    c10::string_view activation, std::array<bool, 3> output_mask) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("pylibnn::linear_act_backward", "")
                             .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                                 const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                 c10::string_view, std::array<bool, 3>)>();
  return op.call(grad_output, input, weight, preactivation, activation, output_mask);
}

inline std::tuple<at::Tensor, at::Tensor> call_mlp_forward(const at::Tensor& input, at::TensorList weights,
                                                           const c10::List<std::optional<at::Tensor>>& biases,
                                                           c10::string_view activation, bool save_hidden) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("pylibnn::mlp_forward", "")
                             .typed<std::tuple<at::Tensor, at::Tensor>(
                                 const at::Tensor&, at::TensorList, const c10::List<std::optional<at::Tensor>>&,
                                 c10::string_view, bool)>();
  return op.call(input, weights, biases, activation, save_hidden);
}

inline MlpGradients call_mlp_backward(const at::Tensor& grad_output, const at::Tensor& input, at::TensorList weights,
                                      const at::Tensor& hidden, c10::string_view activation,
                                      const c10::List<bool>& has_bias, bool input_grad) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("pylibnn::mlp_backward", "")
                             .typed<MlpGradients(const at::Tensor&, const at::Tensor&, at::TensorList,
                                                 const at::Tensor&, c10::string_view, const c10::List<bool>&, bool)>();
  return op.call(grad_output, input, weights, hidden, activation, has_bias, input_grad);
}

}  // namespace pylibnn
