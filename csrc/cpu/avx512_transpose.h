// 16 x 16 transpose of 32-bit elements held in 16 AVX-512 registers: r[i] lane j <-> r[j] lane i.
// Shared by the AVX-512 translation units that include it (float32 packing, and the bfloat16
// packing, which moves pairs of bfloat16 as 32-bit words); each compiles its own copy.
#pragma once

#include <immintrin.h>

namespace pylibnn::cpu {
namespace {

// Pairs of rows interleaved (unpack), then pairs of pairs (64-bit unpack), then 128-bit lanes
// regrouped twice (shuffle_f32x4): 64 shuffles for 256 values.
inline void transpose_16x16(__m512 (&r)[16]) {
  __m512 t[16], u[16];
  for (int k = 0; k < 8; ++k) {
    t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
    t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
  }
  // u[4g + j]: lane l holds rows 4g..4g+3 at column 4l + j
  for (int g = 0; g < 4; ++g) {
    const __m512d lo0 = _mm512_castps_pd(t[4 * g]), hi0 = _mm512_castps_pd(t[4 * g + 1]);
    const __m512d lo1 = _mm512_castps_pd(t[4 * g + 2]), hi1 = _mm512_castps_pd(t[4 * g + 3]);
    u[4 * g + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(lo0, lo1));
    u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(lo0, lo1));
    u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(hi0, hi1));
    u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(hi0, hi1));
  }
  for (int j = 0; j < 4; ++j) {
    const __m512 x0 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x88), y0 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xDD);
    const __m512 x1 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x88), y1 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xDD);
    r[j] = _mm512_shuffle_f32x4(x0, x1, 0x88);
    r[8 + j] = _mm512_shuffle_f32x4(x0, x1, 0xDD);
    r[4 + j] = _mm512_shuffle_f32x4(y0, y1, 0x88);
    r[12 + j] = _mm512_shuffle_f32x4(y0, y1, 0xDD);
  }
}

}  // namespace
}  // namespace pylibnn::cpu
