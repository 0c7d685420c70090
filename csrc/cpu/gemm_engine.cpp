// CPU GEMM engine: C (M, N) = A (M, K) @ B (K, N) [+ bias], optional row sums of A.
//
// gemm() picks one path per call, by these rules in this order (the thresholds come from the
// CPU's tuning profile, cpu_profile.h):
//   direct   M*N*K <= direct_max_madds (the tutorial's layers): the reference loop, no
//            packing, no threads
//   outer    K <= stream_max_depth and B's rows contiguous (grad_weight = dy^T x for a batch
//            of 1..4): each row of C is sum_p A(i, p) B(p, :) streamed in one pass, with the
//            row sums of A (grad_bias) from the same pass; C written once, by non-temporal
//            stores when it is at least write_once_min_bytes
//   gemv     M <= gemv_max_rows and B's rows contiguous (grad_input = dy W for 1..4 rows):
//            W read once, row by row, into column blocks of C kept in L1
//   transposed  A's rows and B's columns contiguous along k (the forward x W^T),
//            M <= transposed_max_rows (float32; float64 half) with x's NR-row panels at
//            least 7/8 full, K >= transposed_min_depth, more than small_max_madds
//            multiply-adds: C^T = W x^T by the broadcast kernel with the roles swapped, W's
//            rows read in place and x packed (gemm_transposed)
//   dot      the same operands, M <= dot_max_rows (float32 rows:
//            half as many float64 ones, whose A slice takes twice the cache) and
//            K >= dot_min_depth, or M <= dot_thin_rows at any K (the forward x W^T for a thin
//            batch, where MR-row tiles would compute mostly padding): dot products straight
//            from the operands, vectorized along k; threads split the columns of C
//   blocked  everything else, below.
//
// Blocked strategy (GotoBLAS / BLIS): three cache-blocking loops around a register-blocked
// micro-kernel.
//   for jc over N in steps of nc        B block (kc x nc) lives in L3
//     for pc over K in steps of kc      pack B[pc:+kc, jc:+nc] into NR-wide panels (all threads)
//       tasks = (row blocks of A) x (chunks of the B panels), picked up by the threads one at
//       a time (an atomic counter), so a thread that another process holds up for a while
//       does not stall the rest
//         pack A[rows, pc:+kc] into MR-tall panels (per task, kept in L2)
//         for each B panel in the chunk, for each A panel: micro-kernel on an MR x NR tile of C
// Row blocks are whole MR-panels split evenly (their heights differ by at most one panel):
// rounding a block height up to MR after choosing the block count left one thread 288 rows
// of 512 and the other 224.
// Packing (the ISA's pack kernel: in-register transposes where the operand is contiguous
// along k, vector copies where it is contiguous across the panel) reads A and B through
// their strides (transposed, sliced and stride-0 views alike) and zero-fills the panels past
// the matrix edge, so the micro-kernel only ever computes full tiles; edge tiles of C are
// computed into a small buffer and copied out. The last panel of M % MR rows runs a kernel
// of fewer rows where the ISA has one (MicroKernel::short_run: 4 or 8 of 12 on AVX-512).
// Up to single_block_rows rows of A are a single row block. B is then not packed where its
// rows are contiguous (and not 4 KiB-aliased): the micro-kernel reads it in place; else each
// B panel is packed by the task that uses it, just before its tiles (private panels).
// A contiguous across rows (grad_output^T), or row-major (x, grad_output: by
// MicroKernel::run_a_rows, unless its rows are 4 KiB-aliased), is read in place when C is at
// most a_in_place_max_panels panels wide: each packed copy would serve too few B panels.
// Small products (M*N*K <= small_max_madds, one kc and one nc block) run in one thread
// region: each task packs its own share of B beside its A block, instead of a region for
// packing B followed by one for the tiles; their row-major A is read in place at any width.
// The copying packs take kPackSteps k steps of every panel at a time (pack_a_block,
// pack_b_panels).
// The bias is added by the micro-kernel when the last kc block is stored (fused epilogue);
// the activation epilogue (linear_act_forward) follows on the same tile, still in L1.
// Row sums of A (grad_bias while packing grad_output^T for grad_weight) are taken from the
// packed A panels in the first jc pass, by the one task that owns those rows in each pass:
// every row is summed in the same order on every run, whatever the thread count.
// Packing memory is per-thread, persistent and grow-only (gemm_scratch.h): no page faults
// in steady state.
#include "cpu/gemm.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>
#include <type_traits>

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include "cpu/cpu_isa.h"
#include "cpu/cpu_profile.h"
#include "cpu/gemm_scratch.h"

namespace pylibnn::cpu {
namespace {

constexpr int64_t kMaxTileElements = 1024;  // largest MR x NR of any micro-kernel (AMX: 32 x 32)
constexpr int64_t kMaxPanelRows = 64;       // largest MR of any micro-kernel (per-panel buffers)
constexpr int64_t kCacheLine = 64;

// M * N * K, saturated: with stride-0 operands the sizes are not bounded by memory, and a
// wrapped (negative) product would send a huge product down the direct path.
int64_t multiply_adds(int64_t M, int64_t N, int64_t K) {
  int64_t mn = 0, mnk = 0;
  if (__builtin_mul_overflow(M, N, &mn) || __builtin_mul_overflow(mn, K, &mnk)) {
    return std::numeric_limits<int64_t>::max();
  }
  return mnk;
}

// The members of a kernel set for one scalar type.
template <typename T>
struct Kernels {
  MicroKernel<T> broadcast;
  DotKernel<T> dot;
  DotKernel<T> dot_row;
  PackFn<T> pack;
  StreamKernelFn<T> stream;
};

template <typename T>
Kernels<T> kernels_of(const MicroKernelSet& set) {
  if constexpr (std::is_same_v<T, float>) return {set.f32, set.dot_f32, set.dot_row_f32, set.pack_f32, set.stream_f32};
  else return {set.f64, set.dot_f64, set.dot_row_f64, set.pack_f64, set.stream_f64};
}

struct Blocking {
  int64_t kc;  // depth of one packed block
  int64_t mc;  // rows of A per task (multiple of MR)
  int64_t nc;  // columns of B per packed block (multiple of NR)
  int64_t single_block_rows;  // M up to which all rows are one block
};

// The profile's blocking (float32 element counts) for this kernel and scalar type: kc and nc
// as given, mc and single_block_rows scaled so that the A block keeps its bytes.
template <typename T>
Blocking blocking_for(const MicroKernel<T>& kernel, const CpuProfile& profile) {
  const int64_t kc = std::max<int64_t>(8, profile.kc / 8 * 8);
  const int64_t mc_rows = std::max<int64_t>(1, profile.mc * 4 / static_cast<int64_t>(sizeof(T)));
  const int64_t mc = std::max<int64_t>(1, mc_rows / kernel.mr) * kernel.mr;
  const int64_t nc = std::max<int64_t>(1, profile.nc / kernel.nr) * kernel.nr;
  const int64_t single_block_rows = profile.single_block_rows * 4 / static_cast<int64_t>(sizeof(T));
  return {kc, mc, nc, single_block_rows};
}

// Where an operand is contiguous across its panels (the copying pack: grad_output^T as A in
// grad_weight, a row-major B) each panel takes a short piece of every one of kc rows that lie
// far apart (4 KiB for 1024 float32 columns). Packed panel after panel, every row's lines and
// page come back once per panel; packed kPackSteps steps of every panel at a time, a row's
// lines are used up while in L1 and its page stays in the TLB. grad_weight 1024^3 float32
// (Emerald Rapids, perf): packing 13.1% -> 7.4% of the call; 1.02-1.04x faster from 1024^3
// to 4096 x 1024 -> 4096 (21 interleaved rounds), neutral elsewhere. The transposing pack
// reads whole lines already and keeps panel order.
constexpr int64_t kPackSteps = 16;

// Packs rows [0, rows) of A[row0:, pc:pc+kc] into MR-row panels, panel[p * MR + i], rows past
// `rows` zeroed. When row_sums is given, adds each packed row's sum over this kc block to
// row_sums[i] (k in order, so every run sums alike).
template <typename T>
void pack_a_block(const Kernels<T>& k, const MatrixView<T>& a, int64_t row0, int64_t rows, int64_t pc, int64_t kc,
                  int64_t mr, T* packed, T* row_sums) {
  const int64_t steps = a.row_stride == 1 ? kPackSteps : kc;
  for (int64_t p0 = 0; p0 < kc; p0 += steps)
    for (int64_t i0 = 0; i0 < rows; i0 += mr)
      k.pack(&a(row0 + i0, pc + p0), a.row_stride, a.col_stride, std::min(mr, rows - i0), std::min(steps, kc - p0),
             mr, packed + i0 * kc + p0 * mr);
  if (!row_sums) return;
  for (int64_t i0 = 0; i0 < rows; i0 += mr) {
    const int64_t n = std::min(mr, rows - i0);
    const T* panel = packed + i0 * kc;
    T sums[64] = {};
    for (int64_t p = 0; p < kc; ++p)
      for (int64_t i = 0; i < n; ++i) sums[i] += panel[p * mr + i];
    for (int64_t i = 0; i < n; ++i) row_sums[i0 + i] += sums[i];
  }
}

// Packs one NR-column panel of B: panel[p * NR + j] = B(pc + p, j0 + j), columns past N zeroed.
template <typename T>
void pack_b_panel(const Kernels<T>& k, const MatrixView<T>& b, int64_t pc, int64_t kc, int64_t j0, int64_t nr,
                  T* panel) {
  k.pack(&b(pc, j0), b.col_stride, b.row_stride, std::min(nr, b.cols - j0), kc, nr, panel);
}

// Packs `panels` consecutive NR-column panels of B from column j0 on, panel q at
// packed + q * kc * NR; kPackSteps steps at a time where B's rows are contiguous (above).
template <typename T>
void pack_b_panels(const Kernels<T>& k, const MatrixView<T>& b, int64_t pc, int64_t kc, int64_t j0, int64_t panels,
                   int64_t nr, T* packed) {
  const int64_t steps = b.col_stride == 1 ? kPackSteps : kc;
  for (int64_t p0 = 0; p0 < kc; p0 += steps)
    for (int64_t q = 0; q < panels; ++q)
      pack_b_panel(k, b, pc + p0, std::min(steps, kc - p0), j0 + q * nr, nr, packed + q * nr * kc + p0 * nr);
}

template <typename T>
bool has_epilogue(const GemmArgs<T>& args) {
  return args.preactivation != nullptr || args.activation != Activation::None;
}

// C = bias (or 0) on every row: the whole product when K == 0.
template <typename T>
void fill_with_bias(const GemmArgs<T>& args, int64_t M, int64_t N) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) args.c[i * args.ldc + j] = args.bias ? args.bias[j * args.bias_stride] : T(0);
}

