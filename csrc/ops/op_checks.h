// The argument checks of the six pylibnn ops (one definition for every backend, the Meta
// kernels and the fake kernels of torch.compile / torch.export). Sizes are c10::SymInt, so
// the same lines check concrete tensors and the symbolic ones of a traced graph; each check
// returns the sizes the op layer (op_layer.h) shapes its outputs with.
//
// Every failure is a TORCH_CHECK whose message starts with the op name and names the
// argument, the expected and the actual values. Exception types follow what
// torch.nn.functional.linear raises for the same input (op_checks.cpp).
#pragma once

#include <optional>
#include <string_view>
#include <vector>

#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>
#include <c10/core/SymInt.h>

#include "activation.h"

namespace pylibnn {

struct LinearSizes {
  c10::SymInt M, K, N;
};

// input (M, K), weight (N, K), bias (N)? (linear_forward, linear_act_forward)
LinearSizes check_linear_forward_args(const char* op, const at::Tensor& input, const at::Tensor& weight,
                                      const std::optional<at::Tensor>& bias);

// grad_output (M, N), input (M, K), weight (N, K), and for linear_act_backward the
// preactivation (M, N) like grad_output (nullptr for linear_backward).
LinearSizes check_linear_backward_args(const char* op, const at::Tensor& grad_output, const at::Tensor& input,
                                       const at::Tensor& weight, const at::Tensor* preactivation);

// The activation argument of the fused ops; ValueError naming the op for an unknown name.
Activation activation_from_name(const char* op, std::string_view name);

// input (M, K_0), weights[l] (N_l, K_l) with K_{l+1} = N_l, biases[l] (N_l)?: the widths N_l.
std::vector<c10::SymInt> check_mlp_forward_args(const char* op, const at::Tensor& input, at::TensorList weights,
                                                const c10::List<std::optional<at::Tensor>>& biases);

// grad_output (M, N_{L-1}), input, weights, hidden (mlp_layout.h), has_bias[L]: the widths.
std::vector<c10::SymInt> check_mlp_backward_args(const char* op, const at::Tensor& grad_output,
                                                 const at::Tensor& input, at::TensorList weights,
                                                 const at::Tensor& hidden, Activation activation,
                                                 const c10::List<bool>& has_bias);

}  // namespace pylibnn
