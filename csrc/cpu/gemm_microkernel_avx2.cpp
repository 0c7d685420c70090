// AVX2 + FMA micro-kernels (compiled with -mavx2 -mfma; called only when the CPU has them).
//   float32: 6 x 16 tile = 12 ymm accumulators, 2 ymm loads of B per k step
//   float64: 6 x 8 tile, the same register shape with 4-lane vectors
// 12 accumulators + 2 B vectors + 1 broadcast fill 15 of the 16 ymm registers.
#include <immintrin.h>

#include "gemm_microkernels.h"

namespace pylibnn::cpu {
namespace {

struct Float32x8 {
  using Scalar = float;
  using Vec = __m256;
  static constexpr int64_t lanes = 8;
  static Vec zero() { return _mm256_setzero_ps(); }
  static Vec load(const float* p) { return _mm256_loadu_ps(p); }
  static Vec broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static Vec fmadd(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
  static Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
  static void store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
};

struct Float64x4 {
  using Scalar = double;
  using Vec = __m256d;
  static constexpr int64_t lanes = 4;
  static Vec zero() { return _mm256_setzero_pd(); }
  static Vec load(const double* p) { return _mm256_loadu_pd(p); }
  static Vec broadcast(const double* p) { return _mm256_broadcast_sd(p); }
  static Vec fmadd(Vec a, Vec b, Vec c) { return _mm256_fmadd_pd(a, b, c); }
  static Vec add(Vec a, Vec b) { return _mm256_add_pd(a, b); }
  static void store(double* p, Vec v) { _mm256_storeu_pd(p, v); }
};

// MR rows x (2 * lanes) columns.
template <typename V, int MR>
void microkernel(int64_t kc, const typename V::Scalar* a, const typename V::Scalar* b,
                 typename V::Scalar* c, int64_t ldc, bool accumulate, const typename V::Scalar* bias) {
  constexpr int64_t NR = 2 * V::lanes;
  typename V::Vec acc0[MR], acc1[MR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    acc0[i] = V::zero();
    acc1[i] = V::zero();
  }
  for (int64_t p = 0; p < kc; ++p) {
    const typename V::Vec b0 = V::load(b);
    const typename V::Vec b1 = V::load(b + V::lanes);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const typename V::Vec ai = V::broadcast(a + i);
      acc0[i] = V::fmadd(ai, b0, acc0[i]);
      acc1[i] = V::fmadd(ai, b1, acc1[i]);
    }
    a += MR;
    b += NR;
  }
  const typename V::Vec bias0 = bias ? V::load(bias) : V::zero();
  const typename V::Vec bias1 = bias ? V::load(bias + V::lanes) : V::zero();
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    typename V::Scalar* ci = c + i * ldc;
    typename V::Vec out0 = V::add(acc0[i], bias0);
    typename V::Vec out1 = V::add(acc1[i], bias1);
    if (accumulate) {
      out0 = V::add(out0, V::load(ci));
      out1 = V::add(out1, V::load(ci + V::lanes));
    }
    V::store(ci, out0);
    V::store(ci + V::lanes, out1);
  }
}

}  // namespace

MicroKernelSet microkernels_avx2() {
  return MicroKernelSet{
      "avx2",
      MicroKernel<float>{6, 16, &microkernel<Float32x8, 6>},
      MicroKernel<double>{6, 8, &microkernel<Float64x4, 6>},
  };
}

}  // namespace pylibnn::cpu
