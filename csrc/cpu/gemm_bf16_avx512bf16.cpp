// Native bfloat16 GEMM kernels (gemm_microkernels.h, Bf16Kernel): float32 accumulation of
// bfloat16 products, for CPUs with AVX512-BF16 (Zen 4, Zen 5, Intel Cooper Lake and later)
// and, on those that also have them, AMX tiles (Intel Sapphire Rapids and later).
//   tile (MR x NR, float32) = bias + A_panel (MR x K) @ B_panel (K x NR)
// B is packed in pairs of consecutive k values per column, the "VNNI" layout both instructions
// read (out[(p / 2) * width * 2 + i * 2 + p % 2]); A in pairs too, or in rows for AMX.
//   avx512bf16: 12 x 32 tile, 24 zmm accumulators. A and B in pairs (G = 2): per pair of k
//               steps, 2 zmm loads of B and 12 broadcast 32-bit words of A into 24 vdpbf16ps
//               (each is two multiply-adds per lane, products exact, sums in float32).
//   amx:        32 x 32 tile in four 16 x 16 float32 tile registers, kept there for all of K.
//               A row-major (a tile row is 32 k steps of one row: A is read in place when it
//               is contiguous along k, unless its rows are a multiple of 2 KiB apart and
//               several B panels reuse it; else packed into rows), B in pairs (G = 2: a 16-pair x
//               16-column block is one tile); per 32 k steps, 2 A and 2 B tile loads feed 4
//               tdpbf16ps (16 x 16 x 32 multiply-adds each).
//   dot:        4 x 4 outputs of A B^T with both read in place along k (a thin forward): 16
//               zmm accumulators of 16 pairs each, summed horizontally once at the end.
// Packing moves 16 lines x 32 k steps at a time as 16 vectors of 32-bit words (pairs of
// bfloat16): lines contiguous along k (x, W in the forward) are loaded as they are; k steps
// contiguous across lines (the backward's operands) are loaded two steps at a time and
// interleaved into pairs; a 16 x 16 transpose of the words (avx512_transpose.h) turns one
// form into the other where the group needs it. Edges are zero-filled.
// The results are rounded to bfloat16 once, by vcvtne2ps2bf16 / vcvtneps2bf16 (round to
// nearest even): from the float32 tile (round_to_bf16), or, for a tile whose epilogue is only
// the bias, from the vdpbf16ps kernel's registers (dpbf16_kernel_12x32_rounded).
// Both instructions treat denormal inputs as zero and flush denormal results (the hardware's
// bfloat16 arithmetic); the widening path (gemm_widened) keeps them.
// Compiled with -mavx512bf16 -mamx-tile -mamx-bf16 (setup.py); the AMX kernel runs only
// where the CPU has AMX and Linux granted this process the tile state (cpu_isa.cpp).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "avx512_transpose.h"
#include "gemm_microkernels.h"