// The bias, contiguous and padded to whole tiles of `multiple` columns, so that full-width
// vector loads in the micro-kernels never read past its end. Lives in the calling thread's
// scratch.
template <typename T>
const T* padded_bias(const GemmArgs<T>& args, int64_t N, int64_t multiple) {
  if (!args.bias) return nullptr;
  const int64_t padded = round_up(N, multiple);
  T* data = scratch_for<T>(ScratchSlot::Bias, padded);
  for (int64_t j = 0; j < N; ++j) data[j] = args.bias[j * args.bias_stride];
  std::fill(data + N, data + padded, T(0));
  return data;
}

// Runs task(t) for t in [0, tasks) on the threads, each thread taking the next task when it
// finishes one. Which thread runs a task does not change what the task computes.
template <typename Fn>
void run_tasks(int64_t tasks, bool parallel, const Fn& task) {
  if (!parallel || tasks <= 1) {
    for (int64_t t = 0; t < tasks; ++t) task(t);
    return;
  }
  std::atomic<int64_t> next{0};
  const int64_t workers = std::min<int64_t>(tasks, at::get_num_threads());
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    for (int64_t t = next.fetch_add(1); t < tasks; t = next.fetch_add(1)) task(t);
  });
}

// Thin products with both operands contiguous along k (the forward x @ W^T for a few rows
// of x): dot products straight from the operands. Packing W would cost as much as the
// arithmetic when so few rows of x reuse each of its elements.
template <typename T>
void gemm_dot(const GemmArgs<T>& args, const DotKernel<T>& kernel, const CpuProfile& profile) {
  const MatrixView<T>& a = args.a;
  const MatrixView<T>& b = args.b;
  const int64_t M = a.rows, K = a.cols, N = b.cols;
  const int64_t mr = kernel.mr, nr = kernel.nr;
  // An nr x kc tile of B^T (16 KiB) stays in L1 while every row of A passes over it. A
  // single row reuses nothing: all of K at once, each of the nr rows of W read in one run and
  // each dot product summed horizontally once (1 x 4096 -> 4096 float64 on Emerald Rapids,
  // against torch: 0.91x / 0.95x -> 0.97x / 0.99x; float32 unchanged, memory-bound either way).
  const int64_t kc = M == 1 ? K : (16 * 1024) / (nr * static_cast<int64_t>(sizeof(T)));
  const T* bias = padded_bias(args, N, nr);
  const int64_t n_tiles = ceil_div(N, nr);
  const bool parallel = multiply_adds(M, N, K) >= profile.parallel_min_madds;
  const bool epilogue = has_epilogue(args);

  at::parallel_for(0, n_tiles, parallel ? 1 : n_tiles, [&](int64_t begin, int64_t end) {
    for (int64_t jt = begin; jt < end; ++jt) {
      const int64_t j = jt * nr;
      const int64_t cols = std::min(nr, N - j);
      for (int64_t pc = 0; pc < K; pc += kc) {
        const int64_t depth = std::min(kc, K - pc);
        const T* tile_bias = (bias && pc + depth == K) ? bias + j : nullptr;
        for (int64_t i = 0; i < M; i += mr) {
          kernel.run(depth, &a(i, pc), a.row_stride, &b(pc, j), b.col_stride, args.c + i * args.ldc + j, args.ldc,
                     std::min(mr, M - i), cols, pc > 0, tile_bias);
          if (epilogue && pc + depth == K) gemm_epilogue(args, i, j, std::min(mr, M - i), cols);
        }
      }
    }
  });
}

// Row sums of A for rows [i, i + rows), k in order.
template <typename T>
void direct_row_sums(const MatrixView<T>& a, int64_t i, int64_t rows, T* out) {
  for (int64_t r = 0; r < rows; ++r) {
    T sum = 0;
    for (int64_t p = 0; p < a.cols; ++p) sum += a(i + r, p);
    out[i + r] = sum;
  }
}

// The outer path: K <= stream_max_depth, B's rows contiguous. Groups of 4 rows of C, each
// computed whole (all N columns) in one pass over B (K x N, in cache), split over the threads.
template <typename T>
void gemm_outer(const GemmArgs<T>& args, const Kernels<T>& k, const CpuProfile& profile) {
  const MatrixView<T>& a = args.a;
  const MatrixView<T>& b = args.b;
  const int64_t M = a.rows, K = a.cols, N = b.cols;
  const T* bias = padded_bias(args, N, 1);
  const bool parallel = multiply_adds(M, N, std::max<int64_t>(K, 4)) >= profile.parallel_min_madds;
  const bool epilogue = has_epilogue(args);
  const int64_t groups = ceil_div(M, 4);
  // C written by non-temporal stores from write_once_min_bytes on, where nothing here reads
  // it back: a store that misses first reads its line for ownership, so a 64 MiB
  // grad_weight otherwise cost 128 MiB of memory traffic.
  const bool write_once = !epilogue && M * N * static_cast<int64_t>(sizeof(T)) >= profile.write_once_min_bytes &&
                          reinterpret_cast<uintptr_t>(args.c) % 64 == 0 &&
                          (args.ldc * static_cast<int64_t>(sizeof(T))) % 64 == 0;
  // A chunk of at least 64 KiB of C per thread hand-off.
  const int64_t grain = parallel ? std::max<int64_t>(1, (16 * 1024) / std::max<int64_t>(4 * N, 1)) : groups;
  at::parallel_for(0, groups, grain, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g) {
      const int64_t i = g * 4, rows = std::min<int64_t>(4, M - i);
      k.stream(K, &a(i, 0), a.row_stride, a.col_stride, rows, b.data, b.row_stride, N, args.c + i * args.ldc,
               args.ldc, bias, write_once);
      if (args.a_row_sums) direct_row_sums(a, i, rows, args.a_row_sums);
      if (epilogue) gemm_epilogue(args, i, 0, rows, N);
    }
  });
}

// The gemv path: M <= gemv_max_rows (<= 4), B's rows contiguous. Column blocks of C (a few
// KiB per row, in L1) split over the threads; each reads its strip of every row of B once.
template <typename T>
void gemm_gemv(const GemmArgs<T>& args, const Kernels<T>& k, const CpuProfile& profile) {
  const MatrixView<T>& a = args.a;
  const MatrixView<T>& b = args.b;
  const int64_t M = a.rows, K = a.cols, N = b.cols;
  const T* bias = padded_bias(args, N, 1);
  const bool parallel = multiply_adds(M, N, K) >= profile.parallel_min_madds;
  const bool epilogue = has_epilogue(args);
  const int64_t block = std::max<int64_t>(64, profile.gemv_cols / 64 * 64);
  const int64_t blocks = ceil_div(N, block);
  at::parallel_for(0, blocks, parallel ? 1 : blocks, [&](int64_t begin, int64_t end) {
    for (int64_t jb = begin; jb < end; ++jb) {
      const int64_t j = jb * block, cols = std::min(block, N - j);
      k.stream(K, a.data, a.row_stride, a.col_stride, M, &b(0, j), b.row_stride, cols, args.c + j, args.ldc,
               bias ? bias + j : nullptr, false);
      if (epilogue) gemm_epilogue(args, 0, j, M, cols);
    }
  });
  if (args.a_row_sums) direct_row_sums(a, 0, M, args.a_row_sums);
}

// The kernel that computes a panel of `rows` (<= MR) rows read from a packed panel: the
// shortest of MicroKernel::short_run that covers them, else the full one.
template <typename T>
MicroKernelFn<T> covering_kernel(const MicroKernel<T>& kernel, int64_t rows, int64_t& kernel_rows) {
  kernel_rows = kernel.mr;
  for (int s = 0; s < 2 && rows < kernel.mr; ++s) {
    if (kernel.short_rows[s] >= rows && kernel.short_rows[s] < kernel_rows) {
      kernel_rows = kernel.short_rows[s];
      return kernel.short_run[s];
    }
  }
  return kernel.run;
}

