// The CPU backend's fused MLP ops (cpu_backend.h; schemas in ops/op_list.h, hidden layout in
// mlp_layout.h).
//   mlp_forward   z_l = a_{l-1} W_l^T + b_l,  a_l = act(z_l)  (a_{-1} = x; no act after the last layer)
//                 x (M, K_0), W_l (N_l, K_l) with K_{l+1} = N_l  ->  output z_{L-1} (M, N_{L-1}), hidden
//   mlp_backward  dz_{L-1} = dy;  dW_l = dz_l^T a_{l-1};  db_l = dz_l^T 1;  da_{l-1} = dz_l W_l;
//                 dz_{l-1} = da_{l-1} * act'(z_{l-1})
//
// Strategy: the rows are cut into tiles (a multiple of 8 rows, sized so that one tile's
// activations of every layer stay in L2, and as many tiles as a multiple of the thread
// count). A thread carries a tile through every layer (forward) or every layer in reverse
// (backward) before it takes the next, so intermediate activations are written and read
// back while they are still in cache, and a whole network costs one op call instead of a
// dispatch, an allocation and a thread hand-off per layer (what dominates small networks).
//
// Each layer of a tile is a small GEMM of panel micro-kernels (gemm_microkernels.h): 4 rows
// by up to 4 vectors of columns, A read through its strides, B rows of whole vectors:
//   forward   C = z_l tile          A = a_{l-1} tile        B = W_l^T, padded to whole vectors
//   dW        C = dW_l partial      A = dz_l^T (transposed) B = a_{l-1} tile
//   da        C = da_{l-1} tile     A = dz_l                B = W_l, padded
// The forward kernel's epilogue adds the bias and stores z_l and act(z_l) into hidden's
// bands from the same registers. The weights are re-laid once per call (a few KiB for such
// networks). Weight and bias gradients are summed per part (a fixed range of tiles) and the
// parts are added in order, so the result does not depend on which thread ran which part
// (the parts themselves follow the thread count). Networks of at most 4096 multiply-adds
// take the portable kernels (see kPortableMaxMultiplyAdds).
#include <algorithm>
#include <cstring>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "cpu/cpu_backend.h"
#include "cpu/cpu_isa.h"
#include "mlp_layout.h"

