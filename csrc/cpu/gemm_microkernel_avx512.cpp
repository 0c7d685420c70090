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

// SLEEF's float64 vector math, as exported by libtorch_cpu (torch's own vectorized tanh, exp
// and erf call these); 1-ULP variants. float32 uses the templates' own exp, tanh and erf.
extern "C" {
__m512d Sleef_expd8_u10avx512f(__m512d);
__m512d Sleef_tanhd8_u10avx512f(__m512d);
__m512d Sleef_erfd8_u10avx512f(__m512d);
}

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
  static Vec set1(float s) { return _mm512_set1_ps(s); }
  static Vec mul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
  static Vec sub(Vec a, Vec b) { return _mm512_sub_ps(a, b); }
  static Vec div(Vec a, Vec b) { return _mm512_div_ps(a, b); }
  // (z <= 0) ? 0 : v; a NaN z keeps v (relu passes NaN on, as torch's does)
  static Vec zero_where_not_positive(Vec z, Vec v) {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(z, zero(), _CMP_NLE_UQ), v);
  }
  // For the float32 exp and tanh of the templates (fast_exp, fast_tanh).
  static Vec abs(Vec v) { return _mm512_abs_ps(v); }
  static Vec min(Vec a, Vec b) { return _mm512_min_ps(a, b); }  // b when either is NaN
  static Vec max(Vec a, Vec b) { return _mm512_max_ps(a, b); }  // b when either is NaN
  static Vec round(Vec v) { return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static Vec scale_by_power_of_2(Vec v, Vec n) { return _mm512_scalef_ps(v, n); }  // v * 2^n, n integral
  static Vec select_less(Vec a, Vec b, Vec x, Vec y) {  // a < b ? x : y
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_LT_OQ), y, x);
  }
  static Vec copysign(Vec magnitude, Vec sign) {
    const Vec sign_bit = _mm512_set1_ps(-0.0f);
    return _mm512_or_ps(_mm512_andnot_ps(sign_bit, magnitude), _mm512_and_ps(sign_bit, sign));
  }
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
  static Vec set1(double s) { return _mm512_set1_pd(s); }
  static Vec mul(Vec a, Vec b) { return _mm512_mul_pd(a, b); }
  static Vec sub(Vec a, Vec b) { return _mm512_sub_pd(a, b); }
  static Vec div(Vec a, Vec b) { return _mm512_div_pd(a, b); }
  static Vec exp(Vec v) { return Sleef_expd8_u10avx512f(v); }
  static Vec tanh(Vec v) { return Sleef_tanhd8_u10avx512f(v); }
  static Vec erf(Vec v) { return Sleef_erfd8_u10avx512f(v); }
  static Vec zero_where_not_positive(Vec z, Vec v) {
    return _mm512_maskz_mov_pd(_mm512_cmp_pd_mask(z, zero(), _CMP_NLE_UQ), v);
  }
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
      PanelKernels<float>{4, 16, 4,
                          {&panel_kernel<Float32x16, 4, 1>, &panel_kernel<Float32x16, 4, 2>,
                           &panel_kernel<Float32x16, 4, 3>, &panel_kernel<Float32x16, 4, 4>}},
      PanelKernels<double>{4, 8, 4,
                           {&panel_kernel<Float64x8, 4, 1>, &panel_kernel<Float64x8, 4, 2>,
                            &panel_kernel<Float64x8, 4, 3>, &panel_kernel<Float64x8, 4, 4>}},
      ActivationKernels<float>{&activate_block<Float32x16>, &activation_gradient_block<Float32x16>},
      ActivationKernels<double>{&activate_block<Float64x8>, &activation_gradient_block<Float64x8>},
  };
}

}  // namespace pylibnn::cpu