// The transposed path: C = A B for a thin A (x, M rows) and B = W^T, both contiguous along k
// (the forward x W^T for a batch of a few dozen rows). It computes C^T = W x^T instead: W's
// rows are the micro-kernel's broadcast operand, MR of them read in place per tile
// (MicroKernel::run_a_rows), and x is packed into NR-wide panels along k, once per call.
// W, the large operand, is read once and never packed; in the blocked path packing it cost
// about as much as the arithmetic, with so few rows of x reusing each of its elements
// (Emerald Rapids, one thread, 64 x 4096 -> 4096 float32 against torch: 1.00x blocked,
// 1.02x dot, 1.35x transposed).
//   for p0 over K in super blocks        pack x[:, p0:+depth] (up to 4 MiB: all of K for
//                                         M x K up to 128 x 8192 float32)
//     tasks = chunks of MR-row panels of W (up to 16), picked up by the threads one at a time
//       for pc over the super block in steps of kc: for each W panel: for each x panel:
//         micro-kernel into the MR x NR tile of C^T of (W panel, x panel), kept across pc
//       the chunk's tiles stored transposed into C (MicroKernel::store_transposed: in-register
//       transposes; added to C after the first super block)
// Per kc step a task's W slices (MR x kc) stream from memory once and its x slices stay in
// L2; each W slice is reused from L1 by every x panel.
// A partial last W panel is packed, one kc slice at a time, and runs the shortest kernel
// that covers it.
template <typename T>
void gemm_transposed(const GemmArgs<T>& args, const Kernels<T>& k, const CpuProfile& profile) {
  // C^T = W x^T: W (N x K, rows contiguous along k) is the broadcast operand, x^T (K x M)
  // the packed one.
  const MatrixView<T> w = args.b.transposed();
  const MatrixView<T> x_t = args.a.transposed();
  const MicroKernel<T>& kernel = k.broadcast;
  const int64_t M = x_t.cols, K = w.cols, N = w.rows;
  const int64_t mr = kernel.mr, nr = kernel.nr;
  const Blocking blk = blocking_for(kernel, profile);
  const int64_t x_panels = ceil_div(M, nr);
  const int64_t w_panels = ceil_div(N, mr);
  const int64_t x_bytes_per_step = x_panels * nr * static_cast<int64_t>(sizeof(T));
  const int64_t super_depth = std::min(K, std::max<int64_t>(1, (4 << 20) / x_bytes_per_step / blk.kc) * blk.kc);
  const bool parallel = multiply_adds(M, N, K) >= profile.parallel_min_madds;
  const int64_t threads = parallel ? at::get_num_threads() : 1;
  const bool epilogue = has_epilogue(args);
  const T* bias = args.bias ? padded_bias(args, N, 1) : nullptr;
  // Chunks of up to 16 W panels, whose slices of one kc step share each slice of x while it
  // is in L1 / L2 (64 x 4096 -> 4096 float32: 1.04x torch with one panel per chunk, 1.37x
  // with 16), with enough chunks for an even split. With a single x panel there is nothing
  // to share, and one W panel per chunk reads its rows in long runs instead of kc-long ones
  // (32 x 4096 -> 4096: 1.83x with one, 1.51x with 16).
  const int64_t panels_per_chunk = x_panels == 1 ? 1 : std::clamp<int64_t>(w_panels / (4 * threads), 1, 16);
  const int64_t chunks = ceil_div(w_panels, panels_per_chunk);
  T* packed_x = scratch_for<T>(ScratchSlot::PackedB, x_panels * nr * super_depth);

  for (int64_t p0 = 0; p0 < K; p0 += super_depth) {
    const int64_t depth = std::min(super_depth, K - p0);
    const bool last = p0 + depth == K;
    at::parallel_for(0, x_panels, parallel ? 1 : x_panels, [&](int64_t begin, int64_t end) {
      for (int64_t xp = begin; xp < end; ++xp) pack_b_panel(k, x_t, p0, depth, xp * nr, nr, packed_x + xp * nr * depth);
    });
    run_tasks(chunks, parallel, [&](int64_t chunk) {
      const int64_t jp_begin = chunk * panels_per_chunk;
      const int64_t jp_end = std::min(w_panels, jp_begin + panels_per_chunk);
      T* tiles = scratch_for<T>(ScratchSlot::PackedA, (jp_end - jp_begin) * x_panels * mr * nr);
      T* packed_w = scratch_for<T>(ScratchSlot::Edge, mr * blk.kc);
      for (int64_t pc = 0; pc < depth; pc += blk.kc) {
        const int64_t kc = std::min(blk.kc, depth - pc);
        for (int64_t jp = jp_begin; jp < jp_end; ++jp) {
          const int64_t j0 = jp * mr, rows = std::min(mr, N - j0);
          const T* w_panel = &w(j0, p0 + pc);
          int64_t lda = w.row_stride;
          MicroKernelFn<T> run = kernel.run_a_rows;
          if (rows < mr) {
            pack_a_block<T>(k, w, j0, rows, p0 + pc, kc, mr, packed_w, nullptr);
            int64_t kernel_rows = mr;
            run = covering_kernel(kernel, rows, kernel_rows);
            w_panel = packed_w;
            lda = mr;
          }
          T* panel_tiles = tiles + (jp - jp_begin) * x_panels * mr * nr;
          for (int64_t xp = 0; xp < x_panels; ++xp)
            run(kc, w_panel, lda, packed_x + (xp * depth + pc) * nr, nr, panel_tiles + xp * mr * nr, nr, pc > 0,
                nullptr);
        }
      }
      // Tile (r, q) of (W panel jp, x panel xp) is C(xp * NR + q, jp * MR + r).
      for (int64_t jp = jp_begin; jp < jp_end; ++jp) {
        const int64_t j0 = jp * mr, rows = std::min(mr, N - j0);
        for (int64_t xp = 0; xp < x_panels; ++xp)
          kernel.store_transposed(tiles + ((jp - jp_begin) * x_panels + xp) * mr * nr, nr, rows,
                                  std::min(nr, M - xp * nr), args.c + xp * nr * args.ldc + j0, args.ldc, p0 > 0,
                                  (last && bias) ? bias + j0 : nullptr);
      }
      if (epilogue && last) gemm_epilogue(args, 0, jp_begin * mr, M, std::min(N, jp_end * mr) - jp_begin * mr);
    });
  }
}

