// AVX2 + FMA micro-kernels (compiled with -mavx2 -mfma -mf16c; called only when the CPU has them).
//   broadcast, float32: 6 x 16 tile = 12 ymm accumulators, 2 ymm loads of B per k step
//   broadcast, float64: 6 x 8 tile, the same register shape with 4-lane vectors
//   dot (thin forward): 2 x 4 tile = 8 ymm accumulators; 1 x 8 for a single row; the same
//                       2 x 4 on bfloat16 / float16 rows widened as loaded
// 12 accumulators + 2 B vectors + 1 broadcast fill 15 of the 16 ymm registers. Partial
// vectors in the dot kernel use maskload, so no load leaves the operand.
//   panel (fused MLP): 4 x up to 3 vectors = 12 ymm accumulators
//   packing: 8 x 8 (float32) and 4 x 4 (float64) in-register transposes, masked copies;
//            bfloat16 / float16 widened to float32 on the way
//   row streaming (thin backward): up to 4 rows x 2 ymm of C per k step
//   activations: the templates' float32 exp / tanh / erf, SLEEF's float64 ones, on ymm vectors
#include <immintrin.h>

// SLEEF's float64 vector math, as exported by libtorch_cpu (torch's own AVX2 activations call
// these). float32 uses the templates' own exp, tanh and erf.
extern "C" {
__m256d Sleef_expd4_u10avx2(__m256d);
__m256d Sleef_tanhd4_u10avx2(__m256d);
__m256d Sleef_erfd4_u10avx2(__m256d);
}

#include "gemm_microkernel_templates.h"
#include "gemm_microkernels.h"

