// AVX-512 micro-kernels (compiled with -mavx512f -mfma; called only when the CPU has them).
//   broadcast, float32: 12 x 32 tile = 24 zmm accumulators, 2 zmm loads of B per k step
//   broadcast, float64: 12 x 16 tile, the same register shape with 8-lane vectors
//   dot (thin forward): 4 x 4 tile = 16 zmm accumulators, 8 zmm loads per 16 (8) k steps;
//                       1 x 8 for a single row; the same 4 x 4 on bfloat16 / float16
//                       rows widened as loaded (CPUs without AVX512-BF16)
//   packing: 16 x 16 (float32) and 8 x 8 (float64) in-register transposes, masked copies;
//            bfloat16 / float16 widened to float32 on the way (vpmovzxwd + shift, vcvtph2ps)
//   row streaming (thin backward): up to 4 rows x 4 zmm of C per k step
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

#include "avx512_transpose.h"
#include "gemm_microkernel_templates.h"
#include "gemm_microkernels.h"

namespace pylibnn::cpu {
namespace {

struct Float32x16 {
  using Scalar = float;
  using Vec = __m512;
  static constexpr int64_t lanes = 16;
  static constexpr int k_unroll = 1;  // k steps per iteration of the broadcast k loop (templates)
  static Vec zero() { return _mm512_setzero_ps(); }
  static Vec load(const float* p) { return _mm512_loadu_ps(p); }
  static Vec load_first(const float* p, int64_t n) { return _mm512_maskz_loadu_ps(__mmask16((1u << n) - 1), p); }
  static Vec broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static Vec fmadd(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
  static Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
  static void store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
  static void store_write_once(float* p, Vec v) { _mm512_stream_ps(p, v); }  // p 64-byte aligned
  static void store_first(float* p, Vec v, int64_t n) { _mm512_mask_storeu_ps(p, __mmask16((1u << n) - 1), v); }
  // 16 bfloat16 (the high half of a float32) or float16 values to float32.
  template <bool kHalf>
  static Vec widen(const uint16_t* p) {
    const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    if constexpr (kHalf) return _mm512_cvtph_ps(bits);
    else return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
  }
  static void transpose(Vec (&r)[16]) { transpose_16x16(r); }  // avx512_transpose.h
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
  static constexpr int k_unroll = 1;
  static Vec zero() { return _mm512_setzero_pd(); }
  static Vec load(const double* p) { return _mm512_loadu_pd(p); }
  static Vec load_first(const double* p, int64_t n) { return _mm512_maskz_loadu_pd(__mmask8((1u << n) - 1), p); }
  static Vec broadcast(const double* p) { return _mm512_set1_pd(*p); }
  static Vec fmadd(Vec a, Vec b, Vec c) { return _mm512_fmadd_pd(a, b, c); }
  static Vec add(Vec a, Vec b) { return _mm512_add_pd(a, b); }
  static void store(double* p, Vec v) { _mm512_storeu_pd(p, v); }
  static void store_write_once(double* p, Vec v) { _mm512_stream_pd(p, v); }  // p 64-byte aligned
  static void store_first(double* p, Vec v, int64_t n) { _mm512_mask_storeu_pd(p, __mmask8((1u << n) - 1), v); }
  // 8 x 8 transpose: pairs of rows interleaved (unpack), then two rounds of two-source
  // permutes (permutex2var) regrouping pairs and then halves.
  static void transpose(Vec (&r)[8]) {
    Vec t[8], u[8];
    for (int k = 0; k < 4; ++k) {
      t[2 * k] = _mm512_unpacklo_pd(r[2 * k], r[2 * k + 1]);      // columns 0 2 4 6 of rows 2k, 2k+1
      t[2 * k + 1] = _mm512_unpackhi_pd(r[2 * k], r[2 * k + 1]);  // columns 1 3 5 7
    }
    const __m512i even = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13);
    const __m512i odd = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
    // u: rows 0-3 (g = 0) or 4-7 (g = 1) at columns {0,4}, {2,6}, {1,5}, {3,7}
    for (int g = 0; g < 2; ++g) {
      u[4 * g + 0] = _mm512_permutex2var_pd(t[4 * g], even, t[4 * g + 2]);
      u[4 * g + 1] = _mm512_permutex2var_pd(t[4 * g], odd, t[4 * g + 2]);
      u[4 * g + 2] = _mm512_permutex2var_pd(t[4 * g + 1], even, t[4 * g + 3]);
      u[4 * g + 3] = _mm512_permutex2var_pd(t[4 * g + 1], odd, t[4 * g + 3]);
    }
    const __m512i low = _mm512_setr_epi64(0, 1, 2, 3, 8, 9, 10, 11);
    const __m512i high = _mm512_setr_epi64(4, 5, 6, 7, 12, 13, 14, 15);
    const int column[4] = {0, 2, 1, 3};
    for (int k = 0; k < 4; ++k) {
      r[column[k]] = _mm512_permutex2var_pd(u[k], low, u[4 + k]);
      r[column[k] + 4] = _mm512_permutex2var_pd(u[k], high, u[4 + k]);
    }
  }
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
      MicroKernel<float>{12, 32, &broadcast_kernel<Float32x16, 12, 2>, {4, 8},
                         {&broadcast_kernel<Float32x16, 4, 2, 12>, &broadcast_kernel<Float32x16, 8, 2, 12>},
                         &broadcast_kernel<Float32x16, 12, 2, 12, true>, &store_transposed<Float32x16>},
      MicroKernel<double>{12, 16, &broadcast_kernel<Float64x8, 12, 2>, {4, 8},
                          {&broadcast_kernel<Float64x8, 4, 2, 12>, &broadcast_kernel<Float64x8, 8, 2, 12>},
                          &broadcast_kernel<Float64x8, 12, 2, 12, true>, &store_transposed<Float64x8>},
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
      &pack_panel<Float32x16>,
      &pack_panel<Float64x8>,
      &stream_kernel<Float32x16>,
      &stream_kernel<Float64x8>,
      &pack_widened<Float32x16, false>,
      &pack_widened<Float32x16, true>,
      &stream_widened<Float32x16, false>,
      &stream_widened<Float32x16, true>,
      WidenedDotKernel{4, 4, &dot_widened<Float32x16, 4, 4, false>},
      WidenedDotKernel{4, 4, &dot_widened<Float32x16, 4, 4, true>},
  };
}

}  // namespace pylibnn::cpu