template <typename T>
void gemm_blocked(const GemmArgs<T>& args, const Kernels<T>& k, const CpuProfile& profile) {
  const MatrixView<T>& a = args.a;
  const MatrixView<T>& b = args.b;
  const MicroKernel<T>& kernel = k.broadcast;
  const int64_t M = a.rows, K = a.cols, N = b.cols;
  const int64_t mr = kernel.mr, nr = kernel.nr;
  TORCH_INTERNAL_ASSERT(mr * nr <= kMaxTileElements && mr <= kMaxPanelRows);
  const Blocking blk = blocking_for(kernel, profile);
  if (args.a_row_sums) std::fill(args.a_row_sums, args.a_row_sums + M, T(0));
  const T* bias = padded_bias(args, N, nr);

  const int64_t madds = multiply_adds(M, N, K);
  const bool parallel = madds >= profile.parallel_min_madds;
  const bool epilogue = has_epilogue(args);
  const int64_t threads = parallel ? at::get_num_threads() : 1;
  // One thread region for small products (one kc block, one nc block): each task packs its
  // own B panels.
  const bool small = K <= blk.kc && N <= blk.nc && madds <= profile.small_max_madds;

  // Row blocks: whole MR-panels, split evenly.
  const int64_t panels = ceil_div(M, mr);
  // Up to single_block_rows rows (float32; float64 half) all of M is one row block: each
  // B panel then serves every row while it is in cache, and is packed only by the task that
  // uses it (private panels, below).
  int64_t m_blocks = ceil_div(M, blk.mc);
  if (M <= blk.single_block_rows) m_blocks = 1;
  if (m_blocks > 1) m_blocks = round_up(m_blocks, threads);
  // A small product is split along the larger of M and N only: each task then packs the
  // smaller operand whole, and the larger one is packed once.
  if (small) m_blocks = M >= N ? threads : 1;
  m_blocks = std::clamp<int64_t>(m_blocks, 1, panels);
  const auto block_rows = [&](int64_t block, int64_t& row0, int64_t& rows) {
    const int64_t p0 = block * panels / m_blocks, p1 = (block + 1) * panels / m_blocks;
    row0 = p0 * mr;
    rows = std::min(M, p1 * mr) - row0;
  };
  const int64_t max_block_rows = ceil_div(panels, m_blocks) * mr;
  // With a single row block every element of B is used once per pass (by each A panel in
  // turn): packing it would cost as much as using it when there are few A panels. Where B's
  // rows are contiguous the micro-kernel reads B in place (only a partial last panel, fewer
  // than NR columns, is packed), unless several A panels reuse B and its rows lie a multiple
  // of 4 KiB apart: its kc rows of one panel then share a few cache sets and are evicted
  // before the next A panel comes (grad_input for W 4096 x 4096, M = 64: 0.88x torch in
  // place, 0.93x packed; M = 8, one A panel: 1.06x in place, 0.83x packed).
  const bool b_rows_alias = (b.row_stride * static_cast<int64_t>(sizeof(T))) % 4096 == 0;
  const bool b_in_place = m_blocks == 1 && b.col_stride == 1 && (panels == 1 || !b_rows_alias);
  // Where A is contiguous across rows (grad_output^T in grad_weight), its full MR-row panels
  // are read in place when few B panels would reuse a packed copy: packing costs about as
  // much per element as a few panels of arithmetic on it (the copy waits on lines of rows far
  // apart). Not for wider C: rows of A 4 KiB apart then share cache sets and thrash.
  const bool narrow_c = ceil_div(N, nr) <= profile.a_in_place_max_panels;
  const bool a_in_place = a.row_stride == 1 && narrow_c;
  // A row-major A (the forward's x, grad_input's grad_output) has its full MR-row panels
  // read in place too, by the kernel that broadcasts along rows, in a small product or where
  // C is at most a_in_place_max_panels panels wide. There packing is a large share of the
  // call (64^3 float64 forward, perf: 11.6% of the samples in the packing transposes, 36.4%
  // in the micro-kernel; grad_input of the 1024 x 128 -> 512 layer, float32: 14%), the
  // panels are used by every B panel while they are in L1, and a packed panel touches as many
  // lines per k step as the rows do. The transformer layers, float32, one thread: the forward of
  // 1024 x 128 -> 128 and 1024 x 512 -> 128, grad_input of 1024 x 128 -> 512 1.04-1.11x (two
  // in-process A/B runs, 21 rounds; two threads 1.00-1.09x), float64 unchanged.
  // Not where the rows lie a multiple of 4 KiB apart: all MR rows then share one L1 set.
  const bool a_rows_in_place = !a_in_place && (small || narrow_c) && a.col_stride == 1 && kernel.run_a_rows &&
                               (a.row_stride * static_cast<int64_t>(sizeof(T))) % 4096 != 0;
  // Otherwise, with a single row block, each B panel is packed by the task that uses it just
  // before its tiles, into private memory that stays in cache; all of B written out to memory
  // and read back cost the M = 48 float64 forward (W 4096 x 4096) 0.80x -> 1.02x torch.
  const bool b_private = m_blocks == 1 && !b_in_place && !small;
  const bool b_shared = !b_in_place && !small && !b_private;
  T* packed_b = b_shared ? scratch_for<T>(ScratchSlot::PackedB, blk.kc * round_up(std::min(N, blk.nc), nr)) : nullptr;

  for (int64_t jc = 0; jc < N; jc += blk.nc) {
    const int64_t nc = std::min(blk.nc, N - jc);
    const int64_t n_panels = ceil_div(nc, nr);
    // Split the B panels into chunks so that (row blocks x chunks) is a multiple of the
    // thread count: every thread stays busy even when all of M fits in one row block
    // (thin shapes, M = 1..64).
    int64_t n_chunks = std::clamp<int64_t>(threads / std::gcd(m_blocks, threads), 1, n_panels);
    const int64_t panels_per_chunk = ceil_div(n_panels, n_chunks);
    n_chunks = ceil_div(n_panels, panels_per_chunk);
    const int64_t tasks = m_blocks * n_chunks;

    for (int64_t pc = 0; pc < K; pc += blk.kc) {
      const int64_t kc = std::min(blk.kc, K - pc);
      const bool accumulate = pc > 0;
      const T* tile_bias_base = (pc + kc == K) ? bias : nullptr;
      T* row_sums_pass = (jc == 0) ? args.a_row_sums : nullptr;

      if (b_shared) {
        at::parallel_for(0, n_panels, parallel ? 4 : n_panels, [&](int64_t begin, int64_t end) {
          pack_b_panels(k, b, pc, kc, jc + begin * nr, end - begin, nr, packed_b + begin * nr * kc);
        });
      }

      run_tasks(tasks, parallel, [&](int64_t task) {
        alignas(kCacheLine) T tile[kMaxTileElements];
        int64_t ic = 0, mc = 0;
        block_rows(task / n_chunks, ic, mc);
        const int64_t chunk = task % n_chunks;
        T* packed_a = scratch_for<T>(ScratchSlot::PackedA, max_block_rows * kc);
        T* sums = (row_sums_pass && chunk == 0) ? row_sums_pass + ic : nullptr;
        const int64_t full_rows = (a_in_place || a_rows_in_place) ? mc / mr * mr : 0;
        if (a_in_place || a_rows_in_place) {
          T* no_sums = nullptr;  // summed from A itself below
          if (full_rows < mc)
            pack_a_block(k, a, ic + full_rows, mc - full_rows, pc, kc, mr, packed_a + full_rows * kc, no_sums);
          if (sums) {
            for (int64_t p = 0; p < kc; ++p)
              for (int64_t i = 0; i < mc; ++i) sums[i] += a(ic + i, pc + p);
          }
        } else {
          pack_a_block(k, a, ic, mc, pc, kc, mr, packed_a, sums);
        }

        const int64_t jp_begin = chunk * panels_per_chunk;
        const int64_t jp_end = std::min(n_panels, (chunk + 1) * panels_per_chunk);
        // Private B panels: the whole chunk for a small product, else one edge panel.
        T* private_b = b_shared ? nullptr
                                : scratch_for<T>(ScratchSlot::Edge, kc * nr * (small && !b_in_place ? jp_end - jp_begin : 1));
        if (small && !b_in_place) {
          for (int64_t jp = jp_begin; jp < jp_end; ++jp)
            pack_b_panel(k, b, pc, kc, jc + jp * nr, nr, private_b + (jp - jp_begin) * nr * kc);
        }
        for (int64_t jp = jp_begin; jp < jp_end; ++jp) {
          const int64_t j = jc + jp * nr;
          const int64_t cols = std::min(nr, N - j);
          const T* b_panel = nullptr;
          int64_t ldb = nr;
          if (b_shared) {
            b_panel = packed_b + jp * nr * kc;
          } else if (b_private) {
            pack_b_panel(k, b, pc, kc, j, nr, private_b);
            b_panel = private_b;
          } else if (!b_in_place) {
            b_panel = private_b + (jp - jp_begin) * nr * kc;
          } else if (cols == nr) {
            b_panel = &b(pc, j);
            ldb = b.row_stride;
          } else {
            pack_b_panel(k, b, pc, kc, j, nr, private_b);
            b_panel = private_b;
          }
          const T* tile_bias = tile_bias_base ? tile_bias_base + j : nullptr;
          for (int64_t i0 = 0; i0 < mc; i0 += mr) {
            const int64_t rows = std::min(mr, mc - i0);
            const bool a_row_in_place = i0 < full_rows;
            const T* a_panel = a_row_in_place ? &a(ic + i0, pc) : packed_a + i0 * kc;
            const int64_t lda = !a_row_in_place ? mr : a_rows_in_place ? a.row_stride : a.col_stride;
            T* c = args.c + (ic + i0) * args.ldc + j;
            // The last panel of M % MR rows (always packed) runs the shortest kernel that covers it.
            int64_t kernel_rows = mr;
            MicroKernelFn<T> run = (a_row_in_place && a_rows_in_place) ? kernel.run_a_rows
                                                                       : covering_kernel(kernel, rows, kernel_rows);
            if (rows == kernel_rows && cols == nr) {
              run(kc, a_panel, lda, b_panel, ldb, c, args.ldc, accumulate, tile_bias);
            } else {
              run(kc, a_panel, lda, b_panel, ldb, tile, nr, false, tile_bias);
              for (int64_t r = 0; r < rows; ++r)
                for (int64_t q = 0; q < cols; ++q) {
                  const T value = tile[r * nr + q];
                  c[r * args.ldc + q] = accumulate ? c[r * args.ldc + q] + value : value;
                }
            }
            if (epilogue && pc + kc == K) gemm_epilogue(args, ic + i0, j, rows, cols);
          }
        }
      });
    }
  }
}

}  // namespace

template <typename T>
void gemm_epilogue(const GemmArgs<T>& args, int64_t i, int64_t j, int64_t rows, int64_t cols) {
  T* c = args.c + i * args.ldc + j;
  if (args.preactivation) {
    T* z = args.preactivation + i * args.ld_preactivation + j;
    for (int64_t r = 0; r < rows; ++r) std::copy(c + r * args.ldc, c + r * args.ldc + cols, z + r * args.ld_preactivation);
  }
  if (args.activation == Activation::None) return;
  activation_kernels<T>(fused_microkernels()).activate(args.activation, c, args.ldc, c, args.ldc, rows, cols);
}

template <typename T>
void row_sums(const MatrixView<T>& m, T* out) {
  at::parallel_for(0, m.rows, 1024, [&](int64_t begin, int64_t end) {
    std::fill(out + begin, out + end, T(0));
    // Either walk sums each row left to right; pick the one that reads memory sequentially.
    if (m.col_stride <= m.row_stride) {
      for (int64_t i = begin; i < end; ++i)
        for (int64_t j = 0; j < m.cols; ++j) out[i] += m(i, j);
    } else {
      for (int64_t j = 0; j < m.cols; ++j)
        for (int64_t i = begin; i < end; ++i) out[i] += m(i, j);
    }
  });
}

