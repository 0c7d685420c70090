// The CPU backend of the op layer (ops/op_layer.h): computation only, on checked tensors and
// allocated outputs. linear_cpu.cpp holds the single-layer ops (and registers all six for
// the CPU key), mlp_cpu.cpp the fused MLP.
#pragma once

#include <optional>
#include <vector>

#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>

#include "activation.h"

namespace pylibnn::cpu {

struct CpuBackend {
  // float32 and float64; bfloat16 and float16 too: the single-layer ops widen them inside the
  // GEMM engine's packing (gemm_widened), the fused MLP to float32 copies (mlp_cpu.cpp).
  static bool computes(at::ScalarType dtype) {
    return dtype == at::kFloat || dtype == at::kDouble || dtype == at::kBFloat16 || dtype == at::kHalf;
  }
  static void linear_forward(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                             Activation activation, const at::Tensor& output, const at::Tensor& preactivation);
  static void linear_backward(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
                              const at::Tensor& preactivation, Activation activation, const at::Tensor& grad_input,
                              const at::Tensor& grad_weight, const at::Tensor& grad_bias);
  static void mlp_forward(const at::Tensor& input, at::TensorList weights,
                          const c10::List<std::optional<at::Tensor>>& biases, Activation activation,
                          const at::Tensor& output, const at::Tensor& hidden);
  static void mlp_backward(const at::Tensor& grad_output, const at::Tensor& input, at::TensorList weights,
                           const at::Tensor& hidden, Activation activation, const at::Tensor& grad_input,
                           const std::vector<at::Tensor>& grad_weights, const std::vector<at::Tensor>& grad_biases);
};

}  // namespace pylibnn::cpu
