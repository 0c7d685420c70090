// AVX-512 micro-kernels (compiled with -mavx512f -mfma; called only when the CPU has them).
//   broadcast, float32: 12 x 32 tile = 24 zmm accumulators, 2 zmm loads of B per k step
//   broadcast, float64: 12 x 16 tile, the same register shape with 8-lane vectors
//   dot (thin forward): 4 x 4 tile = 16 zmm accumulators, 8 zmm loads per 16 (8) k steps;
//                       1 x 8 for a single row
// Each A value is broadcast straight from the packed panel into the FMA (the compiler
// folds the set1 into an embedded-broadcast memory operand), so the 32 zmm registers
// hold 24 accumulators + 2 B vectors with room to spare. Partial vectors in the dot
// kernel use mask registers, so no load leaves the operand.
#include <immintrin.h>

#include "gemm_microkernel_templates.h"
#include "gemm_microkernels.h"

namespace pylibnn::cpu {
namespace {

struct Float32x16 {
  using Scalar = float;
  using Vec = __m512;
  static constexpr int64_t lanes = 16;
  static Vec zero() { return _mm512_setzero_ps(); }
  static Vec load(const float* p) { return _mm512_loadu_ps(p); }
  static Vec load_first(const float* p, int64_t n) { return _mm512_maskz_loadu_ps(__mmask16((1u << n) - 1), p); }
  static Vec broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static Vec fmadd(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
  static Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
  static void store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
  static float sum(Vec v) { return _mm512_reduce_add_ps(v); }
};

struct Float64x8 {
  using Scalar = double;
  using Vec = __m512d;
  static constexpr int64_t lanes = 8;
  static Vec zero() { return _mm512_setzero_pd(); }
  static Vec load(const double* p) { return _mm512_loadu_pd(p); }
  static Vec load_first(const double* p, int64_t n) { return _mm512_maskz_loadu_pd(__mmask8((1u << n) - 1), p); }
  static Vec broadcast(const double* p) { return _mm512_set1_pd(*p); }
  static Vec fmadd(Vec a, Vec b, Vec c) { return _mm512_fmadd_pd(a, b, c); }
  static Vec add(Vec a, Vec b) { return _mm512_add_pd(a, b); }
  static void store(double* p, Vec v) { _mm512_storeu_pd(p, v); }
  static double sum(Vec v) { return _mm512_reduce_add_pd(v); }
};

}  // namespace

MicroKernelSet microkernels_avx512() {
  return MicroKernelSet{
      "avx512",
      MicroKernel<float>{12, 32, &broadcast_kernel<Float32x16, 12, 2>},
      MicroKernel<double>{12, 16, &broadcast_kernel<Float64x8, 12, 2>},
      DotKernel<float>{4, 4, &dot_kernel<Float32x16, 4, 4>},
      DotKernel<double>{4, 4, &dot_kernel<Float64x8, 4, 4>},
      DotKernel<float>{1, 8, &dot_kernel<Float32x16, 1, 8>},
      DotKernel<double>{1, 8, &dot_kernel<Float64x8, 1, 8>},
  };
}

}  // namespace pylibnn::cpu