namespace {

enum class GemmPath { Reference, Direct, Empty, Outer, Gemv, Dot, Transposed, Blocked };

// The path rules of the header comment, in order. Shared by gemm() and gemm_path_name().
GemmPath choose_path(int64_t M, int64_t N, int64_t K, int64_t a_col_stride, int64_t b_row_stride,
                     int64_t b_col_stride, bool row_sums, const MicroKernelSet* kernels, const CpuProfile& profile,
                     int64_t element_bytes) {
  // Products this small cost less than packing them: they take the direct loop, which also
  // rounds like torch's own small matmuls (a multiply and an add per term, in k order).
  if (!kernels) return GemmPath::Reference;
  if (multiply_adds(M, N, K) <= profile.direct_max_madds) return GemmPath::Direct;
  if (M == 0 || N == 0 || K == 0) return GemmPath::Empty;
  const bool b_rows_contiguous = b_col_stride == 1;
  if (b_rows_contiguous && K <= profile.stream_max_depth) return GemmPath::Outer;
  if (b_rows_contiguous && M <= std::min<int64_t>(profile.gemv_max_rows, 4)) return GemmPath::Gemv;
  // A thin x W^T reuses each element of W too few times to pay for packing it: the
  // transposed path reads W in place. Packing x and storing each C^T tile transposed cost
  // per call what K >= transposed_min_depth amortizes (Emerald Rapids, against torch:
  // 64 x 256 -> 4096 float32 0.99x, blocked 1.02x; 64 x 128 -> 4096 0.87x and 0.95x). It
  // pads x to whole NR-row panels, so it is taken only where that padding is at most 1/8 of
  // the rows (100 x 1000 -> 1000 float32, padded to 128: 0.88x, blocked 1.01x). Small
  // products keep their one thread region in the blocked path.
  const bool operands_contiguous_along_k = a_col_stride == 1 && b_row_stride == 1;
  const int64_t transposed_max_rows = profile.transposed_max_rows * 4 / std::max<int64_t>(element_bytes, 4);
  // W's rows 4 KiB apart (K a multiple of 1024, float32) put the MR rows of a panel in one
  // L1 set per line: a 12-way L1 (48 KiB) holds them (1.30x torch at K = 4096, 1.25x at
  // K = 4000), an 8-way one (32 KiB) would evict them before their next use; not there
  // (unmeasured).
  const int64_t x_panel_rows = element_bytes == 8 ? kernels->f64.nr : kernels->f32.nr;
  const int64_t l1d = cpu_id().l1d;
  const bool w_rows_thrash_l1 = (b_col_stride * element_bytes) % 4096 == 0 && l1d > 0 && l1d < 48 * 1024;
  if (operands_contiguous_along_k && !row_sums && M <= transposed_max_rows && K >= profile.transposed_min_depth &&
      round_up(M, x_panel_rows) * 7 <= M * 8 && multiply_adds(M, N, K) > profile.small_max_madds && !w_rows_thrash_l1)
    return GemmPath::Transposed;
  // The dot path pays off while few rows of A share each element of B (measured: up to
  // about 256 rows for W of 4096 x 4096, where the packed path catches up), and while k is
  // long enough to amortize the horizontal sums of its accumulators. Where x's panels would
  // be mostly padding it also beats the transposed path (24 x 4096 -> 4096 float32: dot
  // 1.25x torch, blocked 1.14x; 8 rows: dot 2.25x, transposed 1.27x).
  const int64_t dot_max_rows = profile.dot_max_rows * 4 / std::max<int64_t>(element_bytes, 4);
  if (operands_contiguous_along_k && !row_sums && M <= dot_max_rows &&
      (K >= profile.dot_min_depth || M <= profile.dot_thin_rows))
    return GemmPath::Dot;
  return GemmPath::Blocked;
}

}  // namespace

const char* gemm_path_name(int64_t M, int64_t N, int64_t K, int64_t a_col_stride, int64_t b_row_stride,
                           int64_t b_col_stride, bool row_sums, int64_t element_bytes) {
  switch (choose_path(M, N, K, a_col_stride, b_row_stride, b_col_stride, row_sums,
                      selected_microkernels(), cpu_profile(), element_bytes)) {
    case GemmPath::Reference: return "reference";
    case GemmPath::Direct: return "direct";
    case GemmPath::Empty: return "empty";
    case GemmPath::Outer: return "outer";
    case GemmPath::Gemv: return "gemv";
    case GemmPath::Dot: return "dot";
    case GemmPath::Transposed: return "transposed";
    case GemmPath::Blocked: return "blocked";
  }
  return "?";
}

template <typename T>
void gemm(const GemmArgs<T>& args) {
  const int64_t M = args.a.rows, K = args.a.cols, N = args.b.cols;
  const MicroKernelSet* kernels = selected_microkernels();
  const CpuProfile& profile = cpu_profile();
  const GemmPath path = choose_path(M, N, K, args.a.col_stride, args.b.row_stride, args.b.col_stride,
                                    args.a_row_sums != nullptr, kernels, profile, sizeof(T));
  if (path == GemmPath::Reference || path == GemmPath::Direct) {
    gemm_reference(args);
    if (has_epilogue(args)) gemm_epilogue(args, 0, 0, M, N);
    return;
  }
  if (path == GemmPath::Empty) {
    if (M == 0) return;
    fill_with_bias(args, M, N);
    if (has_epilogue(args)) gemm_epilogue(args, 0, 0, M, N);
    if (args.a_row_sums) row_sums(args.a, args.a_row_sums);
    return;
  }
  const ScratchUse in_use;
  const Kernels<T> k = kernels_of<T>(*kernels);
  switch (path) {
    case GemmPath::Outer: return gemm_outer(args, k, profile);
    case GemmPath::Gemv: return gemm_gemv(args, k, profile);
    case GemmPath::Dot: return gemm_dot(args, M < k.dot.mr ? k.dot_row : k.dot, profile);
    case GemmPath::Transposed: return gemm_transposed(args, k, profile);
    default: return gemm_blocked(args, k, profile);
  }
}

// ----------------------------------------------------------------------------- reduced precision
//
// gemm_widened: bfloat16 / float16 operands, float32 arithmetic, one rounding of each result.
// The blocked strategy above with three differences:
//   - bfloat16 runs on the native kernel selected for this CPU (cpu_isa.h, Bf16Kernel: AMX
//     tiles or vdpbf16ps on panels packed in k-groups, converted by vector instructions);
//     float16, and bfloat16 where the CPU has neither, run the float32 micro-kernel on
//     operands the pack kernels widen while they pack (PackWidenFn): no float32 copy of an
//     operand either way;
//   - kc covers all of K, so each tile of C is complete when the micro-kernel stores it into
//     a float32 tile buffer: bias, preactivation and activation are applied in float32 there
//     and the tile is rounded once into C (a pc loop would have to keep C in float32);
//   - the A block and the B block shrink with K to keep the bytes of the profile's blocking.
// Row sums (grad_bias) are summed in float32 from the packed panels and rounded once.
// Products of at most direct_max_madds multiply-adds take a float32 reference loop; the
// outer and gemv rules of gemm() (thin backward products) take gemm_widened_thin, which
// streams B once, widened as it is loaded; bfloat16 x W^T for up to 4 rows of x (a thin
// forward) takes gemm_widened_dot, W read in place by the native dot kernel.
namespace {

template <typename In>
float widen_scalar(In v) {
  return static_cast<float>(v);
}

// The bias of a reduced-precision product in float32 (per-thread scratch), `length` values
// zero-padded to `padded`; nullptr without a bias.
template <typename In>
float* widened_bias(const GemmArgs<In>& args, int64_t length, int64_t padded) {
  if (!args.bias) return nullptr;
  float* bias = scratch_for<float>(ScratchSlot::Bias, padded);
  for (int64_t j = 0; j < padded; ++j) bias[j] = j < length ? widen_scalar(args.bias[j * args.bias_stride]) : 0.0f;
  return bias;
}

template <typename In>
void gemm_widened_reference(const GemmArgs<In>& args) {
  const int64_t M = args.a.rows, K = args.a.cols, N = args.b.cols;
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      float sum = 0;
      for (int64_t p = 0; p < K; ++p) sum += widen_scalar(args.a(i, p)) * widen_scalar(args.b(p, j));
      if (args.bias) sum += widen_scalar(args.bias[j * args.bias_stride]);
      if (args.preactivation) args.preactivation[i * args.ld_preactivation + j] = In(sum);
      args.c[i * args.ldc + j] = In(apply_activation(args.activation, sum));
    }
  if (args.a_row_sums) {
    for (int64_t i = 0; i < M; ++i) {
      float sum = 0;
      for (int64_t p = 0; p < K; ++p) sum += widen_scalar(args.a(i, p));
      args.a_row_sums[i] = In(sum);
    }
  }
}

template <typename In>
PackWidenFn widening_pack(const MicroKernelSet& set) {
  return std::is_same_v<In, c10::BFloat16> ? set.pack_bf16_f32 : set.pack_f16_f32;
}