namespace pylibnn::cpu {
namespace {

// Below this many multiply-adds (of the forward) a call runs on one thread: waking the
// other threads costs more than they save (measured with 2 threads: 3-64-64-64-3 gains
// from batch 64 on, 548K multiply-adds, not at batch 32, 274K; 2-32-32-1 gains at batch 256,
// 286K, loses at 64).
constexpr int64_t kParallelMinMultiplyAdds = 280 * 1000;
// Bytes of activations one tile may hold (its share of a 1 MiB L2).
constexpr int64_t kTileBytes = 256 * 1024;

// C (rows x width) = [bias +] A (rows x depth) @ B (depth x width): rows a multiple of the
// kernel's MR, width a multiple of its lanes; with y, also y = act(C) (the epilogue).
// Column blocks outermost, so a depth x block panel of B stays in L1 while every row group
// of A passes over it.
template <typename T>
void panel_gemm(const PanelKernels<T>& kernels, int64_t rows, int64_t width, int64_t depth, const T* a,
                int64_t a_row_stride, int64_t a_col_stride, const T* b, int64_t ldb, T* c, int64_t ldc,
                bool accumulate, const T* bias, Activation act = Activation::None, T* y = nullptr, int64_t ldy = 0) {
  const int64_t block = kernels.max_vectors * kernels.lanes;
  for (int64_t j = 0; j < width; j += block) {
    const int64_t vectors = std::min(block, width - j) / kernels.lanes;
    const PanelKernelFn<T> run = kernels.run[vectors - 1];
    for (int64_t i = 0; i < rows; i += kernels.mr) {
      run(depth, a + i * a_row_stride, a_row_stride, a_col_stride, b + j, ldb, c + i * ldc + j, ldc, accumulate,
          bias ? bias + j : nullptr, act, y ? y + i * ldy + j : nullptr, ldy);
    }
  }
}

// The shapes of one call, with the column widths the kernels compute (whole vectors).
struct MlpShape {
  int64_t M = 0;
  std::vector<int64_t> in;     // K_l
  std::vector<int64_t> out;    // N_l
  std::vector<int64_t> in_padded;   // K_l rounded up to whole vectors
  std::vector<int64_t> out_padded;  // N_l rounded up to whole vectors
  int64_t layers() const { return static_cast<int64_t>(out.size()); }
};

MlpShape mlp_shape(int64_t M, int64_t K0, const std::vector<int64_t>& widths, int64_t lanes) {
  MlpShape s;
  s.M = M;
  int64_t fan_in = K0;
  for (int64_t n : widths) {
    s.in.push_back(fan_in);
    s.out.push_back(n);
    s.in_padded.push_back(round_up(fan_in, lanes));
    s.out_padded.push_back(round_up(n, lanes));
    fan_in = n;
  }
  return s;
}

// Row tiles: at most rows_cap rows each (a multiple of 8), as many as a multiple of the
// thread count when there are several.
struct Tiling {
  int64_t rows;   // per tile (the last may have fewer)
  int64_t count;
  int64_t parts;  // ranges of tiles run as one task
};

Tiling tiling_for(int64_t M, int64_t bytes_per_row, int64_t threads) {
  const int64_t rows_cap = std::clamp<int64_t>(kTileBytes / std::max<int64_t>(bytes_per_row, 1) / 8 * 8, 8, 512);
  int64_t count = ceil_div(M, rows_cap);
  if (threads > 1 && count > 0) count = round_up(count, threads);
  const int64_t rows = std::max<int64_t>(8, round_up(ceil_div(std::max<int64_t>(M, 1), std::max<int64_t>(count, 1)), 8));
  count = ceil_div(M, rows);
  return {rows, count, std::max<int64_t>(1, std::min(threads, count))};
}

// Networks this small (the tutorial's: 4 rows of 1 -> 3 -> 3 -> 2) take the portable panel
// kernels: their separate multiply and add round like torch's own small matmuls, so the
// tutorial's training run matches the reference's losses to the last bits rather than to
// the ~1e-5 that FMA rounding drifts to over 200 steps. (The GEMM engine's direct path,
// same threshold.)
constexpr int64_t kPortableMaxMultiplyAdds = 4096;

template <typename T>
const PanelKernels<T>& mlp_panel_kernels(int64_t M, int64_t K0, const std::vector<int64_t>& widths) {
  int64_t per_row = 0, fan_in = K0;
  for (int64_t n : widths) {
    per_row += fan_in * n;
    fan_in = n;
  }
  const bool tiny = M * per_row <= kPortableMaxMultiplyAdds;
  return panel_kernels<T>(tiny ? portable_microkernels() : fused_microkernels());
}

int64_t multiply_adds(const MlpShape& s) {
  int64_t per_row = 0;
  for (int64_t l = 0; l < s.layers(); ++l) per_row += s.in[l] * s.out[l];
  return s.M * per_row;
}

// W_l^T (K_l x N_l padded) and W_l (N_l x K_l padded), zero-filled past the widths; the
// biases padded likewise (zeros where a layer has none).
template <typename T>
struct PackedWeights {
  std::vector<T> storage;
  std::vector<const T*> transposed, rows, bias;
};

template <typename T>
PackedWeights<T> pack_weights(const MlpShape& s, at::TensorList weights, const std::vector<const T*>& biases,
                              const std::vector<int64_t>& bias_strides, bool transposed, bool rows) {
  PackedWeights<T> packed;
  int64_t total = 0;
  for (int64_t l = 0; l < s.layers(); ++l) {
    total += (transposed ? s.in[l] * s.out_padded[l] : 0) + (rows ? s.out[l] * s.in_padded[l] : 0) + s.out_padded[l];
  }
  packed.storage.assign(static_cast<size_t>(total), T(0));
  T* next = packed.storage.data();
  for (int64_t l = 0; l < s.layers(); ++l) {
    const at::Tensor& w = weights[l];
    const T* wp = w.const_data_ptr<T>();
    const int64_t rs = w.stride(0), cs = w.stride(1);
    const int64_t N = s.out[l], K = s.in[l];
    if (transposed) {
      // In 16 x 16 blocks: both the reads of W's rows and the writes of W^T's rows stay in
      // a few cache lines (a plain double loop strides one of them by a whole row).
      const int64_t ld = s.out_padded[l];
      for (int64_t n0 = 0; n0 < N; n0 += 16)
        for (int64_t k0 = 0; k0 < K; k0 += 16)
          for (int64_t n = n0; n < std::min(N, n0 + 16); ++n)
            for (int64_t k = k0; k < std::min(K, k0 + 16); ++k) next[k * ld + n] = wp[n * rs + k * cs];
      packed.transposed.push_back(next);
      next += K * s.out_padded[l];
    } else {
      packed.transposed.push_back(nullptr);
    }
    if (rows) {
      for (int64_t n = 0; n < N; ++n)
        for (int64_t k = 0; k < K; ++k) next[n * s.in_padded[l] + k] = wp[n * rs + k * cs];
      packed.rows.push_back(next);
      next += N * s.in_padded[l];
    } else {
      packed.rows.push_back(nullptr);
    }
    if (biases[l]) {
      for (int64_t n = 0; n < N; ++n) next[n] = biases[l][n * bias_strides[l]];
    }
    packed.bias.push_back(next);
    next += s.out_padded[l];
  }
  return packed;
}

// Copies rows [r0, r0 + rows) of a strided (M, cols) tensor into a (rows_padded, ld) buffer,
// zeros in the padding rows and columns.
template <typename T>
void copy_tile(const at::Tensor& t, int64_t r0, int64_t rows, int64_t rows_padded, int64_t cols, T* dst, int64_t ld) {
  const T* src = t.const_data_ptr<T>();
  const int64_t rs = t.stride(0), cs = t.stride(1);
  for (int64_t r = 0; r < rows_padded; ++r) {
    T* d = dst + r * ld;
    if (r < rows) {
      for (int64_t c = 0; c < cols; ++c) d[c] = src[(r0 + r) * rs + c * cs];
      std::fill(d + cols, d + ld, T(0));
    } else {
      std::fill(d, d + ld, T(0));
    }
  }
}

template <typename T>
void mlp_forward_kernel(const MlpShape& s, const PanelKernels<T>& panel, const at::Tensor& input,
                        at::TensorList weights, const std::vector<const T*>& biases,
                        const std::vector<int64_t>& bias_strides, Activation act, const MlpHiddenLayout& layout,
                        T* hidden, T* output) {
  const int64_t L = s.layers();
  const PackedWeights<T> packed = pack_weights<T>(s, weights, biases, bias_strides, true, false);

  const int64_t x_ld = std::max<int64_t>(s.in_padded[0], 1);
  const int64_t out_ld = std::max<int64_t>(s.out_padded[L - 1], 1);
  const int64_t bytes_per_row = static_cast<int64_t>(sizeof(T)) * (layout.cols + x_ld + out_ld);
  const int64_t threads = multiply_adds(s) >= kParallelMinMultiplyAdds ? at::get_num_threads() : 1;
  const Tiling tiles = tiling_for(s.M, bytes_per_row, threads);
  const int64_t tiles_per_part = ceil_div(tiles.count, tiles.parts);
  const int64_t N_last = s.out[L - 1];

  at::parallel_for(0, tiles.parts, 1, [&](int64_t part_begin, int64_t part_end) {
    // Per task: the input tile, the last layer's tile, and (when hidden is not kept) the
    // hidden bands of one tile.
    std::vector<T> x_tile(tiles.rows * x_ld), out_tile(tiles.rows * out_ld);
    std::vector<T> hidden_tile(hidden ? 0 : tiles.rows * layout.cols);
    for (int64_t part = part_begin; part < part_end; ++part) {
      for (int64_t t = part * tiles_per_part; t < std::min(tiles.count, (part + 1) * tiles_per_part); ++t) {
        const int64_t r0 = t * tiles.rows;
        const int64_t rows = std::min(tiles.rows, s.M - r0);
        const int64_t rows_padded = round_up(rows, panel.mr);
        T* h = hidden ? hidden + r0 * layout.cols : hidden_tile.data();
        copy_tile<T>(input, r0, rows, rows_padded, s.in[0], x_tile.data(), x_ld);
        const T* a = x_tile.data();
        int64_t lda = x_ld;
        for (int64_t l = 0; l < L; ++l) {
          const bool last = l == L - 1;
          T* z = last ? out_tile.data() : h + layout.z_offset[l];
          const int64_t ldz = last ? out_ld : layout.cols;
          // Hidden layers write z and, from the same registers, act(z) (the epilogue).
          T* y = last ? nullptr : h + layout.y_offset[l];
          panel_gemm(panel, rows_padded, s.out_padded[l], s.in[l], a, lda, int64_t(1), packed.transposed[l],
                     s.out_padded[l], z, ldz, false, packed.bias[l], act, act == Activation::None ? nullptr : y,
                     layout.cols);
          if (last) break;
          a = y;
          lda = layout.cols;
        }
        if (hidden) {
          // hidden's padding is zero (mlp_layout.h), and hidden comes from at::empty: past
          // N_l in every band of the tile's rows, and whole bands in the rows this tile owns
          // past M (the last tile's, up to hidden's 8-row multiple).
          const int64_t rows_owned = std::min(tiles.rows, layout.rows - r0);
          for (int64_t r = 0; r < rows_owned; ++r) {
            T* row = h + r * layout.cols;
            for (int64_t l = 0; l + 1 < L; ++l) {
              const int64_t from = r < rows ? s.out[l] : 0, to = padded_width(s.out[l]);
              std::fill(row + layout.z_offset[l] + from, row + layout.z_offset[l] + to, T(0));
              if (act != Activation::None) std::fill(row + layout.y_offset[l] + from, row + layout.y_offset[l] + to, T(0));
            }
          }
        }
        for (int64_t r = 0; r < rows; ++r)
          std::memcpy(output + (r0 + r) * N_last, out_tile.data() + r * out_ld, sizeof(T) * N_last);
      }
    }
  });
}

template <typename T>
void mlp_backward_kernel(const MlpShape& s, const PanelKernels<T>& panel, const at::Tensor& grad_output,
                         const at::Tensor& input, at::TensorList weights, Activation act,
                         const MlpHiddenLayout& layout, const T* hidden, T* grad_input,
                         const std::vector<T*>& grad_weights, const std::vector<T*>& grad_biases) {
  const ActivationKernels<T>& activation = activation_kernels<T>(fused_microkernels());
  const int64_t L = s.layers();
  const int64_t mr = panel.mr;
  const std::vector<const T*> no_biases(L, nullptr);
  const PackedWeights<T> packed =
      pack_weights<T>(s, weights, no_biases, std::vector<int64_t>(L, 1), false, true);

  // One buffer of partial weight and bias gradients per part: dW_l (N_l rounded to MR rows,
  // K_l padded), db_l (N_l).
  std::vector<int64_t> dw_offset, db_offset;
  int64_t partial_size = 0;
  for (int64_t l = 0; l < L; ++l) {
    dw_offset.push_back(partial_size);
    partial_size += round_up(s.out[l], mr) * s.in_padded[l];
    db_offset.push_back(partial_size);
    partial_size += s.out[l];
  }
  int64_t widest = 1;  // columns of the dz / da tiles
  for (int64_t l = 0; l < L; ++l) widest = std::max({widest, s.out_padded[l], s.in_padded[l], round_up(s.out[l], mr)});
  const int64_t x_ld = std::max<int64_t>(s.in_padded[0], 1);
  const int64_t bytes_per_row = static_cast<int64_t>(sizeof(T)) * (layout.cols + x_ld + 2 * widest);
  const int64_t threads = multiply_adds(s) >= kParallelMinMultiplyAdds ? at::get_num_threads() : 1;
  const Tiling tiles = tiling_for(s.M, bytes_per_row, threads);
  const int64_t tiles_per_part = ceil_div(tiles.count, tiles.parts);
  std::vector<T> partials(static_cast<size_t>(tiles.parts * partial_size), T(0));
  const T* dy = grad_output.const_data_ptr<T>();
  const int64_t dy_rs = grad_output.stride(0), dy_cs = grad_output.stride(1);

  at::parallel_for(0, tiles.parts, 1, [&](int64_t part_begin, int64_t part_end) {
    std::vector<T> x_tile(tiles.rows * x_ld), dz(tiles.rows * widest, T(0)), da(tiles.rows * widest, T(0));
    for (int64_t part = part_begin; part < part_end; ++part) {
      T* partial = partials.data() + part * partial_size;
      for (int64_t t = part * tiles_per_part; t < std::min(tiles.count, (part + 1) * tiles_per_part); ++t) {
        const int64_t r0 = t * tiles.rows;
        const int64_t rows = std::min(tiles.rows, s.M - r0);
        const int64_t rows_padded = round_up(rows, mr);
        const T* h = hidden + r0 * layout.cols;
        copy_tile<T>(input, r0, rows, rows_padded, s.in[0], x_tile.data(), x_ld);
        // dz_{L-1} = dy; rows past the tile are zero so they add nothing to dW and db.
        const int64_t N_last = s.out[L - 1];
        for (int64_t r = 0; r < rows_padded; ++r)
          for (int64_t n = 0; n < N_last; ++n) dz[r * widest + n] = r < rows ? dy[(r0 + r) * dy_rs + n * dy_cs] : T(0);

        for (int64_t l = L - 1; l >= 0; --l) {
          const T* a_prev = l == 0 ? x_tile.data() : h + layout.y_offset[l - 1];
          const int64_t ld_prev = l == 0 ? x_ld : layout.cols;
          // dW_l += dz_l^T a_{l-1}: A(n, r) = dz[r, n], over the tile's rows only (the
          // padding rows of a_{l-1} may hold anything).
          panel_gemm(panel, round_up(s.out[l], mr), s.in_padded[l], rows, dz.data(), int64_t(1), widest, a_prev, ld_prev,
                     partial + dw_offset[l], s.in_padded[l], true, static_cast<const T*>(nullptr));
          T* db = partial + db_offset[l];
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t n = 0; n < s.out[l]; ++n) db[n] += dz[r * widest + n];
          if (l == 0 && grad_input == nullptr) break;
          // da_{l-1} = dz_l W_l
          panel_gemm(panel, rows_padded, s.in_padded[l], s.out[l], dz.data(), widest, int64_t(1), packed.rows[l],
                     s.in_padded[l], da.data(), widest, false, static_cast<const T*>(nullptr));
          if (l == 0) {
            for (int64_t r = 0; r < rows; ++r)
              std::memcpy(grad_input + (r0 + r) * s.in[0], da.data() + r * widest, sizeof(T) * s.in[0]);
            break;
          }
          // dz_{l-1} = da_{l-1} * act'(z_{l-1}) on the tile's rows; the padding rows stay zero.
          const int64_t width = s.in[l];
          if (act == Activation::None) {
            for (int64_t r = 0; r < rows; ++r) std::memcpy(dz.data() + r * widest, da.data() + r * widest, sizeof(T) * width);
          } else {
            activation.gradient(act, da.data(), widest, h + layout.z_offset[l - 1], layout.cols,
                                h + layout.y_offset[l - 1], layout.cols, dz.data(), widest, rows, width);
          }
          for (int64_t r = rows; r < rows_padded; ++r) std::fill(dz.data() + r * widest, dz.data() + (r + 1) * widest, T(0));
        }
      }
    }
  });