namespace pylibnn::cpu {
namespace {

constexpr int64_t kLines = 16;  // lines per packing block
constexpr int64_t kSteps = 32;  // k steps per packing block (16 pairs)

void transpose_words(__m512i (&v)[16]) {
  __m512 r[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_castsi512_ps(v[i]);
  transpose_16x16(r);
  for (int i = 0; i < 16; ++i) v[i] = _mm512_castps_si512(r[i]);
}

// Line-major block: v[i] = line i's k steps [0, steps) (32 bfloat16), zeros past lines / steps.
void load_lines(const uint16_t* src, int64_t line_stride, int64_t lines, int64_t steps, __m512i (&v)[16]) {
  const __mmask32 mask = steps >= kSteps ? ~__mmask32(0) : __mmask32((1u << steps) - 1);
  for (int64_t i = 0; i < kLines; ++i)
    v[i] = i < lines ? _mm512_maskz_loadu_epi16(mask, src + i * line_stride) : _mm512_setzero_si512();
}

// Pair-major block: word i of v[q] = (step 2q, step 2q + 1) of line i, zeros past lines / steps.
void load_pairs(const uint16_t* src, int64_t depth_stride, int64_t lines, int64_t steps, __m512i (&v)[16]) {
  const __mmask16 mask = lines >= kLines ? __mmask16(0xFFFF) : __mmask16((1u << lines) - 1);
  // bfloat16 2t <- step 2q line t, 2t + 1 <- step 2q + 1 line t
  alignas(64) static constexpr uint16_t kInterleave[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,
                                                           21, 6, 22, 7, 23, 8,  24, 9,  25, 10, 26,
                                                           11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i interleave = _mm512_load_si512(kInterleave);
  for (int64_t q = 0; q < kLines; ++q) {
    const int64_t p = 2 * q;
    const __m256i even = p < steps ? _mm256_maskz_loadu_epi16(mask, src + p * depth_stride) : _mm256_setzero_si256();
    const __m256i odd =
        p + 1 < steps ? _mm256_maskz_loadu_epi16(mask, src + (p + 1) * depth_stride) : _mm256_setzero_si256();
    v[q] = _mm512_permutexvar_epi16(interleave, _mm512_inserti64x4(_mm512_castsi256_si512(even), odd, 1));
  }
}

// Any other strides: element by element, into the line-major form.
void gather_lines(const uint16_t* src, int64_t line_stride, int64_t depth_stride, int64_t lines, int64_t steps,
                  __m512i (&v)[16]) {
  alignas(64) uint16_t block[kLines][kSteps] = {};
  for (int64_t i = 0; i < lines; ++i)
    for (int64_t p = 0; p < steps; ++p) block[i][p] = src[i * line_stride + p * depth_stride];
  for (int64_t i = 0; i < kLines; ++i) v[i] = _mm512_load_si512(block[i]);
}

// PackGroupedFn for pairs (G = 2) or whole rows (G = kRows: line i at i * (packed_depth +
// kBf16RowPadding), the AMX kernel's A panels).
constexpr int kRows = 0;

template <int G>
void pack_grouped(const uint16_t* src, int64_t line_stride, int64_t depth_stride, int64_t lines, int64_t depth,
                  int64_t packed_depth, int64_t width, uint16_t* out) {
  static_assert(G == 2 || G == kRows);
  for (int64_t i0 = 0; i0 < width; i0 += kLines) {
    const int64_t n_lines = std::clamp<int64_t>(lines - i0, 0, kLines);
    const int64_t n_out = std::min<int64_t>(kLines, width - i0);
    for (int64_t p0 = 0; p0 < packed_depth; p0 += kSteps) {
      const int64_t steps = std::clamp<int64_t>(depth - p0, 0, kSteps);
      const uint16_t* block = src + i0 * line_stride + p0 * depth_stride;
      __m512i v[16];
      bool pair_major = false;
      if (n_lines == 0 || steps == 0) {
        for (auto& x : v) x = _mm512_setzero_si512();
        pair_major = G == 2;
      } else if (depth_stride == 1) {
        load_lines(block, line_stride, n_lines, steps, v);
      } else if (line_stride == 1) {
        load_pairs(block, depth_stride, n_lines, steps, v);
        pair_major = true;
      } else {
        gather_lines(block, line_stride, depth_stride, n_lines, steps, v);
      }
      if (pair_major != (G == 2)) transpose_words(v);
      if constexpr (G == 2) {
        // v[q]: pair p0 / 2 + q of lines i0 .. i0 + 15, stored as that pair's row of the panel
        const __mmask16 mask = __mmask16((1u << n_out) - 1);
        const int64_t pairs = std::min<int64_t>(kSteps, packed_depth - p0) / 2;
        for (int64_t q = 0; q < pairs; ++q)
          _mm512_mask_storeu_epi32(out + (p0 / 2 + q) * width * 2 + i0 * 2, mask, v[q]);
      } else {
        // v[i]: steps p0 .. p0 + 31 of line i0 + i
        const int64_t row_stride = packed_depth + kBf16RowPadding;
        for (int64_t i = 0; i < n_out; ++i) _mm512_storeu_si512(out + (i0 + i) * row_stride + p0, v[i]);
      }
    }
  }
}

// tile = float32 MR x NR (row-major, leading dimension NR); bias[j] added when given.
template <int NV>
void store_tile_row(float* tile, const __m512 (&acc)[NV], const float* bias) {
  for (int v = 0; v < NV; ++v) {
    const __m512 sum = bias ? _mm512_add_ps(acc[v], _mm512_loadu_ps(bias + 16 * v)) : acc[v];
    _mm512_storeu_ps(tile + 16 * v, sum);
  }
}

// vdpbf16ps: 12 x 32, B in pairs: acc (12 rows x 2 vectors of 16 float32) = A @ B. A is a
// packed panel in pairs, or (kAInPlace) A itself, row i at a + i * lda with its k steps
// contiguous, so that a pair is one 32-bit word there too; rows past `rows` repeat the last
// one (their sums are not stored).
template <bool kAInPlace>
inline void dpbf16_accumulate_12x32(int64_t packed_depth, const uint16_t* a, int64_t lda, int64_t rows,
                                    const uint16_t* b, __m512 (&acc)[12][2]) {
  constexpr int MR = 12;
  const uint16_t* row[MR];
  for (int i = 0; i < MR; ++i) row[i] = kAInPlace ? a + std::min<int64_t>(i, rows - 1) * lda : a + 2 * i;
  constexpr int64_t kPairStride = kAInPlace ? 2 : 2 * MR;  // bfloat16 from one pair of a row to the next
  for (auto& r : acc)
    for (auto& x : r) x = _mm512_setzero_ps();
  for (int64_t q = 0; q < packed_depth / 2; ++q) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(b + q * 64);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(b + q * 64 + 32);
#pragma GCC unroll 12
    for (int i = 0; i < MR; ++i) {
      int32_t pair;
      std::memcpy(&pair, row[i] + q * kPairStride, sizeof(pair));
      const __m512bh ai = (__m512bh)_mm512_set1_epi32(pair);
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], ai, b0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], ai, b1);
    }
  }
}

