// Portable micro-kernels: plain C++ for any CPU (the compiler vectorizes with the
// baseline instruction set, SSE2 on x86-64).
//   broadcast: 4 x 8 tile;  dot (thin forward): 2 x 4 tile of scalar dot products
//   panel (fused MLP): 4 x (8, 16, 24 or 32);  activations: the scalar formulas of activation.h
//   packing: element by element;  row streaming: a row of C at a time
#include <cmath>
#include <cstring>

#include "gemm_microkernels.h"

namespace pylibnn::cpu {
namespace {

// acc[i][j] = sum_p A(i, p) * b[p * ldb + j], A(i, p) = a[i * a_row_stride + p * a_col_stride]:
// the k loop of the broadcast and panel kernels, a multiply and an add per term.
template <typename T, int MR, int NR>
void multiply_accumulate_tile(int64_t depth, const T* a, int64_t a_row_stride, int64_t a_col_stride, const T* b,
                              int64_t ldb, T (&acc)[MR][NR]) {
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = T(0);
  for (int64_t p = 0; p < depth; ++p) {
    for (int i = 0; i < MR; ++i) {
      const T ai = a[i * a_row_stride];
      for (int j = 0; j < NR; ++j) acc[i][j] += ai * b[j];
    }
    a += a_col_stride;
    b += ldb;
  }
}

template <typename T, int MR, int NR, bool kARows = false>
void broadcast_kernel(int64_t kc, const T* a, int64_t lda, const T* b, int64_t ldb, T* c, int64_t ldc,
                      bool accumulate, const T* bias) {
  T acc[MR][NR];
  if constexpr (kARows) multiply_accumulate_tile<T, MR, NR>(kc, a, lda, 1, b, ldb, acc);
  else multiply_accumulate_tile<T, MR, NR>(kc, a, 1, lda, b, ldb, acc);
  for (int i = 0; i < MR; ++i) {
    T* ci = c + i * ldc;
    for (int j = 0; j < NR; ++j) {
      const T out = bias ? acc[i][j] + bias[j] : acc[i][j];
      ci[j] = accumulate ? ci[j] + out : out;
    }
  }
}

template <typename T>
void store_transposed(const T* tile, int64_t ld_tile, int64_t rows, int64_t cols, T* c, int64_t ldc, bool accumulate,
                      const T* bias) {
  for (int64_t q = 0; q < cols; ++q)
    for (int64_t r = 0; r < rows; ++r) {
      T value = tile[r * ld_tile + q];
      if (bias) value += bias[r];
      T* out = c + q * ldc + r;
      *out = accumulate ? *out + value : value;
    }
}

template <typename T, int MR, int NR>
void dot_kernel(int64_t kc, const T* a, int64_t lda, const T* b, int64_t ldb, T* c, int64_t ldc, int64_t rows,
                int64_t cols, bool accumulate, const T* bias) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      const T* ai = a + i * lda;
      const T* bj = b + j * ldb;
      T sum = 0;
      for (int64_t p = 0; p < kc; ++p) sum += ai[p] * bj[p];
      const T value = bias ? sum + bias[j] : sum;
      T* cij = c + i * ldc + j;
      *cij = accumulate ? *cij + value : value;
    }
}

// Panel kernel with 8-column "vectors" of plain scalars.
constexpr int kPortableLanes = 8;

template <typename T, int MR, int NV>
void panel_kernel(int64_t depth, const T* a, int64_t a_row_stride, int64_t a_col_stride, const T* b, int64_t ldb,
                  T* c, int64_t ldc, bool accumulate, const T* bias, Activation act, T* y, int64_t ldy) {
  constexpr int NR = NV * kPortableLanes;
  T acc[MR][NR];
  multiply_accumulate_tile<T, MR, NR>(depth, a, a_row_stride, a_col_stride, b, ldb, acc);
  for (int i = 0; i < MR; ++i) {
    T* ci = c + i * ldc;
    for (int j = 0; j < NR; ++j) {
      const T out = bias ? acc[i][j] + bias[j] : acc[i][j];
      ci[j] = accumulate ? ci[j] + out : out;
      if (y) y[i * ldy + j] = apply_activation(act, ci[j]);
    }
  }
}

template <typename T>
void activate_block(Activation act, const T* z, int64_t ldz, T* y, int64_t ldy, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) y[i * ldy + j] = apply_activation(act, z[i * ldz + j]);
}

template <typename T>
void activation_gradient_block(Activation act, const T* grad, int64_t ldg, const T* z, int64_t ldz, const T* y,
                               int64_t ldy, T* out, int64_t ldo, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      const T zij = z[i * ldz + j];
      out[i * ldo + j] = activation_gradient(act, grad[i * ldg + j], zij, y ? &y[i * ldy + j] : nullptr);
    }
}

template <typename T>
void pack_panel(const T* src, int64_t line_stride, int64_t depth_stride, int64_t lines, int64_t depth, int64_t width,
                T* out) {
  for (int64_t p = 0; p < depth; ++p) {
    for (int64_t i = 0; i < lines; ++i) out[p * width + i] = src[i * line_stride + p * depth_stride];
    for (int64_t i = lines; i < width; ++i) out[p * width + i] = T(0);
  }
}

