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
#include "ops/backend.h"

namespace pylibnn::cuda {

struct CudaBackend {
  // float32 and float64; bfloat16 and float16 are widened by the op layer.
  static bool computes(at::ScalarType dtype) { return dtype == at::kFloat || dtype == at::kDouble; }
  PYLIBNN_BACKEND_COMPUTATIONS  // ops/backend.h
};

}  // namespace pylibnn::cuda