// The packing and tile product of the reduced-precision blocked path, two ways:
//   WideningPanels  float32 panels (PackFn's layout) widened while packed, the ISA's float32
//                   micro-kernel, results rounded element by element (bfloat16 and float16)
//   NativeBf16Panels  bfloat16 panels grouped along k (Bf16Kernel: vdpbf16ps or AMX), the
//                   results rounded by the kernel's vector conversion
// Both fill an MR x NR float32 tile (bias included) from panels of packed_depth(K) steps; a
// native kernel with run_rounded (vdpbf16ps) rounds a tile whose epilogue is only the bias
// into C itself, from its registers.
template <typename In>
struct WideningPanels {
  using Packed = float;
  static constexpr bool kNative = false;
  const MicroKernel<float>& kernel;
  PackWidenFn pack;
  int64_t mr() const { return kernel.mr; }
  int64_t nr() const { return kernel.nr; }
  int64_t packed_depth(int64_t K) const { return K; }
  void pack_a(const In* src, int64_t line_stride, int64_t depth_stride, int64_t lines, int64_t depth, Packed* out) const {
    pack(reinterpret_cast<const uint16_t*>(src), line_stride, depth_stride, lines, depth, kernel.mr, out);
  }
  void pack_b(const In* src, int64_t line_stride, int64_t depth_stride, int64_t lines, int64_t depth, Packed* out) const {
    pack(reinterpret_cast<const uint16_t*>(src), line_stride, depth_stride, lines, depth, kernel.nr, out);
  }
  int64_t a_panel_elements(int64_t depth) const { return kernel.mr * depth; }
  int64_t a_panel_stride(int64_t) const { return 0; }  // the micro-kernel's panels have no rows
  bool reads_a_in_place(const MatrixView<In>&, int64_t, bool, int64_t) const { return false; }
  void multiply(int64_t depth, const Packed* a, int64_t, bool, int64_t, const Packed* b, float* tile,
                const float* bias) const {
    kernel.run(depth, a, kernel.mr, b, kernel.nr, tile, kernel.nr, false, bias);
  }
  void begin() const {}
  void end() const {}
  bool transposes_tiles() const { return false; }
  void transpose_tile(float*) const {}
  // sums[i] += sum over p of A(i, p), i < MR, from a packed A panel (p-major: each step's MR
  // values are adjacent, so the adds run across i, in vectors)
  void add_row_sums(const Packed* panel, int64_t depth, float* sums) const {
    const int64_t mr = kernel.mr;
    for (int64_t p = 0; p < depth; ++p)
      for (int64_t i = 0; i < mr; ++i) sums[i] += panel[p * mr + i];
  }
  void round(const float* tile, In* dst, int64_t ld, int64_t rows, int64_t cols) const {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t q = 0; q < cols; ++q) dst[r * ld + q] = In(tile[r * kernel.nr + q]);
  }
};

struct NativeBf16Panels {
  using Packed = uint16_t;
  static float widen_bits(Packed bits) {
    const uint32_t word = uint32_t(bits) << 16;
    float value;
    std::memcpy(&value, &word, sizeof value);
    return value;
  }
  static constexpr bool kNative = true;
  static constexpr int64_t kPackAliasedAMinPanels = 4;  // reads_a_in_place
  const Bf16Kernel& kernel;
  int64_t mr() const { return kernel.mr; }
  int64_t nr() const { return kernel.nr; }
  int64_t packed_depth(int64_t K) const { return round_up(K, kernel.depth_step); }
  void pack_a(const c10::BFloat16* src, int64_t line_stride, int64_t depth_stride, int64_t lines, int64_t depth,
              Packed* out) const {
    kernel.pack_a(reinterpret_cast<const uint16_t*>(src), line_stride, depth_stride, lines, depth,
                  packed_depth(depth), kernel.mr, out);
  }
  void pack_b(const c10::BFloat16* src, int64_t line_stride, int64_t depth_stride, int64_t lines, int64_t depth,
              Packed* out) const {
    kernel.pack_b(reinterpret_cast<const uint16_t*>(src), line_stride, depth_stride, lines, depth,
                  packed_depth(depth), kernel.nr, out);
  }
  int64_t a_panel_stride(int64_t depth) const { return depth + kBf16RowPadding; }
  int64_t a_panel_elements(int64_t depth) const {
    return kernel.a_rows ? kernel.mr * a_panel_stride(depth) : kernel.mr * depth;
  }
  // Row-major A (x in the forward, grad_output in grad_input) is read by the kernel in place
  // when no step past K needs zeros: no packing of A at all, only of B (AMX: rows of k steps;
  // vdpbf16ps: a pair of k steps is one 32-bit word of a row, broadcast as it is; Zen 4, one
  // thread, against torch: forward 1024 x 512 -> 128 0.89x -> 0.98x, 1024 x 128 -> 128
  // 1.04x -> 1.12x, 1024 x 128 -> 512 0.97x -> 0.98x). Except where its
  // rows lie a multiple of 2 KiB apart (K = 1024, 2048, ...) and at least
  // kPackAliasedAMinPanels B panels reuse each A panel: a 32-row panel's lines then fall into
  // two of L1's 64 sets, 16 lines to a 12-way set, and a packed copy (rows kBf16RowPadding
  // longer) pays for itself. Where A panels serve one or two B panels (the swapped thin
  // forward, W read in place against x^T) packing W would cost more than it saves.
  // Emerald Rapids, AMX, one thread, against torch in the same process (medians of 15):
  // 2048^3 forward 1.05-1.06x -> 1.13-1.40x, 4096 x 1024 -> 4096 0.99-1.13x -> 1.06-1.22x,
  // 1024^3 0.97-1.04x -> 0.94-1.01x; packing also for one B panel took the 1 x 4096 -> 4096
  // and 8 x 4096 -> 4096 forward from 1.58x to 0.88x. The vdpbf16ps kernel (12 rows) keeps
  // the same rule, unmeasured.
  bool reads_a_in_place(const MatrixView<c10::BFloat16>& a, int64_t K, bool row_sums, int64_t b_panels) const {
    const bool rows_share_sets = (a.row_stride * static_cast<int64_t>(sizeof(Packed))) % 2048 == 0;
    const bool pack_instead = rows_share_sets && b_panels >= kPackAliasedAMinPanels;
    const bool kernel_reads_a = kernel.a_rows || kernel.run_a_in_place;
    return kernel_reads_a && a.col_stride == 1 && K == packed_depth(K) && !row_sums && !pack_instead;
  }

  // a: a packed panel (lda: its row stride, a_rows kernels), or (a_in_place) A itself, rows of
  // it in the tile
  void multiply(int64_t depth, const Packed* a, int64_t lda, bool a_in_place, int64_t rows, const Packed* b,
                float* tile, const float* bias) const {
    if (a_in_place && !kernel.a_rows)
      kernel.run_a_in_place(depth, a, lda, rows, b, tile, bias);
    else
      kernel.run(depth, a, lda, b, tile, bias);
  }
  // The tile rounded into C by the kernel itself, where it can (a tile with no activation,
  // no preactivation and no transpose); false: the caller takes multiply's float32 tile.
  bool multiply_rounded(int64_t depth, const Packed* a, int64_t lda, bool a_in_place, const Packed* b,
                        const float* bias, c10::BFloat16* dst, int64_t ldd, int64_t rows, int64_t cols) const {
    if (!kernel.run_rounded) return false;
    kernel.run_rounded(depth, a, lda, a_in_place, b, bias, reinterpret_cast<uint16_t*>(dst), ldd, rows, cols);
    return true;
  }
  bool transposes_tiles() const { return kernel.transpose_tile != nullptr; }
  void transpose_tile(float* tile) const { kernel.transpose_tile(tile); }
  void begin() const {
    if (kernel.begin) kernel.begin();
  }
  void end() const {
    if (kernel.end) kernel.end();
  }
  // sums[i] += sum over p of A(i, p), i < MR, from a packed A panel (rows or pairs,
  // gemm_microkernels.h), read in memory order: in pairs, lane t of a step pair is (row t / 2,
  // step parity t % 2), so 2 MR partial sums add across lanes, in vectors; rows are summed in
  // 16 interleaved partial sums for the same reason. Zen 4, bfloat16 grad_weight + grad_bias of
  // 1024 x 128 -> 512 at one thread: element by element, the sums took 0.38 of its 1.08 ms.
  void add_row_sums(const Packed* panel, int64_t depth, float* sums) const {
    const int64_t mr = kernel.mr;
    if (kernel.a_rows) {
      for (int64_t i = 0; i < mr; ++i) {
        const Packed* row = panel + i * a_panel_stride(depth);
        float partial[16] = {};
        int64_t p = 0;
        for (; p + 16 <= depth; p += 16)
          for (int64_t t = 0; t < 16; ++t) partial[t] += widen_bits(row[p + t]);
        for (; p < depth; ++p) partial[0] += widen_bits(row[p]);
        for (int64_t t = 0; t < 16; ++t) sums[i] += partial[t];
      }
      return;
    }
    float lanes[2 * kMaxPanelRows] = {};
    for (int64_t q = 0; q < depth / 2; ++q)
      for (int64_t t = 0; t < 2 * mr; ++t) lanes[t] += widen_bits(panel[q * 2 * mr + t]);
    for (int64_t i = 0; i < mr; ++i) sums[i] += lanes[2 * i] + lanes[2 * i + 1];
  }
  void round(const float* tile, c10::BFloat16* dst, int64_t ld, int64_t rows, int64_t cols) const {
    kernel.round_to_bf16(tile, kernel.nr, reinterpret_cast<uint16_t*>(dst), ld, rows, cols);
  }
};

