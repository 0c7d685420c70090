// The output stage every GEMM kernel of gemm_tensor_core.cuh and gemm_warptile.cuh ends with,
// and the split-K reduction that applies it after summing the slices:
//   V = acc [+ bias (N)]  (acc: the float32 / float64 accumulator of C(i, j))
//   forward  (derivative_z == nullptr): preactivation(i, j) = V when asked, C(i, j) = act(V)
//   backward (derivative_z != nullptr): C(i, j) = V * act'(z), the activation's gradient
//            formula at z (and y = act(z), read from derivative_y or recomputed if null)
// Arithmetic stays in the accumulator type; each stored value is rounded to T once.
//
//   splitk_reduce_kernel   C (M, N) = output stage of sum_s partials[s] (M, N), s = 0, 1, ...
//                          in that fixed order: split-K's deterministic reduction (no atomics).
#pragma once

#include <cstdint>

#include "activation.h"
#include "cuda/device.h"
#include "cuda/gemm_numeric.h"

namespace pylibnn::cuda {

// Where and how a GEMM stores its result; C is row-major with leading dimension ldc.
template <typename T>
struct GemmOutput {
  T* c;
  int64_t ldc;
  const T* bias;  // (N), element j at bias[j * bias_stride], or nullptr
  int64_t bias_stride;
  Activation activation;
  T* preactivation;  // forward: receives V, row-major (ld_preactivation), or nullptr
  int64_t ld_preactivation;
  const T* derivative_z;  // backward: z (and y) row-major (ld_derivative), or nullptr
  const T* derivative_y;
  int64_t ld_derivative;
};

template <typename T>
__device__ __forceinline__ void store_output(const GemmOutput<T>& o, int64_t row, int64_t col, Accumulator<T> v) {
  using Acc = Accumulator<T>;
  if (o.bias != nullptr) v += to_accumulator(o.bias[col * o.bias_stride]);
  if (o.derivative_z != nullptr) {
    const int64_t at = row * o.ld_derivative + col;
    const Acc z = to_accumulator(o.derivative_z[at]);
    const Acc y = o.derivative_y != nullptr ? to_accumulator(o.derivative_y[at]) : Acc(0);
    v = activation_gradient(o.activation, v, z, o.derivative_y != nullptr ? &y : nullptr);
  } else {
    if (o.preactivation != nullptr) o.preactivation[row * o.ld_preactivation + col] = from_accumulator<T>(v);
    v = apply_activation(o.activation, v);
  }
  o.c[row * o.ldc + col] = from_accumulator<T>(v);
}

constexpr int kSplitKReduceThreads = 256;
constexpr int64_t kSplitKReduceMaxBlocks = 4096;

// One thread per element of C (grid-stride): the slices of that element in slice order, so
// the sum depends on the split alone, which depends on the shape alone.
template <typename T>
__global__ void __launch_bounds__(kSplitKReduceThreads)
    splitk_reduce_kernel(const Accumulator<T>* partials, int64_t splits, int64_t M, int64_t N, const GemmOutput<T> out) {
  const int64_t total = M * N;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; index < total; index += step) {
    Accumulator<T> v = partials[index];
    for (int64_t s = 1; s < splits; ++s) v += partials[s * total + index];
    store_output(out, index / N, index % N, v);
  }
}

}  // namespace pylibnn::cuda