void dpbf16_kernel_12x32(int64_t packed_depth, const uint16_t* a, int64_t, const uint16_t* b, float* tile,
                         const float* bias) {
  __m512 acc[12][2];
  dpbf16_accumulate_12x32<false>(packed_depth, a, 0, 12, b, acc);
  for (int i = 0; i < 12; ++i) store_tile_row<2>(tile + i * 32, acc[i], bias);
}

void dpbf16_kernel_12x32_a_in_place(int64_t packed_depth, const uint16_t* a, int64_t lda, int64_t rows,
                                    const uint16_t* b, float* tile, const float* bias) {
  __m512 acc[12][2];
  dpbf16_accumulate_12x32<true>(packed_depth, a, lda, rows, b, acc);
  for (int i = 0; i < 12; ++i) store_tile_row<2>(tile + i * 32, acc[i], bias);
}

// The tile rounded from its registers (vcvtne2ps2bf16, one 64-byte store per row) instead of
// stored as float32 and rounded by round_to_bf16: Zen 4, one thread, against torch at
// 1024 x 128 -> 128 / 512: 0.99x / 0.91x -> 1.06x / 0.97x.
void dpbf16_kernel_12x32_rounded(int64_t packed_depth, const uint16_t* a, int64_t lda, bool a_in_place,
                                 const uint16_t* b, const float* bias, uint16_t* dst, int64_t ldd, int64_t rows,
                                 int64_t cols) {
  __m512 acc[12][2];
  if (a_in_place)
    dpbf16_accumulate_12x32<true>(packed_depth, a, lda, rows, b, acc);
  else
    dpbf16_accumulate_12x32<false>(packed_depth, a, 0, 12, b, acc);
  const __m512 bias0 = bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();
  const __m512 bias1 = bias ? _mm512_loadu_ps(bias + 16) : _mm512_setzero_ps();
  const __mmask32 mask = cols >= 32 ? ~__mmask32(0) : __mmask32((1u << cols) - 1);
#pragma GCC unroll 12
  for (int i = 0; i < 12; ++i) {
    if (i >= rows) break;
    const __m512 low = bias ? _mm512_add_ps(acc[i][0], bias0) : acc[i][0];  // keeps -0 without a bias
    const __m512 high = bias ? _mm512_add_ps(acc[i][1], bias1) : acc[i][1];
    const __m512bh rounded = _mm512_cvtne2ps_pbh(high, low);
    _mm512_mask_storeu_epi16(dst + i * ldd, mask, (__m512i)rounded);
  }
}