// With transposed_output, args describe the swapped product C^T (M x N here) = B^T A^T of a
// caller whose C is N x M: each tile is transposed before its epilogue and lands in C at
// (j, i); bias (length M here) belongs to C's columns.
template <typename In, typename Panels>
void gemm_reduced_blocked(const GemmArgs<In>& args, const Panels& panels, const MicroKernelSet& set,
                          const CpuProfile& profile, bool transposed_output = false) {
  using Packed = typename Panels::Packed;
  const MatrixView<In>& a = args.a;
  const MatrixView<In>& b = args.b;
  const int64_t M = a.rows, K = a.cols, N = b.cols;
  const int64_t mr = panels.mr(), nr = panels.nr();
  const int64_t depth = panels.packed_depth(K);
  TORCH_INTERNAL_ASSERT(mr * nr <= kMaxTileElements && mr <= kMaxPanelRows);
  const Blocking blk = blocking_for(set.f32, profile);
  // kc = K. The B block (K x nc) keeps the bytes of the profile's float32 kc x nc; the A
  // block (mc x K) those of its float32 mc x kc when widened, and bf16_block_bytes on the
  // native kernels, whose B panels must reach many rows of A per pass from L3.
  const int64_t panel_line_bytes = std::max<int64_t>(depth, 1) * static_cast<int64_t>(sizeof(Packed));
  const int64_t a_block_bytes = Panels::kNative ? profile.bf16_block_bytes : blk.mc * blk.kc * 4;
  const int64_t mc = std::max<int64_t>(1, a_block_bytes / panel_line_bytes / mr) * mr;
  const int64_t nc = std::max<int64_t>(1, blk.nc * blk.kc * 4 / panel_line_bytes / nr) * nr;

  // bias in float32, padded to whole tiles
  TORCH_INTERNAL_ASSERT(!transposed_output || (mr == nr && panels.transposes_tiles()));
  const int64_t bias_length = transposed_output ? M : N;
  const float* bias = widened_bias(args, bias_length, round_up(bias_length, nr));
  float* sums = args.a_row_sums ? scratch_for<float>(ScratchSlot::RowSums, M) : nullptr;
  if (sums) std::fill(sums, sums + M, 0.0f);

  const bool parallel = multiply_adds(M, N, K) >= profile.parallel_min_madds;
  const int64_t threads = parallel ? at::get_num_threads() : 1;
  const int64_t a_panels = ceil_div(M, mr);
  int64_t m_blocks = ceil_div(M, mc);
  if (m_blocks > 1) m_blocks = round_up(m_blocks, threads);
  m_blocks = std::clamp<int64_t>(m_blocks, 1, a_panels);
  const int64_t max_block_rows = ceil_div(a_panels, m_blocks) * mr;
  // With one row block every B panel is used by one task only: that task packs it just
  // before its tiles (into L2-sized private memory) instead of all of B being packed to
  // memory first and read back (for a thin product, B is the whole cost).
  const bool b_private = m_blocks == 1;
  Packed* packed_b = b_private ? nullptr : scratch_for<Packed>(ScratchSlot::PackedB, depth * round_up(std::min(N, nc), nr));
  const ActivationKernels<float>& activation = activation_kernels<float>(set);
  const bool a_in_place = panels.reads_a_in_place(a, K, sums != nullptr, ceil_div(N, nr));
  const int64_t a_panel_elements = panels.a_panel_elements(depth);
  const bool plain_epilogue = !transposed_output && !args.preactivation && args.activation == Activation::None;

  for (int64_t jc = 0; jc < N; jc += nc) {
    const int64_t width = std::min(nc, N - jc);
    const int64_t n_panels = ceil_div(width, nr);
    const auto pack_b_panel = [&](int64_t jp, Packed* out) {
      const int64_t j0 = jc + jp * nr;
      panels.pack_b(&b(0, j0), b.col_stride, b.row_stride, std::min(nr, N - j0), K, out);
    };
    if (!b_private) {
      at::parallel_for(0, n_panels, parallel ? 4 : n_panels, [&](int64_t begin, int64_t end) {
        for (int64_t jp = begin; jp < end; ++jp) pack_b_panel(jp, packed_b + jp * nr * depth);
      });
    }
    int64_t n_chunks = std::clamp<int64_t>(threads / std::gcd(m_blocks, threads), 1, n_panels);
    const int64_t panels_per_chunk = ceil_div(n_panels, n_chunks);
    n_chunks = ceil_div(n_panels, panels_per_chunk);
    run_tasks(m_blocks * n_chunks, parallel, [&](int64_t task) {
      alignas(kCacheLine) float tile[kMaxTileElements];
      const int64_t block = task / n_chunks, chunk = task % n_chunks;
      const int64_t p0 = block * a_panels / m_blocks, p1 = (block + 1) * a_panels / m_blocks;
      const int64_t ic = p0 * mr, rows_in_block = std::min(M, p1 * mr) - ic;
      // A panels: packed, or (a_in_place) A's own rows, only a partial last panel packed
      Packed* packed_a = scratch_for<Packed>(ScratchSlot::PackedA, (a_in_place ? 1 : max_block_rows / mr) * a_panel_elements);
      const auto a_panel = [&](int64_t i0, int64_t& lda, bool& in_place) -> const Packed* {
        lda = panels.a_panel_stride(depth);
        in_place = false;
        if (!a_in_place) return packed_a + i0 / mr * a_panel_elements;
        if (rows_in_block - i0 < mr) return packed_a;
        lda = a.row_stride;
        in_place = true;
        return reinterpret_cast<const Packed*>(&a(ic + i0, 0));
      };
      for (int64_t i0 = 0; i0 < rows_in_block; i0 += mr) {
        const int64_t n = std::min(mr, rows_in_block - i0);
        if (a_in_place && n == mr) continue;
        Packed* panel = a_in_place ? packed_a : packed_a + i0 / mr * a_panel_elements;
        panels.pack_a(&a(ic + i0, 0), a.row_stride, a.col_stride, n, K, panel);
        if (sums && jc == 0 && chunk == 0) {
          float s[kMaxPanelRows] = {};  // the panel's rows past n are zeros
          panels.add_row_sums(panel, depth, s);
          for (int64_t i = 0; i < n; ++i) sums[ic + i0 + i] = s[i];
        }
      }
      const int64_t jp_begin = chunk * panels_per_chunk, jp_end = std::min(n_panels, (chunk + 1) * panels_per_chunk);
      // one tile: rows i0.. of the block against B panel jp
      const auto compute_tile = [&](int64_t jp, int64_t i0, const Packed* b_panel) {
        const int64_t j = jc + jp * nr, cols = std::min(nr, N - j);
        const int64_t rows = std::min(mr, rows_in_block - i0);
        int64_t lda = 0;
        bool in_place = false;
        const Packed* a_tile_rows = a_panel(i0, lda, in_place);
        const float* tile_bias = (bias && !transposed_output) ? bias + j : nullptr;
        if constexpr (Panels::kNative) {
          if (plain_epilogue && panels.multiply_rounded(depth, a_tile_rows, lda, in_place, b_panel, tile_bias,
                                                        args.c + (ic + i0) * args.ldc + j, args.ldc, rows, cols))
            return;
        }
        panels.multiply(depth, a_tile_rows, lda, in_place, rows, b_panel, tile, tile_bias);
        // the tile's place in C: (i, j), rows x cols; or its transpose at (j, i)
        int64_t i = ic + i0, j_out = j, rows_out = rows, cols_out = cols;
        if (transposed_output) {
          panels.transpose_tile(tile);
          std::swap(i, j_out);
          std::swap(rows_out, cols_out);
          if (bias)
            for (int64_t r = 0; r < rows_out; ++r)
              for (int64_t q = 0; q < cols_out; ++q) tile[r * nr + q] += bias[j_out + q];
        }
        if (args.preactivation)
          panels.round(tile, args.preactivation + i * args.ld_preactivation + j_out, args.ld_preactivation, rows_out,
                       cols_out);
        if (args.activation != Activation::None)
          activation.activate(args.activation, tile, nr, tile, nr, rows_out, cols_out);
        panels.round(tile, args.c + i * args.ldc + j_out, args.ldc, rows_out, cols_out);
      };
      panels.begin();
      // Each B panel in L1 against all the block's A panels (from L2). The other order (all of the
      // chunk's B panels packed first, each A panel against them) measured the same on Zen 4
      // (bfloat16 1024 x 512 -> 128 / 1024 x 128 -> 512 forward, one thread: 1.02x / 0.98x).
      Packed* private_b = b_private ? scratch_for<Packed>(ScratchSlot::Edge, nr * depth) : nullptr;
      for (int64_t jp = jp_begin; jp < jp_end; ++jp) {
        if (b_private) pack_b_panel(jp, private_b);
        const Packed* b_panel = b_private ? private_b : packed_b + jp * nr * depth;
        for (int64_t i0 = 0; i0 < rows_in_block; i0 += mr) compute_tile(jp, i0, b_panel);
      }
      panels.end();
    });
  }
  if (sums) for (int64_t i = 0; i < M; ++i) args.a_row_sums[i] = In(sums[i]);
}

template <typename In>
StreamWidenKernelFn widening_stream(const MicroKernelSet& set) {
  return std::is_same_v<In, c10::BFloat16> ? set.stream_bf16_f32 : set.stream_f16_f32;
}

// The epilogue of a float32 block (rows x cols, leading dimension ld) computed for C at
// (i, j): preactivation rounded, activation in float32, C rounded (by the native bfloat16
// kernel's vector conversion when there is one: native, else nullptr).
template <typename In>
void round_block_into(const GemmArgs<In>& args, const ActivationKernels<float>& activation, const Bf16Kernel* native,
                      float* block, int64_t ld, int64_t i, int64_t j, int64_t rows, int64_t cols) {
  const auto round_into = [&](In* dst, int64_t ldd) {
    if (native) return native->round_to_bf16(block, ld, reinterpret_cast<uint16_t*>(dst), ldd, rows, cols);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t q = 0; q < cols; ++q) dst[r * ldd + q] = In(block[r * ld + q]);
  };
  if (args.preactivation) round_into(args.preactivation + i * args.ld_preactivation + j, args.ld_preactivation);
  if (args.activation != Activation::None) activation.activate(args.activation, block, ld, block, ld, rows, cols);
  round_into(args.c + i * args.ldc + j, args.ldc);
}

template <typename In>
void widened_row_sums(const MatrixView<In>& a, int64_t i, int64_t rows, In* out) {
  for (int64_t r = 0; r < rows; ++r) {
    float sum = 0;
    for (int64_t p = 0; p < a.cols; ++p) sum += widen_scalar(a(i + r, p));
    out[i + r] = In(sum);
  }
}

