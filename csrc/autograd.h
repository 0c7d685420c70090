// The Autograd kernels of the six ops, as one struct so that they register from the op list
// (ops/op_list.h): linear_autograd.cpp defines the single-layer pair (and registers all six),
// fused_autograd.cpp the fused ops.
#pragma once

#include <array>
#include <optional>
#include <tuple>

#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>

#include "ops/op_list.h"

namespace pylibnn {

struct AutogradOps {
  static at::Tensor linear_forward(const at::Tensor& input, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias);
  static std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_backward(const at::Tensor& grad_output,
                                                                        const at::Tensor& input,
                                                                        const at::Tensor& weight,
                                                                        std::array<bool, 3> output_mask);
  static std::tuple<at::Tensor, at::Tensor> linear_act_forward(const at::Tensor& input, const at::Tensor& weight,
                                                               const std::optional<at::Tensor>& bias,
                                                               c10::string_view activation, bool save_preactivation);
  static std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_act_backward(
      const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
      const at::Tensor& preactivation, c10::string_view activation, std::array<bool, 3> output_mask);
  static std::tuple<at::Tensor, at::Tensor> mlp_forward(const at::Tensor& input, at::TensorList weights,
                                                        const c10::List<std::optional<at::Tensor>>& biases,
                                                        c10::string_view activation, bool save_hidden);
  static MlpGradients mlp_backward(const at::Tensor& grad_output, const at::Tensor& input, at::TensorList weights,
                                   const at::Tensor& hidden, c10::string_view activation,
                                   const c10::List<bool>& has_bias, bool input_grad);
};

}  // namespace pylibnn
