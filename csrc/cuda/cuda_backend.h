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
  // Every dtype of the ops: bfloat16 and float16 natively on the tensor-core GEMMs for the
  // single-layer ops (the MLP ops widen them to float32 themselves, mlp_cuda.cu), float32
  // exact or TF32, float64.
  static bool computes(at::ScalarType dtype) {
    return dtype == at::kFloat || dtype == at::kDouble || dtype == at::kBFloat16 || dtype == at::kHalf;
  }
  PYLIBNN_BACKEND_COMPUTATIONS  // ops/backend.h
};

}  // namespace pylibnn::cuda
