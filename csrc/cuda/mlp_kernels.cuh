// CUDA kernels of the fused MLP ops for widths up to 128: pure compute, no allocation, no
// argument checks (csrc/cuda/mlp_cuda.cu checks, allocates and launches them).
//
//   mlp_forward_fused_kernel   every layer of an MLP for a tile of rows per block: output,
//                              and hidden (mlp_layout.h) when asked
//   mlp_backward_fused_kernel  the reverse pass: grad_input, and per-block partial sums of
//                              every dW_l, db_l
//   reduce_partials_kernel     the partial sums added over the blocks in block order
//
// Strategy. A block of 256 threads (8 warps x 32 lanes) owns a tile of ROWS rows; the
// tile's activations stay in shared memory from layer to layer, so the only global
// traffic is the input, the weights (staged through shared memory in chunks of CHUNK rows
// or columns), hidden, and the outputs.
//   forward:  thread (warp, lane) owns rows warp + 8 i and columns lane + 32 j (j < 4) of
//             the layer's (ROWS, N_l) output in registers; after a barrier (every read of
//             a_{l-1} done) it stores act(z) over a_{l-1} in place, so one (ROWS, 128)
//             buffer serves every layer. Per k it reads ROWS / 8 activations (a warp-wide
//             broadcast) and 4 weights (consecutive words) for 4 ROWS / 8 FMAs.
//   backward: (ROWS, 128) tiles of dz_l and of a_{l-1} in shared memory. dW_l (N_l, K_l)
//             in passes of 32 rows, each thread 4 x 4 of them; db_l one thread per column;
//             da_{l-1} = dz_l @ W_l as in the forward, the derivative applied as it is
//             stored (dz_{l-1} replaces dz_l in place after a barrier).
//   Determinism: no atomics. Each block walks a fixed run of row tiles and keeps its dW_l,
//   db_l in its own row of a partials buffer (plain stores on its first tile, then
//   read-add-write by the same thread); reduce_partials_kernel adds the rows in block
//   order. The host derives the number of blocks from the shapes alone, so results are
//   bitwise reproducible from run to run and GPU to GPU.
//   Shared memory (static, limit 48 KiB): forward ROWS x 128 + CHUNK x 130 elements,
//   backward 2 ROWS x 128 + CHUNK x 128; FusedMlpTile's sizes give 40.1 KiB (forward) and
//   40 KiB (backward) for both float and double.
//   Edges: rows past M are loaded as zeros and never stored (the forward stores hidden's
//   padding rows [M, Mp) and columns [N_l, P(N_l)) as zeros); columns past a width, up to
//   the next multiple of 32, are staged in shared memory as zeros (the last column group's
//   lanes multiply them and discard the sums); widths of 0 and 1 work; row and element
//   offsets into global memory are int64_t.
#pragma once

#include <cstdint>

#include "activation.h"
#include "cuda/device.h"
#include "mlp_layout.h"