  // Parts in order: the same sums whichever thread ran each part. Rows of dW split over
  // the threads when there is enough of them.
  for (int64_t l = 0; l < L; ++l) {
    const int64_t N = s.out[l], K = s.in[l], ld = s.in_padded[l];
    const int64_t grain = threads > 1 ? std::max<int64_t>(1, 8192 / std::max<int64_t>(K, 1)) : std::max<int64_t>(N, 1);
    at::parallel_for(0, N, grain, [&](int64_t n_begin, int64_t n_end) {
      for (int64_t n = n_begin; n < n_end; ++n) {
        T* out = grad_weights[l] + n * K;
        const T* first = partials.data() + dw_offset[l] + n * ld;
        std::copy(first, first + K, out);
        for (int64_t p = 1; p < tiles.parts; ++p) {
          const T* part = first + p * partial_size;
          for (int64_t k = 0; k < K; ++k) out[k] += part[k];
        }
      }
    });
    if (grad_biases[l]) {
      for (int64_t n = 0; n < N; ++n) {
        T sum = 0;
        for (int64_t p = 0; p < tiles.parts; ++p) sum += partials[p * partial_size + db_offset[l] + n];
        grad_biases[l][n] = sum;
      }
    }
  }
}

}  // namespace

void CpuBackend::mlp_forward(const at::Tensor& input, at::TensorList weights,
                             const c10::List<std::optional<at::Tensor>>& biases, Activation act,
                             const at::Tensor& output, const at::Tensor& hidden) {
  const int64_t M = input.size(0);
  const std::vector<int64_t> widths = widths_of(weights);
  const MlpHiddenLayout layout(M, widths, act != Activation::None);
  // Every element of hidden is written by the kernel (its padding as zeros).
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "mlp_forward_cpu", [&] {
    const PanelKernels<scalar_t>& panel = mlp_panel_kernels<scalar_t>(M, input.size(1), widths);
    const MlpShape shape = mlp_shape(M, input.size(1), widths, panel.lanes);
    std::vector<const scalar_t*> bias_ptrs;
    std::vector<int64_t> bias_strides;
    for (size_t l = 0; l < biases.size(); ++l) {
      const std::optional<at::Tensor> b = biases.get(l);
      const bool has = b.has_value() && b->defined();
      bias_ptrs.push_back(has ? b->const_data_ptr<scalar_t>() : nullptr);
      bias_strides.push_back(has ? b->stride(0) : 1);
    }
    if (M == 0) return;
    mlp_forward_kernel<scalar_t>(shape, panel, input, weights, bias_ptrs, bias_strides, act, layout,
                                 hidden.defined() ? hidden.mutable_data_ptr<scalar_t>() : nullptr,
                                 output.mutable_data_ptr<scalar_t>());
  });
}

