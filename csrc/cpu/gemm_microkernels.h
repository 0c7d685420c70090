// Register-blocked GEMM micro-kernels, one set per instruction set.
//
// Broadcast kernel: one MR x NR tile of C from MR rows of A and kc rows of B:
//   c[i * ldc + j] = (accumulate ? c[i * ldc + j] : 0) + sum_p a[p * lda + i] * b[p * ldb + j]
//                    + (bias ? bias[j] : 0)                  for i < MR, j < NR, p < kc
// a is either a packed panel (lda = MR: MR values per k step, zero-padded by the packer, so
// the kernel never sees a partial tile) or A itself when it is contiguous across rows and
// MR rows exist (lda = its stride along k); run_a_rows reads a row-major A in place instead,
// a[i * lda + p], and short_run computes fewer rows from a packed panel. b is either a packed
// kc x NR panel (ldb = NR) or B itself when its rows are contiguous (ldb = its row stride)
// and NR columns exist.
//
// Dot kernel, for thin products whose operands are both contiguous along k (the forward
// x @ W^T with few rows of x): one rows x cols tile (rows <= MR, cols <= NR) of
//   c[i * ldc + j] = (accumulate ? c[i * ldc + j] : 0) + sum_p a[i * lda + p] * b[j * ldb + p]
//                    + (bias ? bias[j] : 0)
// read straight from the operands, vectorized along k, with no packing at all.
//
// Each set lives in its own translation unit compiled with its own -m flags
// (gemm_microkernel_{avx512,avx2,portable}.cpp). This header is the only one they share
// with the rest of the library, and it holds no inline code, so no function compiled with
// AVX-512 can be picked by the linker for a caller on a CPU without it.
#pragma once

#include <cstdint>

#include "activation.h"

