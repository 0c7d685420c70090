// AVX-512 micro-kernels (compiled with -mavx512f -mfma; called only when the CPU has them).
//   float32: 12 x 32 tile = 24 zmm accumulators, 2 zmm loads of B per k step
//   float64: 12 x 16 tile, the same register shape with 8-lane vectors
// Each A value is broadcast straight from the packed panel into the FMA (the compiler
// folds the set1 into an embedded-broadcast memory operand), so the 32 zmm registers
// hold 24 accumulators + 2 B vectors with room to spare.
#include <immintrin.h>

#include "gemm_microkernels.h"

namespace pylibnn::cpu {
namespace {

struct Float32x16 {
  using Scalar = float;
  using Vec = __m512;
  static constexpr int64_t lanes = 16;
  static Vec zero() { return _mm512_setzero_ps(); }
  static Vec load(const float* p) { return _mm512_loadu_ps(p); }
  static Vec broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static Vec fmadd(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
  static Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
  static void store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
};

struct Float64x8 {
  using Scalar = double;
  using Vec = __m512d;
  static constexpr int64_t lanes = 8;
  static Vec zero() { return _mm512_setzero_pd(); }
  static Vec load(const double* p) { return _mm512_loadu_pd(p); }
  static Vec broadcast(const double* p) { return _mm512_set1_pd(*p); }
  static Vec fmadd(Vec a, Vec b, Vec c) { return _mm512_fmadd_pd(a, b, c); }
  static Vec add(Vec a, Vec b) { return _mm512_add_pd(a, b); }
  static void store(double* p, Vec v) { _mm512_storeu_pd(p, v); }
};

// MR rows x (2 * lanes) columns.
template <typename V, int MR>
void microkernel(int64_t kc, const typename V::Scalar* a, const typename V::Scalar* b,
                 typename V::Scalar* c, int64_t ldc, bool accumulate, const typename V::Scalar* bias) {
  constexpr int64_t NR = 2 * V::lanes;
  typename V::Vec acc0[MR], acc1[MR];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    acc0[i] = V::zero();
    acc1[i] = V::zero();
  }
  for (int64_t p = 0; p < kc; ++p) {
    const typename V::Vec b0 = V::load(b);
    const typename V::Vec b1 = V::load(b + V::lanes);
#pragma GCC unroll 16
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
#pragma GCC unroll 16
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

MicroKernelSet microkernels_avx512() {
  return MicroKernelSet{
      "avx512",
      MicroKernel<float>{12, 32, &microkernel<Float32x16, 12>},
      MicroKernel<double>{12, 16, &microkernel<Float64x8, 12>},
  };
}

}  // namespace pylibnn::cpu
