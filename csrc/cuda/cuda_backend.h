// The CUDA backend of the op layer (ops/op_layer.h): computation only, on checked tensors and
// allocated outputs. linear_cuda.cu holds the single-layer ops, mlp_cuda.cu the fused MLP.
// Registered for the CUDA key by cuda_ops.cpp; the emulated CUDA build (csrc/cuda/emulation/)
// compiles the same .cu files with g++ and registers them for its own test-only library.
// Host-only declarations (no CUDA headers), so plain C++ files can include it.
#pragma once

#include <optional>
#include <vector>

#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>

#include "activation.h"

namespace pylibnn::cuda {

struct CudaBackend {
  // float32 and float64; bfloat16 and float16 are widened by the op layer.
  static bool computes(at::ScalarType dtype) { return dtype == at::kFloat || dtype == at::kDouble; }
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

}  // namespace pylibnn::cuda
