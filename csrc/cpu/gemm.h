// The CPU GEMM used by all three products of a dense layer:
//   C (M, N) = A (M, K) @ B (K, N) [+ bias (N) on every row];  optionally a_row_sums (M) = A @ 1
// A and B are strided views, so transposes, slices and stride-0 (expanded) operands are read
// in place; packing absorbs the layout. C is written row-major with leading dimension ldc.
//   forward       y      = x   @ W^T  (+ b)        A = x,     B = W viewed transposed
//   grad_input    dx     = dy  @ W                 A = dy,    B = W
//   grad_weight   dW     = dy^T @ x, db = dy^T @ 1 A = dy viewed transposed, row sums = db
#pragma once

#include <cstdint>

#include "activation.h"
#include "matrix.h"

namespace pylibnn::cpu {

using pylibnn::MatrixView;  // matrix.h

template <typename T>
struct GemmArgs {
  MatrixView<T> a;               // (M, K)
  MatrixView<T> b;               // (K, N)
  T* c;                          // (M, N), row-major, overwritten
  int64_t ldc;
  const T* bias = nullptr;       // (N) added to every row of C, or nullptr
  int64_t bias_stride = 1;
  T* a_row_sums = nullptr;       // (M) receives sum_k A(i, k), or nullptr
  // Epilogue of the fused activations, applied to each tile of C once its last k block is
  // stored (while it is still in cache): z = C is copied to preactivation (M, N; leading
  // dimension ld_preactivation) when that is given, then C = act(z) in place.
  Activation activation = Activation::None;
  T* preactivation = nullptr;
  int64_t ld_preactivation = 0;
};

// The blocked, packed, parallel engine with the selected micro-kernels
// (or the reference loop when the "reference" path is selected).
template <typename T>
void gemm(const GemmArgs<T>& args);

// The same product for bfloat16 or float16 (In = c10::BFloat16 or c10::Half) operands, bias,
// outputs and row sums: float32 arithmetic with the float32 micro-kernels, the operands
// widened while they are packed (no whole-tensor float32 copies), each result rounded once
// (the activation applied to the float32 pre-activation). See gemm_engine.cpp.
template <typename In>
void gemm_widened(const GemmArgs<In>& args);

// The path gemm() takes for these sizes and strides (elements of element_bytes: 4 float32, 8
// float64) with the kernel set and profile now selected: "reference", "direct", "empty", "outer", "gemv", "dot" or "blocked" (the rules
// are in gemm_engine.cpp's header comment).
const char* gemm_path_name(int64_t M, int64_t N, int64_t K, int64_t a_col_stride, int64_t b_row_stride,
                           int64_t b_col_stride, bool row_sums, int64_t element_bytes);

// The naive triple loop: the ground truth the engine is tested against.
template <typename T>
void gemm_reference(const GemmArgs<T>& args);

// The epilogue of args (above) on the block C[i:i+rows, j:j+cols].
template <typename T>
void gemm_epilogue(const GemmArgs<T>& args, int64_t i, int64_t j, int64_t rows, int64_t cols);

// out[i] = sum_j m(i, j), each row summed in a fixed order (deterministic).
template <typename T>
void row_sums(const MatrixView<T>& m, T* out);

}  // namespace pylibnn::cpu
