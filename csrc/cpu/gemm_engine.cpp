// CPU GEMM engine: C (M, N) = A (M, K) @ B (K, N) [+ bias], optional row sums of A.
//
// gemm() picks one of three paths per call:
//   direct   tiny products (the tutorial's layers): the reference loop, no packing, no threads
//   dot      thin products whose A rows and B columns are contiguous along k (the forward
//            x @ W^T for up to a few hundred rows of x): dot-product micro-kernels read both
//            operands in place, vectorized along k; threads split the columns of C
//   blocked  everything else, below.
//
// Blocked strategy (GotoBLAS / BLIS): three cache-blocking loops around a register-blocked
// micro-kernel.
//   for jc over N in steps of nc        B block (kc x nc) lives in L3
//     for pc over K in steps of kc      pack B[pc:+kc, jc:+nc] into NR-wide panels (all threads)
//       tasks = (mc-row blocks of A) x (chunks of the B panels), spread over at::parallel_for
//         pack A[ic:+mc, pc:+kc] into MR-tall panels (per task, kept in L2)
//         for each B panel in the chunk, for each A panel: micro-kernel on an MR x NR tile of C
// Packing reads A and B through their strides (transposed, sliced and stride-0 views alike)
// and zero-fills the panels past the matrix edge, so the micro-kernel only ever computes
// full tiles; edge tiles of C are computed into a small buffer and copied out.
// With a single row block of A, B is not packed where its rows are contiguous: the
// micro-kernel reads it in place (grad_input = dy @ W for a thin batch).
// The bias is added by the micro-kernel when the last kc block is stored (fused epilogue);
// the activation epilogue (linear_act_forward) follows on the same tile, still in L1.
// Row sums of A (grad_bias while packing grad_output^T for grad_weight) are taken from the
// packed A panels in the first jc pass, by the one task that owns those rows in each pass:
// every row is summed in the same order on every run, whatever the thread count.
#include "cpu/gemm.h"

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <numeric>
#include <type_traits>

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include "cpu/cpu_isa.h"

