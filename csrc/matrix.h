// Small helpers shared by the CPU and CUDA code (host and device): a strided matrix view
// over a raw pointer, and the integer rounding every tiling needs.
#pragma once

#include <cstdint>

#include "activation.h"  // PYLIBNN_HOST_DEVICE

namespace pylibnn {

// A rows x cols matrix at data: element (i, j) at data[i * row_stride + j * col_stride].
// Any strides, including 0 (an expanded tensor) and negative ones are allowed by the
// kernels that take it; transposing swaps the sizes and the strides, never the data.
template <typename T>
struct MatrixView {
  const T* data;
  int64_t rows;
  int64_t cols;
  int64_t row_stride;
  int64_t col_stride;

  PYLIBNN_HOST_DEVICE const T& operator()(int64_t i, int64_t j) const { return data[i * row_stride + j * col_stride]; }
  PYLIBNN_HOST_DEVICE MatrixView transposed() const { return {data, cols, rows, col_stride, row_stride}; }
};

// ⌈a / b⌉ and a rounded up to a multiple of b, for a >= 0, b > 0. Templates, so that the op
// layer can apply them to symbolic sizes (c10::SymInt) as the kernels do to int64_t.
template <typename Int>
PYLIBNN_HOST_DEVICE inline Int ceil_div(const Int& a, int64_t b) {
  return (a + (b - 1)) / b;
}

template <typename Int>
PYLIBNN_HOST_DEVICE inline Int round_up(const Int& a, int64_t b) {
  return ceil_div(a, b) * b;
}

}  // namespace pylibnn
