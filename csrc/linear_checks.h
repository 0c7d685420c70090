// Argument checks shared by the CPU and CUDA implementations of the pylibnn ops, so that
// both backends reject the same inputs with the same words. Each failure is a
// TORCH_CHECK whose message starts with the op name and shows expected vs actual.
#pragma once

#include <array>
#include <optional>
#include <tuple>

#include <string_view>
#include <vector>

#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>

#include "activation.h"

namespace pylibnn {

// linear_forward(input (M, K), weight (N, K), bias (N)?)
// `op` names the op in messages (linear_act_forward and mlp_forward reuse these checks).
void check_linear_forward_args(const at::Tensor& input, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias, const char* op = "pylibnn.linear_forward");

// linear_backward(grad_output (M, N), input (M, K), weight (N, K), output_mask)
void check_linear_backward_args(const at::Tensor& grad_output, const at::Tensor& input,
                                const at::Tensor& weight, const char* op = "pylibnn.linear_backward");

// The activation argument of the fused ops; ValueError naming the op for an unknown name.
Activation activation_from_name(const char* op, std::string_view name);

// linear_act_forward: the linear_forward checks under its own name.
void check_linear_act_forward_args(const at::Tensor& input, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias);

// linear_act_backward: the linear_backward checks, and preactivation (M, N) like grad_output.
void check_linear_act_backward_args(const at::Tensor& grad_output, const at::Tensor& input,
                                    const at::Tensor& weight, const at::Tensor& preactivation);

// mlp_forward(input (M, K_0), weights[l] (N_l, K_l) with K_{l+1} = N_l, biases[l] (N_l)?):
// returns the widths N_0 .. N_{L-1}.
std::vector<int64_t> check_mlp_forward_args(const at::Tensor& input, at::TensorList weights,
                                            const c10::List<std::optional<at::Tensor>>& biases);

// mlp_backward(grad_output (M, N_{L-1}), input, weights, hidden (mlp_layout.h), has_bias[L]):
// returns the widths N_0 .. N_{L-1}.
std::vector<int64_t> check_mlp_backward_args(const at::Tensor& grad_output, const at::Tensor& input,
                                             at::TensorList weights, const at::Tensor& hidden,
                                             Activation activation, const c10::List<bool>& has_bias);

// The outputs of linear_backward, as the op contract shapes them: grad_input (M, K),
// grad_weight (N, K), grad_bias (N); an unrequested one is an empty (0,) tensor.
std::tuple<at::Tensor, at::Tensor, at::Tensor> empty_linear_gradients(const at::Tensor& grad_output,
                                                                      const at::Tensor& input,
                                                                      const at::Tensor& weight,
                                                                      std::array<bool, 3> output_mask);

}  // namespace pylibnn