namespace pylibnn::cpu {
namespace {

struct Float32x8 {
  using Scalar = float;
  using Vec = __m256;
  static constexpr int64_t lanes = 8;
  static constexpr int k_unroll = 4;  // k steps per iteration of the broadcast k loop (templates)
  static Vec zero() { return _mm256_setzero_ps(); }
  static Vec load(const float* p) { return _mm256_loadu_ps(p); }
  static Vec load_first(const float* p, int64_t n) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), lane));
  }
  static Vec broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static Vec fmadd(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
  static Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
  static void store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
  static void store_write_once(float* p, Vec v) { _mm256_stream_ps(p, v); }  // p 32-byte aligned
  static void store_first(float* p, Vec v, int64_t n) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_maskstore_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), lane), v);
  }
  // 8 bfloat16 (the high half of a float32) or float16 values to float32 (F16C).
  template <bool kHalf>
  static Vec widen(const uint16_t* p) {
    const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    if constexpr (kHalf) return _mm256_cvtph_ps(bits);
    else return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
  }
  // 8 x 8 transpose: unpack pairs of rows, shuffle pairs of pairs, then swap 128-bit halves.
  static void transpose(Vec (&r)[8]) {
    Vec t[8], s[8];
    for (int k = 0; k < 4; ++k) {
      t[2 * k] = _mm256_unpacklo_ps(r[2 * k], r[2 * k + 1]);
      t[2 * k + 1] = _mm256_unpackhi_ps(r[2 * k], r[2 * k + 1]);
    }
    for (int g = 0; g < 2; ++g) {  // s[4g + j]: rows 4g..4g+3 at columns j and j + 4
      s[4 * g + 0] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
      s[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
      s[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
      s[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
    }
    for (int j = 0; j < 4; ++j) {
      r[j] = _mm256_permute2f128_ps(s[j], s[4 + j], 0x20);
      r[j + 4] = _mm256_permute2f128_ps(s[j], s[4 + j], 0x31);
    }
  }
  static float sum(Vec v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static Vec set1(float s) { return _mm256_set1_ps(s); }
  static Vec mul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
  static Vec sub(Vec a, Vec b) { return _mm256_sub_ps(a, b); }
  static Vec div(Vec a, Vec b) { return _mm256_div_ps(a, b); }
  // (z <= 0) ? 0 : v; a NaN z keeps v (relu passes NaN on, as torch's does)
  static Vec zero_where_not_positive(Vec z, Vec v) { return _mm256_and_ps(_mm256_cmp_ps(z, zero(), _CMP_NLE_UQ), v); }
  // For the float32 exp and tanh of the templates (fast_exp, fast_tanh).
  static Vec abs(Vec v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }
  static Vec min(Vec a, Vec b) { return _mm256_min_ps(a, b); }  // b when either is NaN
  static Vec max(Vec a, Vec b) { return _mm256_max_ps(a, b); }  // b when either is NaN
  static Vec round(Vec v) { return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static Vec scale_by_power_of_2(Vec v, Vec n) {  // v * 2^n for integral n in [-126, 127]
    const __m256i exponent = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(v, _mm256_castsi256_ps(exponent));
  }
  static Vec select_less(Vec a, Vec b, Vec x, Vec y) {  // a < b ? x : y
    return _mm256_blendv_ps(y, x, _mm256_cmp_ps(a, b, _CMP_LT_OQ));
  }
  static Vec copysign(Vec magnitude, Vec sign) {
    const Vec sign_bit = _mm256_set1_ps(-0.0f);
    return _mm256_or_ps(_mm256_andnot_ps(sign_bit, magnitude), _mm256_and_ps(sign_bit, sign));
  }
};

struct Float64x4 {
  using Scalar = double;
  using Vec = __m256d;
  static constexpr int64_t lanes = 4;
  static constexpr int k_unroll = 4;
  static Vec zero() { return _mm256_setzero_pd(); }
  static Vec load(const double* p) { return _mm256_loadu_pd(p); }
  static Vec load_first(const double* p, int64_t n) {
    const __m256i lane = _mm256_setr_epi64x(0, 1, 2, 3);
    return _mm256_maskload_pd(p, _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), lane));
  }
  static Vec broadcast(const double* p) { return _mm256_broadcast_sd(p); }
  static Vec fmadd(Vec a, Vec b, Vec c) { return _mm256_fmadd_pd(a, b, c); }
  static Vec add(Vec a, Vec b) { return _mm256_add_pd(a, b); }
  static void store(double* p, Vec v) { _mm256_storeu_pd(p, v); }
  static void store_write_once(double* p, Vec v) { _mm256_stream_pd(p, v); }  // p 32-byte aligned
  static void store_first(double* p, Vec v, int64_t n) {
    const __m256i lane = _mm256_setr_epi64x(0, 1, 2, 3);
    _mm256_maskstore_pd(p, _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), lane), v);
  }
  // 4 x 4 transpose: unpack pairs of rows, then swap 128-bit halves.
  static void transpose(Vec (&r)[4]) {
    const Vec t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
    const Vec t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
    r[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
    r[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
    r[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
    r[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
  }
  static double sum(Vec v) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
  }
  static Vec set1(double s) { return _mm256_set1_pd(s); }
  static Vec mul(Vec a, Vec b) { return _mm256_mul_pd(a, b); }
  static Vec sub(Vec a, Vec b) { return _mm256_sub_pd(a, b); }
  static Vec div(Vec a, Vec b) { return _mm256_div_pd(a, b); }
  static Vec exp(Vec v) { return Sleef_expd4_u10avx2(v); }
  static Vec tanh(Vec v) { return Sleef_tanhd4_u10avx2(v); }
  static Vec erf(Vec v) { return Sleef_erfd4_u10avx2(v); }
  static Vec zero_where_not_positive(Vec z, Vec v) { return _mm256_and_pd(_mm256_cmp_pd(z, zero(), _CMP_NLE_UQ), v); }
};

}  // namespace

MicroKernelSet microkernels_avx2() {
  return MicroKernelSet{
      "avx2",
      MicroKernel<float>{6, 16, &broadcast_kernel<Float32x8, 6, 2>, {4, 0},
                         {&broadcast_kernel<Float32x8, 4, 2, 6>, nullptr},
                         &broadcast_kernel<Float32x8, 6, 2, 6, true>, &store_transposed<Float32x8>},
      MicroKernel<double>{6, 8, &broadcast_kernel<Float64x4, 6, 2>, {4, 0},
                          {&broadcast_kernel<Float64x4, 4, 2, 6>, nullptr},
                          &broadcast_kernel<Float64x4, 6, 2, 6, true>, &store_transposed<Float64x4>},
      DotKernel<float>{2, 4, &dot_kernel<Float32x8, 2, 4>},
      DotKernel<double>{2, 4, &dot_kernel<Float64x4, 2, 4>},
      DotKernel<float>{1, 8, &dot_kernel<Float32x8, 1, 8>},
      DotKernel<double>{1, 8, &dot_kernel<Float64x4, 1, 8>},
      PanelKernels<float>{4, 8, 3,
                          {&panel_kernel<Float32x8, 4, 1>, &panel_kernel<Float32x8, 4, 2>,
                           &panel_kernel<Float32x8, 4, 3>, nullptr}},
      PanelKernels<double>{4, 4, 3,
                           {&panel_kernel<Float64x4, 4, 1>, &panel_kernel<Float64x4, 4, 2>,
                            &panel_kernel<Float64x4, 4, 3>, nullptr}},
      ActivationKernels<float>{&activate_block<Float32x8>, &activation_gradient_block<Float32x8>},
      ActivationKernels<double>{&activate_block<Float64x4>, &activation_gradient_block<Float64x4>},
      &pack_panel<Float32x8>,
      &pack_panel<Float64x4>,
      &stream_kernel<Float32x8>,
      &stream_kernel<Float64x4>,
      &pack_widened<Float32x8, false>,
      &pack_widened<Float32x8, true>,
      &stream_widened<Float32x8, false>,
      &stream_widened<Float32x8, true>,
      WidenedDotKernel{2, 4, &dot_widened<Float32x8, 2, 4, false>},
      WidenedDotKernel{2, 4, &dot_widened<Float32x8, 2, 4, true>},
  };
}

}  // namespace pylibnn::cpu