namespace pylibnn::cpu {

template <typename T>
using MicroKernelFn = void (*)(int64_t kc, const T* a, int64_t lda, const T* b, int64_t ldb, T* c, int64_t ldc,
                               bool accumulate, const T* bias);

// C(q, r) = [C(q, r) +] tile(r, q) [+ bias(r)] for r < rows (<= MR), q < cols (<= NR): a tile
// of C^T (the transposed path's rows of W x rows of x) stored into C, whose row q takes the
// tile's column q.
template <typename T>
using StoreTransposedFn = void (*)(const T* tile, int64_t ld_tile, int64_t rows, int64_t cols, T* c, int64_t ldc,
                                   bool accumulate, const T* bias);

template <typename T>
struct MicroKernel {
  int64_t mr;  // rows of the C tile (broadcast from A)
  int64_t nr;  // columns of the C tile (vector lanes of B)
  MicroKernelFn<T> run;
  // The same kernel for fewer rows (short_rows[s] < mr, ascending, 0 where there is none),
  // for the last panel of M % MR rows: it reads the same packed panels (lda = MR) and skips
  // the padded rows' FMAs. Without it a 64-row product ran a 12-row kernel 6 times, 72 rows
  // of FMAs for 64.
  int64_t short_rows[2] = {0, 0};
  MicroKernelFn<T> short_run[2] = {nullptr, nullptr};
  // The full kernel reading MR rows of a row-major A in place, A(i, p) = a[i * lda + p]:
  // small products (the forward's x, grad_input's grad_output) then pack only B.
  MicroKernelFn<T> run_a_rows = nullptr;
  // The transposed path's store of a finished tile of C^T (lanes x lanes in-register
  // transposes on the SIMD sets).
  StoreTransposedFn<T> store_transposed = nullptr;
};

template <typename T>
using DotKernelFn = void (*)(int64_t kc, const T* a, int64_t lda, const T* b, int64_t ldb, T* c, int64_t ldc,
                             int64_t rows, int64_t cols, bool accumulate, const T* bias);

template <typename T>
struct DotKernel {
  int64_t mr;  // rows of A (and C) per tile
  int64_t nr;  // rows of B^T (columns of C) per tile
  DotKernelFn<T> run;
};

// Packing kernel: `width` lines of a strided operand, interleaved along depth, lines past
// `lines` zeroed (lines <= width <= 64):
//   out[p * width + i] = i < lines ? src[i * line_stride + p * depth_stride] : 0     p < depth
// An A panel is MR rows (line = row of A, depth = k); a B panel is NR columns (line = column
// of B, depth = k). Lines contiguous along depth (depth_stride == 1: x and W in the forward)
// go through L x L in-register transposes; depth steps contiguous across lines
// (line_stride == 1: the backward's operands) through masked vector copies; anything else
// element by element.
template <typename T>
using PackFn = void (*)(const T* src, int64_t line_stride, int64_t depth_stride, int64_t lines, int64_t depth,
                        int64_t width, T* out);

// Widening packing kernel: PackFn's layout, from bfloat16 or float16 bits (uint16_t) to
// float32, so reduced-precision operands are converted while they are packed and no
// whole-tensor float32 copy exists.
using PackWidenFn = void (*)(const uint16_t* src, int64_t line_stride, int64_t depth_stride, int64_t lines,
                             int64_t depth, int64_t width, float* out);

// Row-streaming kernel, for thin products whose B rows are contiguous (b[p * ldb + j]):
//   c[i * ldc + j] = (bias ? bias[j] : 0) + sum_p a[i * a_row_stride + p * a_col_stride] * b[p * ldb + j]
//                                                     i < rows (<= 4), j < cols, p < depth
// k runs outermost in steps of 8, and each step streams whole rows of B past the rows of C
// (which stay in L1 when the caller keeps cols to a few KiB): the outer product of a
// depth-1..8 grad_weight writes C exactly once, and the GEMV of a 1..4-row grad_input reads W
// once, row by row, instead of in NR-column strips. (Steps of 4 wrote an 8-deep outer
// product twice: the 8 x 4096 -> 4096 float32 fwd+bwd took 34.7 ms, with steps of 8 29.5.)
// write_once: the last k step's whole-vector stores of C are non-temporal (they bypass the
// caches, so no line of C is read for ownership first), for a C far larger than the caches;
// the caller passes it only with c and ldc 64-byte aligned and no epilogue reading C back.
template <typename T>
using StreamKernelFn = void (*)(int64_t depth, const T* a, int64_t a_row_stride, int64_t a_col_stride, int64_t rows,
                                const T* b, int64_t ldb, int64_t cols, T* c, int64_t ldc, const T* bias,
                                bool write_once);

// The same with bfloat16 or float16 bits (uint16_t) for B, widened as they are loaded, and
// float32 A, C and bias: the thin paths of gemm_widened.
using StreamWidenKernelFn = void (*)(int64_t depth, const float* a, int64_t a_row_stride, int64_t a_col_stride,
                                     int64_t rows, const uint16_t* b, int64_t ldb, int64_t cols, float* c,
                                     int64_t ldc, const float* bias);

// Panel kernel, for the fused MLP (mlp_cpu.cpp): one MR x (nv * lanes) tile of
//   c[i * ldc + j] = (accumulate ? c[i * ldc + j] : 0) + sum_p a[i * a_row_stride + p * a_col_stride] * b[p * ldb + j]
//                    + (bias ? bias[j] : 0)                  for i < MR, j < nv * lanes, p < depth
// with A read in place through both strides (an activation tile, or its transpose for a
// weight gradient) and B rows of whole vectors (padded weights or activation tiles).
// When y is given, the tile also gets the activation epilogue, from registers:
//   y[i * ldy + j] = act(c[i * ldc + j])
// run[nv - 1] computes nv vectors of columns, nv = 1 .. max_vectors.
template <typename T>
using PanelKernelFn = void (*)(int64_t depth, const T* a, int64_t a_row_stride, int64_t a_col_stride, const T* b,
                               int64_t ldb, T* c, int64_t ldc, bool accumulate, const T* bias, Activation act, T* y,
                               int64_t ldy);

template <typename T>
struct PanelKernels {
  int64_t mr;
  int64_t lanes;
  int64_t max_vectors;
  PanelKernelFn<T> run[4];
};

// Activation kernels over a rows x cols block (the GEMM epilogues and the fused backward):
//   activate:  y[i * ldy + j] = act(z[i * ldz + j])                         (y may be z)
//   gradient:  out[i * ldo + j] = grad[i * ldg + j] * act'(z, y)(i, j)      (out may be grad;
//              y == nullptr recomputes it from z where act' needs it)
template <typename T>
struct ActivationKernels {
  void (*activate)(Activation act, const T* z, int64_t ldz, T* y, int64_t ldy, int64_t rows, int64_t cols);
  void (*gradient)(Activation act, const T* grad, int64_t ldg, const T* z, int64_t ldz, const T* y, int64_t ldy,
                   T* out, int64_t ldo, int64_t rows, int64_t cols);
};

// Reduced-precision dot kernel: c (rows x cols float32, leading dimension ldc; at most the
// kernel's rows x cols) = A B^T over depth k steps, A (rows at a + i * lda) and B^T (rows at
// b + j * ldb) bfloat16 or float16 bits contiguous along k, read in place: the thin forward
// of gemm_widened (Bf16Kernel::dot natively, WidenedDotKernel by widening to float32 as loaded).
using Bf16DotKernelFn = void (*)(int64_t depth, const uint16_t* a, int64_t lda, int64_t rows, const uint16_t* b,
                                 int64_t ldb, int64_t cols, float* c, int64_t ldc);

struct WidenedDotKernel {
  int64_t rows;  // rows of A (and C) per tile
  int64_t cols;  // rows of B^T (columns of C) per tile
  Bf16DotKernelFn run;  // nullptr: no such kernel in the set (portable): the blocked path
};

struct MicroKernelSet {
  const char* isa;
  MicroKernel<float> f32;
  MicroKernel<double> f64;
  DotKernel<float> dot_f32;       // several rows of A per tile
  DotKernel<double> dot_f64;
  DotKernel<float> dot_row_f32;   // one row of A per tile, for M < dot.mr (e.g. a single input)
  DotKernel<double> dot_row_f64;
  PanelKernels<float> panel_f32;
  PanelKernels<double> panel_f64;
  ActivationKernels<float> activation_f32;
  ActivationKernels<double> activation_f64;
  PackFn<float> pack_f32;
  PackFn<double> pack_f64;
  StreamKernelFn<float> stream_f32;
  StreamKernelFn<double> stream_f64;
  PackWidenFn pack_bf16_f32;
  PackWidenFn pack_f16_f32;
  StreamWidenKernelFn stream_bf16_f32;
  StreamWidenKernelFn stream_f16_f32;
  WidenedDotKernel dot_bf16_f32;
  WidenedDotKernel dot_f16_f32;
};

// Native bfloat16 kernels (gemm_bf16_avx512bf16.cpp), the blocked path of gemm_widened where
// the CPU has them (cpu_isa.h, selected_bf16_kernel):
//   tile[i * NR + j] = (bias ? bias[j] : 0) + sum_p A(i, p) * B(p, j)     float32, i < MR, j < NR
// with bfloat16 products summed in float32, over p < packed_depth (K rounded up to the
// kernel's depth_step; the packers zero the steps past K). B panels hold pairs of
// consecutive depth steps per column, the layout vdpbf16ps and AMX read:
//   out[(p / 2) * width * 2 + i * 2 + p % 2] = (i < lines && p < depth) ? src[i * line_stride + p * depth_stride] : 0
// for p < packed_depth, i < width (NR). A panels (width MR) are pairs too, or, for a_rows
// kernels (AMX), rows: line i at out[i * (packed_depth + kBf16RowPadding) + p]. An a_rows
// kernel reads a_panel[i * lda + p]: a packed panel (lda = packed_depth + kBf16RowPadding), or
// A itself where its rows are contiguous along k and K == packed_depth (lda = row stride).
using PackGroupedFn = void (*)(const uint16_t* src, int64_t line_stride, int64_t depth_stride, int64_t lines,
                               int64_t depth, int64_t packed_depth, int64_t width, uint16_t* out);
using Bf16MicroKernelFn = void (*)(int64_t packed_depth, const uint16_t* a_panel, int64_t lda,
                                   const uint16_t* b_panel, float* tile, const float* bias);
// A pairs kernel (not a_rows) reading A in place instead of a packed panel: row i of the
// tile at a[i * lda + p], its k steps contiguous (K == packed_depth), rows < MR of them
// (the others are computed from the last row and left out).
using Bf16InPlaceMicroKernelFn = void (*)(int64_t packed_depth, const uint16_t* a, int64_t lda, int64_t rows,
                                          const uint16_t* b_panel, float* tile, const float* bias);
// The same product with its epilogue in registers: dst (rows x cols of the tile, bfloat16
// bits, leading dimension ldd) = round(A @ B_panel + bias), for tiles with no activation and
// no preactivation output; A a packed panel, or A in place as above.
using Bf16RoundedMicroKernelFn = void (*)(int64_t packed_depth, const uint16_t* a, int64_t lda, bool a_in_place,
                                          const uint16_t* b_panel, const float* bias, uint16_t* dst, int64_t ldd,
                                          int64_t rows, int64_t cols);
// dst (rows x cols, bfloat16 bits) = src (float32) rounded to nearest even.
using RoundToBf16Fn = void (*)(const float* src, int64_t lds, uint16_t* dst, int64_t ldd, int64_t rows,
                               int64_t cols);

// Padding of packed A rows: rows a multiple of 4 KiB apart would all fall in one L1 set.
constexpr int64_t kBf16RowPadding = 32;

struct Bf16Kernel {
  const char* name;    // "avx512bf16" (vdpbf16ps) or "amx"
  int64_t mr;
  int64_t nr;
  int64_t depth_step;  // packed_depth = depth rounded up to this
  bool a_rows;         // A panels are rows (and A can be read in place), not pairs
  PackGroupedFn pack_a;
  PackGroupedFn pack_b;
  Bf16MicroKernelFn run;
  Bf16InPlaceMicroKernelFn run_a_in_place;  // nullptr: A in place only through run (a_rows)
  Bf16RoundedMicroKernelFn run_rounded;      // nullptr: run, then round_to_bf16
  RoundToBf16Fn round_to_bf16;
  // Called on a thread before its first and after its last run of one task (AMX: load and
  // release the tile configuration); nullptr when not needed.
  void (*begin)();
  void (*end)();
  // An MR x NR float32 tile transposed in place (MR == NR), for the swapped product
  // C^T = B^T A^T (gemm_engine.cpp); nullptr when the kernel has none.
  void (*transpose_tile)(float* tile);
  // The dot path's kernel and its tile. nullptr for AMX: there the thin forward runs the
  // swapped product with W in place (gemm_engine.cpp, measured on Emerald Rapids), and this
  // kernel has not been measured against it.
  Bf16DotKernelFn dot;
  int64_t dot_rows;
  int64_t dot_cols;
};

Bf16Kernel bf16_kernel_avx512bf16();  // defined only when PYLIBNN_HAVE_AVX512BF16
Bf16Kernel bf16_kernel_amx();         // likewise; runs only where the OS granted AMX tile state

MicroKernelSet microkernels_portable();
MicroKernelSet microkernels_avx2();    // defined only when PYLIBNN_HAVE_AVX2
MicroKernelSet microkernels_avx512();  // defined only when PYLIBNN_HAVE_AVX512

}  // namespace pylibnn::cpu