// The dot kernel (Bf16DotKernelFn): c (rows x cols of 4 x 4, float32) = A B^T for A and B^T
// both contiguous along k (x and W in the forward), read in place: per 32 k steps, one zmm
// load from each of the 4 rows of A and of B^T (16 pairs, the layout vdpbf16ps reads) into 16
// vdpbf16ps, the last steps by masked loads (zeros past K), one horizontal sum per output at
// the end. Rows and columns past rows / cols repeat the last one and are not stored.
void dpbf16_dot_4x4(int64_t depth, const uint16_t* a, int64_t lda, int64_t rows, const uint16_t* b, int64_t ldb,
                    int64_t cols, float* c, int64_t ldc) {
  constexpr int R = 4, C = 4;
  const uint16_t* a_row[R];
  const uint16_t* b_row[C];
  for (int i = 0; i < R; ++i) a_row[i] = a + std::min<int64_t>(i, rows - 1) * lda;
  for (int j = 0; j < C; ++j) b_row[j] = b + std::min<int64_t>(j, cols - 1) * ldb;
  __m512 acc[R][C];
  for (auto& r : acc)
    for (auto& x : r) x = _mm512_setzero_ps();
  const auto step = [&](int64_t p, __mmask32 mask) {
    __m512bh av[R], bv[C];
    for (int i = 0; i < R; ++i) av[i] = (__m512bh)_mm512_maskz_loadu_epi16(mask, a_row[i] + p);
    for (int j = 0; j < C; ++j) bv[j] = (__m512bh)_mm512_maskz_loadu_epi16(mask, b_row[j] + p);
    for (int i = 0; i < R; ++i)
      for (int j = 0; j < C; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], av[i], bv[j]);
  };
  int64_t p = 0;
  for (; p + kSteps <= depth; p += kSteps) step(p, ~__mmask32(0));
  if (p < depth) step(p, __mmask32((1u << (depth - p)) - 1));
  for (int i = 0; i < R && i < rows; ++i)
    for (int j = 0; j < C && j < cols; ++j) c[i * ldc + j] = _mm512_reduce_add_ps(acc[i][j]);
}

// The tile configuration of the AMX kernel: tmm0..3 = C (16 rows x 16 float32), tmm4..5 = A
// (16 rows x 32 bfloat16), tmm6..7 = B (16 pairs x 16 columns x 2 bfloat16); 64 bytes a row.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {64, 64, 64, 64, 64, 64, 64, 64};
  uint8_t rows[16] = {16, 16, 16, 16, 16, 16, 16, 16};
};

const TileConfig& amx_config() {
  static const TileConfig config;
  return config;
}

// The tile state belongs to the thread: the engine loads the configuration once per task
// (amx_begin) and releases it after the task's last tile (amx_end), so that other code on
// the thread (oneDNN's kernels under torch) finds it as it left it.
void amx_begin() { _tile_loadconfig(&amx_config()); }
void amx_end() { _tile_release(); }

