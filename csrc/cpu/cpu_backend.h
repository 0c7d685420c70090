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
  // float32 and float64; bfloat16 and float16 are widened by the op layer.
  static bool computes(at::ScalarType dtype) { return dtype == at::kFloat || dtype == at::kDouble; }
  PYLIBNN_BACKEND_COMPUTATIONS  // ops/backend.h
};

}  // namespace pylibnn::cpu
