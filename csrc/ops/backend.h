// The computations a backend of the op layer implements (their contract: op_layer.h), declared
// once for every backend struct (cpu/cpu_backend.h, cuda/cuda_backend.h). A small header
// with lean includes, so that nvcc's .cu files can take it.
#pragma once

#include <optional>
#include <vector>

#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>

#include "activation.h"

#define PYLIBNN_BACKEND_COMPUTATIONS                                                                           \
  static void linear_forward(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,       \
                             Activation activation, const at::Tensor& output, const at::Tensor& preactivation); \
  static void linear_backward(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, \
                              const at::Tensor& preactivation, Activation activation,                          \
                              const at::Tensor& grad_input, const at::Tensor& grad_weight,                     \
                              const at::Tensor& grad_bias);                                                    \
  static void mlp_forward(const at::Tensor& input, at::TensorList weights,                                     \
                          const c10::List<std::optional<at::Tensor>>& biases, Activation activation,           \
                          const at::Tensor& output, const at::Tensor& hidden);                                 \
  static void mlp_backward(const at::Tensor& grad_output, const at::Tensor& input, at::TensorList weights,     \
                           const at::Tensor& hidden, Activation activation, const at::Tensor& grad_input,      \
                           const std::vector<at::Tensor>& grad_weights,                                        \
                           const std::vector<at::Tensor>& grad_biases);
