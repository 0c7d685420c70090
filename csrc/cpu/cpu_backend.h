// The CPU backend of the op layer (ops/op_layer.h): computation only, on checked tensors and
// allocated outputs. linear_cpu.cpp holds the single-layer ops (and registers all six for
// the CPU key), mlp_cpu.cpp the fused MLP.
#pragma once

#include <optional>
#include <vector>

#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>

#include "activation.h"
#include "ops/backend.h"

namespace pylibnn::cpu {

struct CpuBackend {
  // float32 and float64; bfloat16 and float16 too: the single-layer ops widen them inside the
  // GEMM engine's packing (gemm_widened), the fused MLP to float32 copies (mlp_cpu.cpp).
  static bool computes(at::ScalarType dtype) {
    return dtype == at::kFloat || dtype == at::kDouble || dtype == at::kBFloat16 || dtype == at::kHalf;
  }
  PYLIBNN_BACKEND_COMPUTATIONS  // ops/backend.h
  // The ops' outputs, from the output cache (output_cache.h).
  static at::Tensor empty_output(c10::SymIntArrayRef sizes, const at::TensorOptions& options);
};

}  // namespace pylibnn::cpu