// AMX: 32 x 32, A in k-blocks of 32, B in pairs; between amx_begin and amx_end. Each
// operand tile is loaded just before its first product, so the loads of one k-block overlap
// the products of the last (tile registers are not renamed).
void amx_kernel_32x32(int64_t packed_depth, const uint16_t* a, int64_t lda, const uint16_t* b, float* tile,
                      const float* bias) {
  const int64_t a_row_bytes = lda * static_cast<int64_t>(sizeof(uint16_t));
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int64_t p0 = 0; p0 < packed_depth; p0 += kSteps) {
    const uint16_t* b_block = b + p0 * 32;  // 16 pairs x 32 columns x 2
    _tile_loadd(4, a + p0, a_row_bytes);
    _tile_loadd(6, b_block, 128);
    _tile_dpbf16ps(0, 4, 6);
    _tile_loadd(7, b_block + 32, 128);
    _tile_dpbf16ps(1, 4, 7);
    _tile_loadd(5, a + 16 * lda + p0, a_row_bytes);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  constexpr int64_t ld = 32 * sizeof(float);
  _tile_stored(0, tile, ld);
  _tile_stored(1, tile + 16, ld);
  _tile_stored(2, tile + 16 * 32, ld);
  _tile_stored(3, tile + 16 * 32 + 16, ld);
  if (bias) {
    const __m512 b0 = _mm512_loadu_ps(bias), b1 = _mm512_loadu_ps(bias + 16);
    for (int64_t i = 0; i < 32; ++i) {
      _mm512_storeu_ps(tile + i * 32, _mm512_add_ps(_mm512_loadu_ps(tile + i * 32), b0));
      _mm512_storeu_ps(tile + i * 32 + 16, _mm512_add_ps(_mm512_loadu_ps(tile + i * 32 + 16), b1));
    }
  }
}

// tile (32 x 32 float32, leading dimension 32) transposed in place: four 16 x 16 blocks, each
// transposed in registers, the two off the diagonal swapped.
void transpose_tile_32x32(float* tile) {
  __m512 block[2][2][16];
  for (int bi = 0; bi < 2; ++bi)
    for (int bj = 0; bj < 2; ++bj) {
      for (int r = 0; r < 16; ++r) block[bi][bj][r] = _mm512_loadu_ps(tile + (16 * bi + r) * 32 + 16 * bj);
      transpose_16x16(block[bi][bj]);
    }
  for (int bi = 0; bi < 2; ++bi)
    for (int bj = 0; bj < 2; ++bj)
      for (int r = 0; r < 16; ++r) _mm512_storeu_ps(tile + (16 * bj + r) * 32 + 16 * bi, block[bi][bj][r]);
}

// dst (rows x cols, bfloat16) = src (float32) rounded to nearest even.
// Full rows of 32 go through vcvtne2ps2bf16, two vectors of float32 into one of bfloat16 and
// one 64-byte store, half the instructions of one conversion per 16 (language-model shapes
// of K = 128, where a tile's rounding is a fifth of the call, 0.82x -> 0.85x and 1.34x ->
// 1.46x torch on Emerald Rapids); the rest 16 at a time, masked.
void round_to_bf16(const float* src, int64_t lds, uint16_t* dst, int64_t ldd, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = src + r * lds;
    uint16_t* out = dst + r * ldd;
    int64_t j = 0;
    for (; j + 32 <= cols; j += 32) {
      const __m512 low = _mm512_loadu_ps(in + j), high = _mm512_loadu_ps(in + j + 16);
      _mm512_storeu_si512(out + j, (__m512i)_mm512_cvtne2ps_pbh(high, low));
    }
    for (; j < cols; j += 16) {
      const int64_t n = std::min<int64_t>(16, cols - j);
      const __mmask16 mask = n == 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1);
      const __m256bh rounded = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, in + j));
      _mm256_mask_storeu_epi16(out + j, mask, (__m256i)rounded);
    }
  }
}

}  // namespace

Bf16Kernel bf16_kernel_avx512bf16() {
  return {"avx512bf16", 12, 32, 2, false, &pack_grouped<2>, &pack_grouped<2>, &dpbf16_kernel_12x32,
          &dpbf16_kernel_12x32_a_in_place, &dpbf16_kernel_12x32_rounded, &round_to_bf16, nullptr, nullptr, nullptr,
          &dpbf16_dot_4x4, 4, 4};
}

Bf16Kernel bf16_kernel_amx() {
  return {"amx", 32, 32, kSteps, true, &pack_grouped<kRows>, &pack_grouped<2>, &amx_kernel_32x32, nullptr,
          nullptr, &round_to_bf16, &amx_begin, &amx_end, &transpose_tile_32x32, nullptr, 0, 0};
}

}  // namespace pylibnn::cpu