// bfloat16: the high 16 bits of a float32. float16 (IEEE binary16): rebiased exponent,
// subnormals scaled exactly, infinities and NaNs kept.
float widen_bits(uint16_t h, bool half) {
  uint32_t bits;
  if (!half) {
    bits = uint32_t(h) << 16;
  } else {
    const uint32_t sign = uint32_t(h & 0x8000) << 16, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
    if (exponent == 0) {
      const float magnitude = std::ldexp(float(mantissa), -24);
      return sign ? -magnitude : magnitude;
    }
    bits = exponent == 31 ? sign | 0x7f800000u | (mantissa << 13) : sign | ((exponent + 112) << 23) | (mantissa << 13);
  }
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

template <bool kHalf>
void pack_widened(const uint16_t* src, int64_t line_stride, int64_t depth_stride, int64_t lines, int64_t depth,
                  int64_t width, float* out) {
  for (int64_t p = 0; p < depth; ++p) {
    for (int64_t i = 0; i < lines; ++i) out[p * width + i] = widen_bits(src[i * line_stride + p * depth_stride], kHalf);
    for (int64_t i = lines; i < width; ++i) out[p * width + i] = 0.0f;
  }
}

// Rows of C updated by whole rows of B, k in order (the SIMD sets' order of operations).
// write_once is a hint only (plain stores here).
template <typename T>
void stream_kernel(int64_t depth, const T* a, int64_t a_row_stride, int64_t a_col_stride, int64_t rows, const T* b,
                   int64_t ldb, int64_t cols, T* c, int64_t ldc, const T* bias, bool /*write_once*/) {
  for (int64_t i = 0; i < rows; ++i) {
    T* ci = c + i * ldc;
    for (int64_t j = 0; j < cols; ++j) ci[j] = bias ? bias[j] : T(0);
    for (int64_t p = 0; p < depth; ++p) {
      const T ai = a[i * a_row_stride + p * a_col_stride];
      const T* bp = b + p * ldb;
      for (int64_t j = 0; j < cols; ++j) ci[j] += ai * bp[j];
    }
  }
}

template <bool kHalf>
void stream_widened(int64_t depth, const float* a, int64_t a_row_stride, int64_t a_col_stride, int64_t rows,
                    const uint16_t* b, int64_t ldb, int64_t cols, float* c, int64_t ldc, const float* bias) {
  for (int64_t i = 0; i < rows; ++i) {
    float* ci = c + i * ldc;
    for (int64_t j = 0; j < cols; ++j) ci[j] = bias ? bias[j] : 0.0f;
    for (int64_t p = 0; p < depth; ++p) {
      const float ai = a[i * a_row_stride + p * a_col_stride];
      const uint16_t* bp = b + p * ldb;
      for (int64_t j = 0; j < cols; ++j) ci[j] += ai * widen_bits(bp[j], kHalf);
    }
  }
}

}  // namespace

MicroKernelSet microkernels_portable() {
  return MicroKernelSet{
      "portable",
      MicroKernel<float>{4, 8, &broadcast_kernel<float, 4, 8>, {0, 0}, {nullptr, nullptr},
                         &broadcast_kernel<float, 4, 8, true>, &store_transposed<float>},
      MicroKernel<double>{4, 8, &broadcast_kernel<double, 4, 8>, {0, 0}, {nullptr, nullptr},
                          &broadcast_kernel<double, 4, 8, true>, &store_transposed<double>},
      DotKernel<float>{2, 4, &dot_kernel<float, 2, 4>},
      DotKernel<double>{2, 4, &dot_kernel<double, 2, 4>},
      DotKernel<float>{1, 4, &dot_kernel<float, 1, 4>},
      DotKernel<double>{1, 4, &dot_kernel<double, 1, 4>},
      PanelKernels<float>{4, kPortableLanes, 4,
                          {&panel_kernel<float, 4, 1>, &panel_kernel<float, 4, 2>, &panel_kernel<float, 4, 3>,
                           &panel_kernel<float, 4, 4>}},
      PanelKernels<double>{4, kPortableLanes, 4,
                           {&panel_kernel<double, 4, 1>, &panel_kernel<double, 4, 2>, &panel_kernel<double, 4, 3>,
                            &panel_kernel<double, 4, 4>}},
      ActivationKernels<float>{&activate_block<float>, &activation_gradient_block<float>},
      ActivationKernels<double>{&activate_block<double>, &activation_gradient_block<double>},
      &pack_panel<float>,
      &pack_panel<double>,
      &stream_kernel<float>,
      &stream_kernel<double>,
      &pack_widened<false>,
      &pack_widened<true>,
      &stream_widened<false>,
      &stream_widened<true>,
      WidenedDotKernel{0, 0, nullptr},  // the thin reduced-precision forward takes the blocked path
      WidenedDotKernel{0, 0, nullptr},
  };
}

}  // namespace pylibnn::cpu