void CpuBackend::mlp_backward(const at::Tensor& grad_output, const at::Tensor& input, at::TensorList weights,
                              const at::Tensor& hidden, Activation act, const at::Tensor& grad_input,
                              const std::vector<at::Tensor>& grad_weights, const std::vector<at::Tensor>& grad_biases) {
  const int64_t M = input.size(0);
  const std::vector<int64_t> widths = widths_of(weights);
  const MlpHiddenLayout layout(M, widths, act != Activation::None);
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "mlp_backward_cpu", [&] {
    const PanelKernels<scalar_t>& panel = mlp_panel_kernels<scalar_t>(M, input.size(1), widths);
    const MlpShape shape = mlp_shape(M, input.size(1), widths, panel.lanes);
    std::vector<scalar_t*> gw, gb;
    for (size_t l = 0; l < weights.size(); ++l) {
      gw.push_back(grad_weights[l].mutable_data_ptr<scalar_t>());
      gb.push_back(grad_biases[l].defined() ? grad_biases[l].mutable_data_ptr<scalar_t>() : nullptr);
    }
    mlp_backward_kernel<scalar_t>(shape, panel, grad_output, input, weights, act, layout,
                                  hidden.const_data_ptr<scalar_t>(),
                                  grad_input.defined() ? grad_input.mutable_data_ptr<scalar_t>() : nullptr, gw, gb);
  });
}

}  // namespace pylibnn::cpu
