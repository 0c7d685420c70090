// Argument checks shared by the CPU and CUDA implementations of the pylibnn ops, so that
// both backends reject the same inputs with the same words. Each failure is a
// TORCH_CHECK whose message starts with the op name and shows expected vs actual.
#pragma once

#include <array>
#include <optional>
#include <tuple>

#include <ATen/core/Tensor.h>

namespace pylibnn {

// linear_forward(input (M, K), weight (N, K), bias (N)?)
void check_linear_forward_args(const at::Tensor& input, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias);

// linear_backward(grad_output (M, N), input (M, K), weight (N, K), output_mask)
void check_linear_backward_args(const at::Tensor& grad_output, const at::Tensor& input,
                                const at::Tensor& weight);

// The outputs of linear_backward, as the op contract shapes them: grad_input (M, K),
// grad_weight (N, K), grad_bias (N); an unrequested one is an empty (0,) tensor.
std::tuple<at::Tensor, at::Tensor, at::Tensor> empty_linear_gradients(const at::Tensor& grad_output,
                                                                      const at::Tensor& input,
                                                                      const at::Tensor& weight,
                                                                      std::array<bool, 3> output_mask);

}  // namespace pylibnn