namespace pylibnn::cpu {
namespace {

constexpr int64_t kMaxTileElements = 512;  // largest MR x NR of any micro-kernel set
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

// A 64-byte aligned scratch buffer (packed panels start on a cache line and a zmm boundary).
template <typename T>
class AlignedBuffer {
 public:
  explicit AlignedBuffer(int64_t count) {
    const size_t bytes = static_cast<size_t>(round_up(std::max<int64_t>(count, 1) * sizeof(T), kCacheLine));
    data_ = static_cast<T*>(std::aligned_alloc(kCacheLine, bytes));
    TORCH_CHECK(data_ != nullptr, "pylibnn: out of memory allocating a ", bytes, "-byte GEMM packing buffer");
  }
  ~AlignedBuffer() { std::free(data_); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  T* get() const { return data_; }

 private:
  T* data_;
};

struct Blocking {
  int64_t kc;  // depth of one packed block
  int64_t mc;  // rows of A per task (multiple of MR)
  int64_t nc;  // columns of B per packed block (multiple of NR)
};

// Sizes measured best on this project's machine (AMD Zen 5: 48 KiB L1d, 1 MiB L2 per core,
// 32 MiB shared L3; `benchmarks/bench_linear.py`): a kc x NR micro-panel of B of 64 KiB,
// streamed from L2 while MR x kc panels of A pass over it; an mc x kc block of A of about
// 192 KiB in L2; a kc x nc block of B in L3. Larger kc means fewer passes over C.
template <typename T>
Blocking blocking_for(const MicroKernel<T>& kernel) {
  const int64_t elem = sizeof(T);
  const int64_t kc = std::clamp<int64_t>((64 * 1024) / (kernel.nr * elem), 64, 512) / 8 * 8;
  const int64_t mc = std::max<int64_t>(1, (192 * 1024) / (kc * elem) / kernel.mr) * kernel.mr;
  const int64_t nc = std::max<int64_t>(1, 4096 / kernel.nr) * kernel.nr;
  return {kc, mc, nc};
}

// Packs A[ic:ic+mc, pc:pc+kc] into MR-row panels, panel[p * MR + i], rows past mc zeroed.
// When row_sums is given, adds each packed row's sum over this kc block to row_sums[i].
template <typename T>
void pack_a_block(const MatrixView<T>& a, int64_t ic, int64_t mc, int64_t pc, int64_t kc, int64_t mr,
                  T* packed, T* row_sums) {
  const bool rows_contiguous = a.col_stride <= a.row_stride;
  for (int64_t i0 = 0; i0 < mc; i0 += mr) {
    const int64_t rows = std::min(mr, mc - i0);
    T* panel = packed + i0 * kc;
    // Walk the operand along its smaller stride so the reads are sequential.
    if (rows_contiguous) {
      for (int64_t i = 0; i < rows; ++i) {
        const T* src = &a(ic + i0 + i, pc);
        for (int64_t p = 0; p < kc; ++p) panel[p * mr + i] = src[p * a.col_stride];
      }
    } else {
      for (int64_t p = 0; p < kc; ++p) {
        const T* src = &a(ic + i0, pc + p);
        for (int64_t i = 0; i < rows; ++i) panel[p * mr + i] = src[i * a.row_stride];
      }
    }
    for (int64_t p = 0; p < kc; ++p)
      for (int64_t i = rows; i < mr; ++i) panel[p * mr + i] = T(0);
    if (row_sums) {
      for (int64_t i = 0; i < rows; ++i) {
        T sum = 0;
        for (int64_t p = 0; p < kc; ++p) sum += panel[p * mr + i];
        row_sums[i0 + i] += sum;
      }
    }
  }
}

// Packs one NR-column panel of B: panel[p * NR + j] = B(pc + p, j0 + j), columns past N zeroed.
template <typename T>
void pack_b_panel(const MatrixView<T>& b, int64_t pc, int64_t kc, int64_t j0, int64_t nr, T* panel) {
  const int64_t cols = std::min(nr, b.cols - j0);
  if (b.col_stride <= b.row_stride) {
    for (int64_t p = 0; p < kc; ++p) {
      const T* src = &b(pc + p, j0);
      for (int64_t j = 0; j < cols; ++j) panel[p * nr + j] = src[j * b.col_stride];
      for (int64_t j = cols; j < nr; ++j) panel[p * nr + j] = T(0);
    }
  } else {
    for (int64_t j = 0; j < cols; ++j) {
      const T* src = &b(pc, j0 + j);
      for (int64_t p = 0; p < kc; ++p) panel[p * nr + j] = src[p * b.row_stride];
    }
    for (int64_t p = 0; p < kc; ++p)
      for (int64_t j = cols; j < nr; ++j) panel[p * nr + j] = T(0);
  }
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
// vector loads in the micro-kernels never read past its end.
template <typename T>
class PaddedBias {
 public:
  PaddedBias(const GemmArgs<T>& args, int64_t N, int64_t multiple) : buffer_(args.bias ? round_up(N, multiple) : 0) {
    if (!args.bias) return;
    const int64_t padded = round_up(N, multiple);
    for (int64_t j = 0; j < N; ++j) buffer_.get()[j] = args.bias[j * args.bias_stride];
    std::fill(buffer_.get() + N, buffer_.get() + padded, T(0));
    data_ = buffer_.get();
  }
  const T* get() const { return data_; }

 private:
  AlignedBuffer<T> buffer_;
  const T* data_ = nullptr;
};

// Below this many multiply-adds a thread hand-off costs more than it saves.
constexpr int64_t kParallelMinMultiplyAdds = 48 * 48 * 48;

// Thin products with both operands contiguous along k (the forward x @ W^T for a few rows
// of x): dot products straight from the operands. Packing W would cost as much as the
// arithmetic when so few rows of x reuse each of its elements.
template <typename T>
void gemm_dot(const GemmArgs<T>& args, const DotKernel<T>& kernel) {
  const MatrixView<T>& a = args.a;
  const MatrixView<T>& b = args.b;
  const int64_t M = a.rows, K = a.cols, N = b.cols;
  const int64_t mr = kernel.mr, nr = kernel.nr;
  // An nr x kc tile of B^T (16 KiB) stays in L1 while every row of A passes over it.
  const int64_t kc = (16 * 1024) / (nr * static_cast<int64_t>(sizeof(T)));
  const PaddedBias<T> bias(args, N, nr);
  const int64_t n_tiles = ceil_div(N, nr);
  const bool parallel = multiply_adds(M, N, K) >= kParallelMinMultiplyAdds;
  const bool epilogue = has_epilogue(args);

  at::parallel_for(0, n_tiles, parallel ? 1 : n_tiles, [&](int64_t begin, int64_t end) {
    for (int64_t jt = begin; jt < end; ++jt) {
      const int64_t j = jt * nr;
      const int64_t cols = std::min(nr, N - j);
      for (int64_t pc = 0; pc < K; pc += kc) {
        const int64_t depth = std::min(kc, K - pc);
        const T* tile_bias = (bias.get() && pc + depth == K) ? bias.get() + j : nullptr;
        for (int64_t i = 0; i < M; i += mr) {
          kernel.run(depth, &a(i, pc), a.row_stride, &b(pc, j), b.col_stride, args.c + i * args.ldc + j, args.ldc,
                     std::min(mr, M - i), cols, pc > 0, tile_bias);
          if (epilogue && pc + depth == K) gemm_epilogue(args, i, j, std::min(mr, M - i), cols);
        }
      }
    }
  });
}

template <typename T>
void gemm_blocked(const GemmArgs<T>& args, const MicroKernel<T>& kernel) {
  const MatrixView<T>& a = args.a;
  const MatrixView<T>& b = args.b;
  const int64_t M = a.rows, K = a.cols, N = b.cols;
  const int64_t mr = kernel.mr, nr = kernel.nr;
  TORCH_INTERNAL_ASSERT(mr * nr <= kMaxTileElements);
  const Blocking blk = blocking_for(kernel);
  if (args.a_row_sums) std::fill(args.a_row_sums, args.a_row_sums + M, T(0));
  const PaddedBias<T> bias(args, N, nr);

  const bool parallel = multiply_adds(M, N, K) >= kParallelMinMultiplyAdds;
  const bool epilogue = has_epilogue(args);
  const int64_t threads = parallel ? at::get_num_threads() : 1;
  // Row blocks of (nearly) equal height, as many as a multiple of the thread count when
  // M needs several, so that no thread waits on another's extra block.
  int64_t m_blocks = ceil_div(M, blk.mc);
  if (m_blocks > 1) m_blocks = round_up(m_blocks, threads);
  const int64_t mc_step = round_up(ceil_div(M, m_blocks), mr);
  m_blocks = ceil_div(M, mc_step);
  // With a single row block every element of B is used once per pass: packing it would
  // cost as much as using it. Where B's rows are contiguous the micro-kernel reads B in
  // place, and only a partial last panel (fewer than NR columns) is packed.
  const bool b_in_place = m_blocks == 1 && b.col_stride == 1;
  AlignedBuffer<T> packed_b(b_in_place ? 0 : blk.kc * round_up(std::min(N, blk.nc), nr));

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
      const T* tile_bias_base = (pc + kc == K) ? bias.get() : nullptr;
      T* row_sums_pass = (jc == 0) ? args.a_row_sums : nullptr;

      if (!b_in_place) {
        at::parallel_for(0, n_panels, parallel ? 4 : n_panels, [&](int64_t begin, int64_t end) {
          for (int64_t jp = begin; jp < end; ++jp)
            pack_b_panel(b, pc, kc, jc + jp * nr, nr, packed_b.get() + jp * nr * kc);
        });
      }

      at::parallel_for(0, tasks, parallel ? 1 : tasks, [&](int64_t begin, int64_t end) {
        AlignedBuffer<T> packed_a(mc_step * kc);
        AlignedBuffer<T> edge_panel(b_in_place ? kc * nr : 0);
        alignas(kCacheLine) T tile[kMaxTileElements];
        for (int64_t task = begin; task < end; ++task) {
          const int64_t ic = (task / n_chunks) * mc_step;
          const int64_t chunk = task % n_chunks;
          const int64_t mc = std::min(mc_step, M - ic);
          T* sums = (row_sums_pass && chunk == 0) ? row_sums_pass + ic : nullptr;
          pack_a_block(a, ic, mc, pc, kc, mr, packed_a.get(), sums);

          const int64_t jp_end = std::min(n_panels, (chunk + 1) * panels_per_chunk);
          for (int64_t jp = chunk * panels_per_chunk; jp < jp_end; ++jp) {
            const int64_t j = jc + jp * nr;
            const int64_t cols = std::min(nr, N - j);
            const T* b_panel = packed_b.get() + jp * nr * kc;
            int64_t ldb = nr;
            if (b_in_place && cols == nr) {
              b_panel = &b(pc, j);
              ldb = b.row_stride;
            } else if (b_in_place) {
              pack_b_panel(b, pc, kc, j, nr, edge_panel.get());
              b_panel = edge_panel.get();
            }
            const T* tile_bias = tile_bias_base ? tile_bias_base + j : nullptr;
            for (int64_t i0 = 0; i0 < mc; i0 += mr) {
              const int64_t rows = std::min(mr, mc - i0);
              const T* a_panel = packed_a.get() + i0 * kc;
              T* c = args.c + (ic + i0) * args.ldc + j;
              if (rows == mr && cols == nr) {
                kernel.run(kc, a_panel, b_panel, ldb, c, args.ldc, accumulate, tile_bias);
              } else {
                kernel.run(kc, a_panel, b_panel, ldb, tile, nr, false, tile_bias);
                for (int64_t r = 0; r < rows; ++r)
                  for (int64_t q = 0; q < cols; ++q) {
                    const T value = tile[r * nr + q];
                    c[r * args.ldc + q] = accumulate ? c[r * args.ldc + q] + value : value;
                  }
              }
              if (epilogue && pc + kc == K) gemm_epilogue(args, ic + i0, j, rows, cols);
            }
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

// Products this small cost less than packing them: they take the direct loop, which also
// rounds like torch's own small matmuls (a multiply and an add per term, in k order).
constexpr int64_t kDirectPathMaxMultiplyAdds = 4096;
// The dot path pays off while few rows of A share each element of B (measured: up to
// about 256 rows for W of 4096 x 4096, where the packed path catches up), and while k is
// long enough to amortize the horizontal sums of its accumulators.
constexpr int64_t kDotPathMaxRows = 192;
constexpr int64_t kDotPathMinDepth = 64;

template <typename T>
void gemm(const GemmArgs<T>& args) {
  const int64_t M = args.a.rows, K = args.a.cols, N = args.b.cols;
  const MicroKernelSet* kernels = selected_microkernels();
  if (kernels == nullptr || multiply_adds(M, N, K) <= kDirectPathMaxMultiplyAdds) {
    gemm_reference(args);
    if (has_epilogue(args)) gemm_epilogue(args, 0, 0, M, N);
    return;
  }
  if (M == 0) return;
  if (N == 0 || K == 0) {
    fill_with_bias(args, M, N);
    if (has_epilogue(args)) gemm_epilogue(args, 0, 0, M, N);
    if (args.a_row_sums) row_sums(args.a, args.a_row_sums);
    return;
  }
  const bool operands_contiguous_along_k = args.a.col_stride == 1 && args.b.row_stride == 1;
  const bool dot_path = operands_contiguous_along_k && args.a_row_sums == nullptr && M <= kDotPathMaxRows &&
                        K >= kDotPathMinDepth;
  if constexpr (std::is_same_v<T, float>) {
    if (!dot_path) return gemm_blocked(args, kernels->f32);
    gemm_dot(args, M < kernels->dot_f32.mr ? kernels->dot_row_f32 : kernels->dot_f32);
  } else {
    if (!dot_path) return gemm_blocked(args, kernels->f64);
    gemm_dot(args, M < kernels->dot_f64.mr ? kernels->dot_row_f64 : kernels->dot_f64);
  }
}

template void gemm<float>(const GemmArgs<float>&);
template void gemm<double>(const GemmArgs<double>&);
template void gemm_epilogue<float>(const GemmArgs<float>&, int64_t, int64_t, int64_t, int64_t);
template void gemm_epilogue<double>(const GemmArgs<double>&, int64_t, int64_t, int64_t, int64_t);
template void row_sums<float>(const MatrixView<float>&, float*);
template void row_sums<double>(const MatrixView<double>&, double*);

}  // namespace pylibnn::cpu