// The thin paths of gemm() (outer: K <= stream_max_depth; gemv: M <= gemv_max_rows; both with
// B's rows contiguous) for bfloat16 / float16: B streamed once, widened as it is loaded, into
// float32 blocks of C that are rounded once. A (a few rows or columns) is widened up front.
template <typename In>
void gemm_widened_thin(const GemmArgs<In>& args, bool outer, const MicroKernelSet& set, const CpuProfile& profile) {
  const MatrixView<In>& a = args.a;
  const MatrixView<In>& b = args.b;
  const int64_t M = a.rows, K = a.cols, N = b.cols;
  const StreamWidenKernelFn stream = widening_stream<In>(set);
  const ActivationKernels<float>& activation = activation_kernels<float>(set);
  const Bf16Kernel* native = std::is_same_v<In, c10::BFloat16> ? selected_bf16_kernel() : nullptr;
  const float* bias = widened_bias(args, N, N);
  // A in float32, row-major M x K (a few rows, or K <= stream_max_depth columns)
  float* a32 = scratch_for<float>(ScratchSlot::RowSums, M * K);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t p = 0; p < K; ++p) a32[i * K + p] = widen_scalar(a(i, p));
  const bool parallel = multiply_adds(M, N, std::max<int64_t>(K, 4)) >= profile.parallel_min_madds;
  const uint16_t* b_bits = reinterpret_cast<const uint16_t*>(b.data);
  if (outer) {
    // groups of 4 rows of C, whole rows, at least 16 KiB of C per hand-off
    const int64_t groups = ceil_div(M, 4);
    const int64_t grain = parallel ? std::max<int64_t>(1, (16 * 1024) / std::max<int64_t>(4 * N, 1)) : groups;
    at::parallel_for(0, groups, grain, [&](int64_t begin, int64_t end) {
      float* block = scratch_for<float>(ScratchSlot::Edge, 4 * N);
      for (int64_t g = begin; g < end; ++g) {
        const int64_t i = g * 4, rows = std::min<int64_t>(4, M - i);
        stream(K, a32 + i * K, K, 1, rows, b_bits, b.row_stride, N, block, N, bias);
        round_block_into(args, activation, native, block, N, i, 0, rows, N);
        if (args.a_row_sums) widened_row_sums(a, i, rows, args.a_row_sums);
      }
    });
  } else {
    // column blocks of C (a few KiB per row, in L1), each reading its strip of every row of B
    const int64_t width = std::max<int64_t>(64, profile.gemv_cols / 64 * 64);
    const int64_t blocks = ceil_div(N, width);
    at::parallel_for(0, blocks, parallel ? 1 : blocks, [&](int64_t begin, int64_t end) {
      float* block = scratch_for<float>(ScratchSlot::Edge, M * width);
      for (int64_t jb = begin; jb < end; ++jb) {
        const int64_t j = jb * width, cols = std::min(width, N - j);
        stream(K, a32, K, 1, M, b_bits + j * b.col_stride, b.row_stride, cols, block, width, bias ? bias + j : nullptr);
        round_block_into(args, activation, native, block, width, 0, j, M, cols);
      }
    });
    if (args.a_row_sums) widened_row_sums(a, 0, M, args.a_row_sums);
  }
}

// The reduced-precision dot path: x W^T for a thin x, both contiguous along k, read in place
// by a dot kernel (Bf16DotKernelFn): no packing, W read once, from memory. The blocked path
// pads x to MR rows and packs all of W first (for W of 4096 x 4096, 32 MiB written and read
// back per call). Tasks take strips of `cols` rows of W, each into a float32 block of M x cols
// that is rounded once.
//   Native bfloat16 (Bf16Kernel::dot, vdpbf16ps), for M <= its 4 rows. Zen 4, one thread,
// against torch: 1 / 2 / 4 x 4096 -> 4096 blocked 0.79x / 0.63x / 0.78x, dot 1.37x / 1.14x /
// 1.26x; 1 x 1024 -> 1024 0.56x -> 1.03x. More rows would re-read each strip of W from L2 once
// per row group, and the kernel is bound by that: 8 x 4096 -> 4096 dot 0.81x, blocked 0.87x;
// 64 rows 0.45x and 0.81x.
//   Widened (MicroKernelSet::dot_bf16_f32 / dot_f16_f32: float16, and bfloat16 on CPUs with
// no native kernel), where choose_path gives the float32 product of this shape the dot path.
// native: the kernel whose vector rounding rounds the block, or nullptr.
template <typename In>
void gemm_widened_dot(const GemmArgs<In>& args, Bf16DotKernelFn dot, int64_t rows_per_tile, int64_t cols_per_tile,
                      const Bf16Kernel* native, const MicroKernelSet& set, const CpuProfile& profile) {
  const MatrixView<In>& a = args.a;
  const MatrixView<In>& b = args.b;
  const int64_t M = a.rows, K = a.cols, N = b.cols;
  const ActivationKernels<float>& activation = activation_kernels<float>(set);
  const float* bias = widened_bias(args, N, N);
  const uint16_t* a_bits = reinterpret_cast<const uint16_t*>(a.data);
  const uint16_t* b_bits = reinterpret_cast<const uint16_t*>(b.data);
  const int64_t strips = ceil_div(N, cols_per_tile);
  const bool parallel = multiply_adds(M, N, K) >= profile.parallel_min_madds;
  at::parallel_for(0, strips, parallel ? 1 : strips, [&](int64_t begin, int64_t end) {
    float* block = scratch_for<float>(ScratchSlot::Edge, M * cols_per_tile);
    for (int64_t s = begin; s < end; ++s) {
      const int64_t j = s * cols_per_tile, cols = std::min(cols_per_tile, N - j);
      for (int64_t i = 0; i < M; i += rows_per_tile)
        dot(K, a_bits + i * a.row_stride, a.row_stride, std::min(rows_per_tile, M - i), b_bits + j * b.col_stride,
                   b.col_stride, cols, block + i * cols_per_tile, cols_per_tile);
      if (bias)
        for (int64_t r = 0; r < M; ++r)
          for (int64_t q = 0; q < cols; ++q) block[r * cols_per_tile + q] += bias[j + q];
      round_block_into(args, activation, native, block, cols_per_tile, 0, j, M, cols);
    }
  });
}

}  // namespace

template <typename In>
void gemm_widened(const GemmArgs<In>& args) {
  const int64_t M = args.a.rows, K = args.a.cols, N = args.b.cols;
  const MicroKernelSet* kernels = selected_microkernels();
  const CpuProfile& profile = cpu_profile();
  if (kernels == nullptr || multiply_adds(M, N, K) <= profile.direct_max_madds || K == 0 || N == 0 || M == 0) {
    return gemm_widened_reference(args);
  }
  const ScratchUse in_use;
  const GemmPath path = choose_path(M, N, K, args.a.col_stride, args.b.row_stride, args.b.col_stride,
                                    args.a_row_sums != nullptr, kernels, profile, sizeof(float));
  if (path == GemmPath::Outer || path == GemmPath::Gemv) {
    return gemm_widened_thin(args, path == GemmPath::Outer, *kernels, profile);
  }
  if constexpr (std::is_same_v<In, c10::BFloat16>) {
    if (const Bf16Kernel* native = selected_bf16_kernel()) {
      const bool operands_contiguous_along_k = args.a.col_stride == 1 && args.b.row_stride == 1;
      if (native->dot && operands_contiguous_along_k && !args.a_row_sums && M <= native->dot_rows)
        return gemm_widened_dot(args, native->dot, native->dot_rows, native->dot_cols, native, *kernels, profile);
      const NativeBf16Panels panels{*native};
      // Pack the smaller operand: where B^T could be read in place (the forward's W) and
      // M < N, run the swapped product C^T = B^T A^T (x is packed, W is not).
      const MatrixView<In> b_t = args.b.transposed();
      if (M < N && panels.transposes_tiles() && panels.reads_a_in_place(b_t, K, args.a_row_sums != nullptr, ceil_div(M, panels.nr()))) {
        GemmArgs<In> swapped = args;
        swapped.a = b_t;
        swapped.b = args.a.transposed();
        return gemm_reduced_blocked(swapped, panels, *kernels, profile, true);
      }
      return gemm_reduced_blocked(args, panels, *kernels, profile);
    }
  }
  const WidenedDotKernel& widened_dot = std::is_same_v<In, c10::BFloat16> ? kernels->dot_bf16_f32 : kernels->dot_f16_f32;
  if (path == GemmPath::Dot && widened_dot.run)
    return gemm_widened_dot(args, widened_dot.run, widened_dot.rows, widened_dot.cols, nullptr, *kernels, profile);
  gemm_reduced_blocked(args, WideningPanels<In>{kernels->f32, widening_pack<In>(*kernels)}, *kernels, profile);
}

template void gemm_widened<c10::BFloat16>(const GemmArgs<c10::BFloat16>&);
template void gemm_widened<c10::Half>(const GemmArgs<c10::Half>&);

template void gemm<float>(const GemmArgs<float>&);
template void gemm<double>(const GemmArgs<double>&);
template void gemm_epilogue<float>(const GemmArgs<float>&, int64_t, int64_t, int64_t, int64_t);
template void gemm_epilogue<double>(const GemmArgs<double>&, int64_t, int64_t, int64_t, int64_t);
template void row_sums<float>(const MatrixView<float>&, float*);
template void row_sums<double>(const MatrixView<double>&, double*);

}  // namespace pylibnn::cpu
