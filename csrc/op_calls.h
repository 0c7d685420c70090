// Typed handles to the pylibnn ops for C++ code that calls them through the dispatcher
// (the autograd and autocast kernels), so each call passes the remaining dispatch keys
// instead of jumping straight to one backend.
#pragma once

#include <array>
#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>

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

}  // namespace pylibnn