namespace pylibnn::cuda {

constexpr int kFusedMaxWidth = 128;  // widest K_0 / N_l the fused kernels take
constexpr int kFusedMaxLayers = 32;  // layer descriptors travel in the kernel parameters (4 KiB)
constexpr int kFusedLanes = 32;
constexpr int kFusedWarps = 8;
constexpr int kFusedThreads = kFusedLanes * kFusedWarps;
constexpr int kFusedColGroups = kFusedMaxWidth / kFusedLanes;  // columns per thread: lane + 32 j
// The backward's blocks (and so the rows of its partials buffer) are capped at this many,
// and further so that the partials stay within kFusedPartialsBudget elements (but never
// below kFusedMinBackwardBlocks blocks); a block then walks several row tiles. Both derive
// from the shapes alone, never from the device, for determinism.
constexpr int64_t kFusedMaxBackwardBlocks = 256;
constexpr int64_t kFusedMinBackwardBlocks = 16;
constexpr int64_t kFusedPartialsBudget = int64_t(1) << 24;  // 64 MiB of float, 128 MiB of double

// Rows per block and weight rows / columns per shared-memory chunk, per dtype, sized so
// every kernel stays well under 48 KiB of static shared memory (see the file header).
template <typename T>
struct FusedMlpTile;
template <>
struct FusedMlpTile<float> {
  static constexpr int FORWARD_ROWS = 64;
  static constexpr int BACKWARD_ROWS = 32;
  static constexpr int CHUNK = 16;
};
template <>
struct FusedMlpTile<double> {
  static constexpr int FORWARD_ROWS = 32;
  static constexpr int BACKWARD_ROWS = 16;
  static constexpr int CHUNK = 8;
};

// One layer as the fused kernels see it.
template <typename T>
struct FusedLayer {
  const T* weight;             // (n, k), contiguous
  const T* bias;               // (n) with stride bias_stride, or nullptr
  int64_t bias_stride;
  int n;                       // N_l
  int k;                       // K_l
  int padded_n;                // padded_width(N_l): the width of its hidden bands
  int64_t z_offset;            // hidden columns of z_l and a_l (hidden layers only)
  int64_t y_offset;
  int64_t grad_weight_offset;  // backward: where dW_l (n x k) starts in a partials row
  int64_t grad_bias_offset;    //           where db_l (n) starts, or -1 when not wanted
};

template <typename T>
struct FusedMlpParams {
  FusedLayer<T> layers[kFusedMaxLayers];
  int num_layers;
  Activation activation;
  int64_t M;
  int64_t hidden_rows;      // layout.rows (>= M): rows of hidden the forward writes
  int64_t hidden_ld;        // hidden.size(1)
  const T* input;           // (M, K_0), strided
  int64_t input_row_stride;
  int64_t input_col_stride;
  // forward
  T* output;                // (M, N_{L-1}), contiguous
  T* hidden;                // (hidden_rows, hidden_ld), or nullptr when not saved
  // backward
  const T* grad_output;     // (M, N_{L-1}), strided
  int64_t grad_output_row_stride;
  int64_t grad_output_col_stride;
  const T* saved_hidden;    // what the forward saved
  T* grad_input;            // (M, K_0), contiguous, or nullptr when not wanted
  T* partials;              // (gridDim.x, partials_stride)
  int64_t partials_stride;
  int64_t row_tiles;        // ceil(M / BACKWARD_ROWS)
  int64_t tiles_per_block;
};

// All layers of an MLP for ROWS rows per block. See the file header.
template <typename T, int ROWS, int CHUNK>
__global__ void __launch_bounds__(kFusedThreads) mlp_forward_fused_kernel(const __grid_constant__ FusedMlpParams<T> p) {
  constexpr int ROW_GROUPS = ROWS / kFusedWarps;  // rows per thread: warp + 8 i
  static_assert(ROWS % kFusedWarps == 0, "every warp owns the same rows");
  static_assert(ROWS % kHiddenRowMultiple == 0, "the tiles cover hidden's padding rows");
  // The tile's activations: a_{l-1} while layer l reads it, then a_l.
  PYLIBNN_SHARED(T, activations, [ROWS][kFusedMaxWidth]);
  // w_chunk[kk][n] = W_l[n][k0 + kk]. Rows of 130: the staging stores (16 consecutive kk of
  // one n, then the next n) fall in distinct banks for float.
  PYLIBNN_SHARED(T, w_chunk, [CHUNK][kFusedMaxWidth + 2]);

  const int tid = threadIdx.x;
  const int lane = tid % kFusedLanes;
  const int warp = tid / kFusedLanes;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * ROWS;

  // The input tile; rows past M are zeros (computed on, never stored).
  const int k_in = p.layers[0].k;
  for (int e = tid; e < ROWS * k_in; e += kFusedThreads) {
    const int r = e / k_in, k = e % k_in;  // consecutive threads walk a row: coalesced
    const int64_t row = row0 + r;
    activations[r][k] = row < p.M ? p.input[row * p.input_row_stride + k * p.input_col_stride] : T(0);
  }
  // No barrier needed here: layer 0 reads the tile only after its first chunk's barrier.

  for (int l = 0; l < p.num_layers; ++l) {
    const FusedLayer<T>& layer = p.layers[l];
    const int N = layer.n, K = layer.k;
    const int col_groups = (N + kFusedLanes - 1) / kFusedLanes;  // uniform: skips idle groups

    T acc[ROW_GROUPS][kFusedColGroups];
#pragma unroll
    for (int i = 0; i < ROW_GROUPS; ++i) {
#pragma unroll
      for (int j = 0; j < kFusedColGroups; ++j) acc[i][j] = T(0);
    }

    // Columns [N, staged_n) of the chunk are staged as zeros: the last column group's lanes
    // past N multiply them (their sums are never stored, but they must not read garbage).
    const int staged_n = col_groups * kFusedLanes;
    for (int k0 = 0; k0 < K; k0 += CHUNK) {
      const int kc = min(CHUNK, K - k0);
      // Consecutive threads walk k, along which W is contiguous.
      for (int e = tid; e < kc * staged_n; e += kFusedThreads) {
        const int n = e / kc, kk = e % kc;
        w_chunk[kk][n] = n < N ? layer.weight[static_cast<int64_t>(n) * K + k0 + kk] : T(0);
      }
      __syncthreads();  // the chunk is complete before anyone reads it
      for (int kk = 0; kk < kc; ++kk) {
        T a[ROW_GROUPS];
#pragma unroll
        for (int i = 0; i < ROW_GROUPS; ++i) a[i] = activations[warp + i * kFusedWarps][k0 + kk];  // broadcast
#pragma unroll
        for (int j = 0; j < kFusedColGroups; ++j) {
          if (j >= col_groups) break;
          const T w = w_chunk[kk][lane + j * kFusedLanes];  // zero for columns >= N
#pragma unroll
          for (int i = 0; i < ROW_GROUPS; ++i) acc[i][j] += a[i] * w;
        }
      }
      // Everyone is done with the chunk (and, after the last one, with a_{l-1}) before the
      // next chunk or the epilogue below overwrites it. With K == 0 nothing was read.
      __syncthreads();
    }

    // Epilogue. Hidden layers: a_l = act(z_l) replaces a_{l-1} in shared memory, and both go
    // to hidden's bands, padding (columns [N, padded_n), rows [M, hidden_rows)) as zeros.
    // The last layer: z goes to the output.
    const bool last = l == p.num_layers - 1;
    const int store_groups = last ? col_groups : (layer.padded_n + kFusedLanes - 1) / kFusedLanes;
#pragma unroll
    for (int i = 0; i < ROW_GROUPS; ++i) {
      const int r = warp + i * kFusedWarps;
      const int64_t row = row0 + r;
#pragma unroll
      for (int j = 0; j < kFusedColGroups; ++j) {
        if (j >= store_groups) break;
        const int col = lane + j * kFusedLanes;
        const bool inside = row < p.M && col < N;
        T z = acc[i][j];
        if (col < N && layer.bias != nullptr) z += layer.bias[col * layer.bias_stride];
        if (last) {
          if (inside) p.output[row * N + col] = z;
          continue;
        }
        if (col >= layer.padded_n) continue;  // the last group may reach past the band
        const T y = apply_activation(p.activation, z);
        if (col < N) activations[r][col] = y;
        if (p.hidden != nullptr && row < p.hidden_rows) {
          T* hidden_row = p.hidden + row * p.hidden_ld;
          hidden_row[layer.z_offset + col] = inside ? z : T(0);
          if (layer.y_offset != layer.z_offset) hidden_row[layer.y_offset + col] = inside ? y : T(0);
        }
      }
    }
    // No barrier needed here either: layer l + 1 reads a_l only after its first chunk's
    // barrier, and (K_{l+1} = N_l == 0) there is nothing to read.
  }
}

// The reverse pass of all layers; block b walks row tiles [b * tiles_per_block, ...) and
// accumulates its dW_l, db_l in row b of the partials. See the file header.
template <typename T, int ROWS, int CHUNK>
__global__ void __launch_bounds__(kFusedThreads) mlp_backward_fused_kernel(const __grid_constant__ FusedMlpParams<T> p) {
  constexpr int ROW_GROUPS = ROWS / kFusedWarps;
  constexpr int GRAD_N_GROUPS = 4;  // dW: thread (warp, lane) owns n = n0 + warp + 8 i, i < 4
  constexpr int GRAD_N_BLOCK = GRAD_N_GROUPS * kFusedWarps;  // 32 rows of dW per pass
  static_assert(ROWS % kFusedWarps == 0, "every warp owns the same rows");
  PYLIBNN_SHARED(T, grad, [ROWS][kFusedMaxWidth]);     // dz_l of the tile, then dz_{l-1}
  PYLIBNN_SHARED(T, prev, [ROWS][kFusedMaxWidth]);     // a_{l-1} of the tile (the input for l = 0)
  PYLIBNN_SHARED(T, w_chunk, [CHUNK][kFusedMaxWidth]);  // w_chunk[nn][k] = W_l[n0 + nn][k]

  const int tid = threadIdx.x;
  const int lane = tid % kFusedLanes;
  const int warp = tid / kFusedLanes;
  const int64_t first_tile = static_cast<int64_t>(blockIdx.x) * p.tiles_per_block;
  const int64_t end_tile = min(first_tile + p.tiles_per_block, p.row_tiles);
  T* const partial = p.partials + static_cast<int64_t>(blockIdx.x) * p.partials_stride;
  const int last_layer = p.num_layers - 1;

  for (int64_t tile = first_tile; tile < end_tile; ++tile) {
    // This block's first tile stores its partial sums, later ones add to them: every
    // partial element is owned by one thread of one block, in a fixed order.
    const bool first = tile == first_tile;
    const int64_t row0 = tile * ROWS;

    // dz_{L-1} = grad_output; rows past M, and columns up to the next multiple of 32 (read
    // by the dW passes' last row group), are zeros, so they add nothing below.
    {
      const int n_out = p.layers[last_layer].n;
      const int staged_n = (n_out + kFusedLanes - 1) / kFusedLanes * kFusedLanes;
      for (int e = tid; e < ROWS * staged_n; e += kFusedThreads) {
        const int r = e / staged_n, n = e % staged_n;
        const int64_t row = row0 + r;
        grad[r][n] = row < p.M && n < n_out
                         ? p.grad_output[row * p.grad_output_row_stride + n * p.grad_output_col_stride]
                         : T(0);
      }
    }

    for (int l = last_layer; l >= 0; --l) {
      const FusedLayer<T>& layer = p.layers[l];
      const int N = layer.n, K = layer.k;
      const int k_groups = (K + kFusedLanes - 1) / kFusedLanes;
      // Columns [K, staged_k) of prev and of the weight chunks are staged as zeros: the last
      // group's lanes past K multiply them (their sums are never stored).
      const int staged_k = k_groups * kFusedLanes;

      // a_{l-1}: the input for layer 0, else hidden's a band of layer l - 1.
      const T* prev_band = l > 0 ? p.saved_hidden + p.layers[l - 1].y_offset : nullptr;
      for (int e = tid; e < ROWS * staged_k; e += kFusedThreads) {
        const int r = e / staged_k, k = e % staged_k;
        const int64_t row = row0 + r;
        T v = T(0);
        if (row < p.M && k < K) {
          v = l > 0 ? prev_band[row * p.hidden_ld + k] : p.input[row * p.input_row_stride + k * p.input_col_stride];
        }
        prev[r][k] = v;
      }
      __syncthreads();  // grad (dz_l) and prev (a_{l-1}) are complete

      // dW_l += dz_l^T @ a_{l-1} over the tile's rows, 32 rows of dW per pass.
      for (int n0 = 0; n0 < N; n0 += GRAD_N_BLOCK) {
        T acc[GRAD_N_GROUPS][kFusedColGroups];
#pragma unroll
        for (int i = 0; i < GRAD_N_GROUPS; ++i) {
#pragma unroll
          for (int j = 0; j < kFusedColGroups; ++j) acc[i][j] = T(0);
        }
        for (int r = 0; r < ROWS; ++r) {
          T g[GRAD_N_GROUPS];
#pragma unroll
          for (int i = 0; i < GRAD_N_GROUPS; ++i) g[i] = grad[r][n0 + warp + i * kFusedWarps];  // broadcast
#pragma unroll
          for (int j = 0; j < kFusedColGroups; ++j) {
            if (j >= k_groups) break;
            const T a = prev[r][lane + j * kFusedLanes];
#pragma unroll
            for (int i = 0; i < GRAD_N_GROUPS; ++i) acc[i][j] += g[i] * a;
          }
        }
#pragma unroll
        for (int i = 0; i < GRAD_N_GROUPS; ++i) {
          const int n = n0 + warp + i * kFusedWarps;
          if (n >= N) break;
#pragma unroll
          for (int j = 0; j < kFusedColGroups; ++j) {
            const int k = lane + j * kFusedLanes;
            if (j >= k_groups) break;
            if (k >= K) continue;
            T& slot = partial[layer.grad_weight_offset + static_cast<int64_t>(n) * K + k];
            slot = first ? acc[i][j] : slot + acc[i][j];
          }
        }
      }

      // db_l += dz_l^T @ 1, each column by one thread in row order.
      if (layer.grad_bias_offset >= 0) {
        for (int n = tid; n < N; n += kFusedThreads) {
          T sum = T(0);
          for (int r = 0; r < ROWS; ++r) sum += grad[r][n];
          T& slot = partial[layer.grad_bias_offset + n];
          slot = first ? sum : slot + sum;
        }
      }

      // da_{l-1} = dz_l @ W_l (ROWS x K), over N in chunks of CHUNK weight rows; then
      // dz_{l-1} = da_{l-1} * act'(z_{l-1}) replaces dz_l, or da_{-1} goes to grad_input.
      // (The condition is uniform over the block, so the barriers inside are reached by all.)
      if (l > 0 || p.grad_input != nullptr) {
        T acc[ROW_GROUPS][kFusedColGroups];
#pragma unroll
        for (int i = 0; i < ROW_GROUPS; ++i) {
#pragma unroll
          for (int j = 0; j < kFusedColGroups; ++j) acc[i][j] = T(0);
        }
        for (int n0 = 0; n0 < N; n0 += CHUNK) {
          const int nc = min(CHUNK, N - n0);
          for (int e = tid; e < nc * staged_k; e += kFusedThreads) {
            const int nn = e / staged_k, k = e % staged_k;  // along a row of W: coalesced, no bank conflicts
            w_chunk[nn][k] = k < K ? layer.weight[static_cast<int64_t>(n0 + nn) * K + k] : T(0);
          }
          __syncthreads();  // the chunk is complete before anyone reads it
          for (int nn = 0; nn < nc; ++nn) {
            T g[ROW_GROUPS];
#pragma unroll
            for (int i = 0; i < ROW_GROUPS; ++i) g[i] = grad[warp + i * kFusedWarps][n0 + nn];  // broadcast
#pragma unroll
            for (int j = 0; j < kFusedColGroups; ++j) {
              if (j >= k_groups) break;
              const T w = w_chunk[nn][lane + j * kFusedLanes];
#pragma unroll
              for (int i = 0; i < ROW_GROUPS; ++i) acc[i][j] += g[i] * w;
            }
          }
          __syncthreads();  // everyone is done with the chunk before the next one overwrites it
        }
        // The chunk loop's last barrier follows every read of grad (dW, db and da above),
        // so it may be overwritten now; with N == 0 nothing read it.
        const T* z_band = l > 0 ? p.saved_hidden + p.layers[l - 1].z_offset : nullptr;
#pragma unroll
        for (int i = 0; i < ROW_GROUPS; ++i) {
          const int r = warp + i * kFusedWarps;
          const int64_t row = row0 + r;
#pragma unroll
          for (int j = 0; j < kFusedColGroups; ++j) {
            const int k = lane + j * kFusedLanes;
            if (j >= k_groups) break;
            if (l > 0) {
              T dz = T(0);  // rows past M and columns past K (the next layer's dW reads them) stay zero
              if (row < p.M && k < K) {
                const T z = z_band[row * p.hidden_ld + k];
                dz = activation_gradient(p.activation, acc[i][j], z, prev[r][k]);
              }
              grad[r][k] = dz;
            } else if (row < p.M && k < K) {
              p.grad_input[row * K + k] = acc[i][j];
            }
          }
        }
      }
      // dz_{l-1} is complete, and every read of prev is done before the next layer (or
      // tile) restages it.
      __syncthreads();
    }
  }
}

// out[s] = sum over b < blocks of partials[b * stride + offset + s], in b order.
template <typename T>
__global__ void __launch_bounds__(256)
    reduce_partials_kernel(const T* partials, int64_t blocks, int64_t stride, int64_t offset, int64_t count,
                           T* out) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t s = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; s < count; s += step) {
    T sum = T(0);
    for (int64_t b = 0; b < blocks; ++b) sum += partials[b * stride + offset + s];  // coalesced over s
    out[s] = sum;
  }
}


}  // namespace pylibnn::cuda
