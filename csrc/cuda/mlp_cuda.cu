// CUDA implementations of the fused MLP ops (schemas: csrc/pylibnn.cpp, hidden layout:
// csrc/mlp_layout.h). Layer l of L maps a_{l-1} (M, K_l) to a_l (M, N_l), a_{-1} = input:
//   mlp_forward   z_l = a_{l-1} @ W_l^T + b_l;  a_l = act(z_l) for l < L-1;  output = z_{L-1}
//   mlp_backward  dz_{L-1} = grad_output, and for l = L-1 .. 0:
//                 dW_l = dz_l^T @ a_{l-1},  db_l = dz_l^T @ 1,  da_{l-1} = dz_l @ W_l,
//                 dz_{l-1} = da_{l-1} * act'(z_{l-1}, a_{l-1})   (z, a read from hidden)
//
// Two strategies, chosen on the shapes alone:
//  * Fused (K_0 and every N_l <= 128, L <= kMaxFusedLayers): one kernel launch runs every
//    layer. A block owns a tile of ROWS rows; the tile's activations stay in shared memory
//    from layer to layer, so the only global traffic is the input, the weights (staged
//    through shared memory in chunks of CHUNK rows or columns), hidden and the output.
//      forward:  256 threads = 8 warps x 32 lanes; thread (warp, lane) owns rows
//                warp + 8 i and columns lane + 32 j (j < 4) of the layer's output tile, in
//                registers; after a barrier (every read of a_{l-1} done) it stores act(z)
//                over a_{l-1} in place, so one (ROWS, 128) buffer serves all layers.
//      backward: the (ROWS, 128) tile of dz_l and of a_{l-1} in shared memory. Each block
//                walks a fixed run of row tiles and accumulates its dW_l / db_l into its
//                own row of a partials buffer (plain stores on its first tile, then
//                read-add-write by the same thread: no atomics); a second kernel adds the
//                rows of the partials in block order. The number of blocks and each one's
//                tiles depend on M only, so results are bitwise reproducible on any GPU.
//    Shared memory (static, under the 48 KiB limit): forward (ROWS x 128 + CHUNK x 130)
//    elements, backward (2 ROWS x 128 + CHUNK x 128); with the tile sizes of
//    FusedMlpTile: float 40.1 / 40 KiB, double 40.1 / 40 KiB.
//    Weights are read as contiguous (N, K) rows: the host makes .contiguous() copies of the
//    (at most 128 x 128) weights that are not; input and grad_output are read strided in
//    place.
//  * Per layer (anything wider or deeper): one GEMM launch per product (gemm_launch.h).
//    The forward GEMM's epilogue writes z_l and act(z_l) straight into hidden's bands
//    (leading dimension hidden.size(1)); the backward GEMM for da_{l-1} multiplies by
//    act'(z_{l-1}) in its epilogue, so dz_{l-1} is produced in one pass. Operands are strided
//    views, no copies.
// hidden: every element of it is written (padding rows and columns with zeros: the fused
// kernel stores them, the per-layer path allocates hidden zeroed), so even its padding is
// reproducible. bfloat16 / float16 run in float32 and round each output once
// (reduced_precision.h); hidden is returned in the input dtype and widened again by the
// backward.
//
// Only lean ATen/c10 headers here (see linear_cuda.cu).
#include <algorithm>
#include <cstdint>
#include <optional>
#include <tuple>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/SmallVector.h>
#include <torch/library.h>

#include "activation.h"
#include "cuda/gemm_launch.h"
#include "linear_checks.h"
#include "mlp_layout.h"
#include "reduced_precision.h"

namespace pylibnn::cuda {
namespace {

constexpr const char* kForwardOp = "pylibnn.mlp_forward";
constexpr const char* kBackwardOp = "pylibnn.mlp_backward";

// ---------------------------------------------------------------------------------------
// Fused kernels
// ---------------------------------------------------------------------------------------

constexpr int kFusedMaxWidth = 128;  // widest K_0 / N_l the fused kernels take
constexpr int kFusedMaxLayers = 32;  // layer descriptors travel in the kernel parameters (4 KiB)
constexpr int kFusedLanes = 32;
constexpr int kFusedWarps = 8;
constexpr int kFusedThreads = kFusedLanes * kFusedWarps;
constexpr int kFusedColGroups = kFusedMaxWidth / kFusedLanes;  // columns per thread: lane + 32 j
// The backward's blocks (and so the rows of its partials buffer) are capped at this many; a
// block then walks several row tiles. Fixed, not derived from the device, for determinism.
constexpr int64_t kFusedMaxBackwardBlocks = 256;

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
  __shared__ T activations[ROWS][kFusedMaxWidth];
  // w_chunk[kk][n] = W_l[n][k0 + kk]. Rows of 130: the staging stores (16 consecutive kk of
  // one n, then the next n) fall in distinct banks for float.
  __shared__ T w_chunk[CHUNK][kFusedMaxWidth + 2];

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
  __syncthreads();  // the tile is complete before layer 0 reads it

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

    for (int k0 = 0; k0 < K; k0 += CHUNK) {
      const int kc = min(CHUNK, K - k0);
      // Consecutive threads walk k, along which W is contiguous.
      for (int e = tid; e < kc * N; e += kFusedThreads) {
        const int n = e / kc, kk = e % kc;
        w_chunk[kk][n] = layer.weight[static_cast<int64_t>(n) * K + k0 + kk];
      }
      __syncthreads();  // the chunk is complete before anyone reads it
      for (int kk = 0; kk < kc; ++kk) {
        T a[ROW_GROUPS];
#pragma unroll
        for (int i = 0; i < ROW_GROUPS; ++i) a[i] = activations[warp + i * kFusedWarps][k0 + kk];  // broadcast
#pragma unroll
        for (int j = 0; j < kFusedColGroups; ++j) {
          if (j >= col_groups) break;
          const T w = w_chunk[kk][lane + j * kFusedLanes];  // columns >= N: stale, never stored
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
        const T y = apply_activation(p.activation, z);
        if (col < N) activations[r][col] = y;
        if (p.hidden != nullptr && row < p.hidden_rows) {
          T* hidden_row = p.hidden + row * p.hidden_ld;
          hidden_row[layer.z_offset + col] = inside ? z : T(0);
          if (layer.y_offset != layer.z_offset) hidden_row[layer.y_offset + col] = inside ? y : T(0);
        }
      }
    }
    __syncthreads();  // a_l is complete before layer l + 1 reads it
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
  __shared__ T grad[ROWS][kFusedMaxWidth];     // dz_l of the tile, then dz_{l-1}
  __shared__ T prev[ROWS][kFusedMaxWidth];     // a_{l-1} of the tile (the input for l = 0)
  __shared__ T w_chunk[CHUNK][kFusedMaxWidth];  // w_chunk[nn][k] = W_l[n0 + nn][k]

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

    // dz_{L-1} = grad_output; rows past M are zeros, so they add nothing below.
    {
      const int n_out = p.layers[last_layer].n;
      for (int e = tid; e < ROWS * n_out; e += kFusedThreads) {
        const int r = e / n_out, n = e % n_out;
        const int64_t row = row0 + r;
        grad[r][n] = row < p.M ? p.grad_output[row * p.grad_output_row_stride + n * p.grad_output_col_stride] : T(0);
      }
    }

    for (int l = last_layer; l >= 0; --l) {
      const FusedLayer<T>& layer = p.layers[l];
      const int N = layer.n, K = layer.k;
      const int k_groups = (K + kFusedLanes - 1) / kFusedLanes;

      // a_{l-1}: the input for layer 0, else hidden's a band of layer l - 1.
      const T* prev_band = l > 0 ? p.saved_hidden + p.layers[l - 1].y_offset : nullptr;
      for (int e = tid; e < ROWS * K; e += kFusedThreads) {
        const int r = e / K, k = e % K;
        const int64_t row = row0 + r;
        T v = T(0);
        if (row < p.M) {
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
          for (int e = tid; e < nc * K; e += kFusedThreads) {
            const int nn = e / K, k = e % K;  // along a contiguous row of W: coalesced, no bank conflicts
            w_chunk[nn][k] = layer.weight[static_cast<int64_t>(n0 + nn) * K + k];
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
        // Every read of grad (dW, db and da above) is done before it is overwritten; the
        // chunk loop's barriers do not cover N == 0.
        __syncthreads();
        const T* z_band = l > 0 ? p.saved_hidden + p.layers[l - 1].z_offset : nullptr;
#pragma unroll
        for (int i = 0; i < ROW_GROUPS; ++i) {
          const int r = warp + i * kFusedWarps;
          const int64_t row = row0 + r;
#pragma unroll
          for (int j = 0; j < kFusedColGroups; ++j) {
            const int k = lane + j * kFusedLanes;
            if (j >= k_groups) break;
            if (k >= K) continue;
            if (l > 0) {
              T dz = T(0);  // rows past M stay zero
              if (row < p.M) {
                const T z = z_band[row * p.hidden_ld + k];
                dz = acc[i][j] * activation_derivative(p.activation, z, prev[r][k]);
              }
              grad[r][k] = dz;
            } else if (row < p.M) {
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

// ---------------------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------------------

bool fits_fused(int64_t input_width, const std::vector<int64_t>& widths) {
  if (input_width > kFusedMaxWidth || static_cast<int64_t>(widths.size()) > kFusedMaxLayers) return false;
  return std::all_of(widths.begin(), widths.end(), [](int64_t n) { return n <= kFusedMaxWidth; });
}

std::optional<at::Tensor> bias_at(const c10::List<std::optional<at::Tensor>>& biases, size_t l) {
  std::optional<at::Tensor> bias = biases.get(l);
  if (bias.has_value() && !bias->defined()) return std::nullopt;
  return bias;
}

// The layer descriptors of the fused kernels, with the contiguous weights they point to
// (kept alive by the caller until the launch is enqueued).
template <typename T>
void describe_layers(FusedMlpParams<T>& p, at::TensorList weights, const c10::List<std::optional<at::Tensor>>* biases,
                     const MlpHiddenLayout& layout, std::vector<at::Tensor>& contiguous_weights) {
  p.num_layers = static_cast<int>(weights.size());
  for (size_t l = 0; l < weights.size(); ++l) {
    contiguous_weights.push_back(weights[l].contiguous());
    FusedLayer<T>& layer = p.layers[l];
    layer.weight = contiguous_weights.back().const_data_ptr<T>();
    layer.bias = nullptr;
    layer.bias_stride = 0;
    if (biases != nullptr) {
      if (const std::optional<at::Tensor> bias = bias_at(*biases, l)) {
        layer.bias = bias->const_data_ptr<T>();
        layer.bias_stride = bias->stride(0);
      }
    }
    layer.n = static_cast<int>(weights[l].size(0));
    layer.k = static_cast<int>(weights[l].size(1));
    layer.padded_n = static_cast<int>(padded_width(layer.n));
    const bool hidden_layer = l + 1 < weights.size();
    layer.z_offset = hidden_layer ? layout.z_offset[l] : 0;
    layer.y_offset = hidden_layer ? layout.y_offset[l] : 0;
    layer.grad_weight_offset = 0;
    layer.grad_bias_offset = -1;
  }
}

template <typename T>
void mlp_forward_fused(const at::Tensor& input, at::TensorList weights,
                       const c10::List<std::optional<at::Tensor>>& biases, Activation activation,
                       const MlpHiddenLayout& layout, at::Tensor& output, at::Tensor& hidden, bool save_hidden,
                       cudaStream_t stream) {
  using Tile = FusedMlpTile<T>;
  const int64_t M = input.size(0);
  if (M == 0) return;
  const int64_t blocks = ceil_div(M, Tile::FORWARD_ROWS);
  TORCH_CHECK(blocks <= kMaxGridX, kForwardOp, ": ", M, " rows need more than ", kMaxGridX, " blocks");
  FusedMlpParams<T> p{};
  std::vector<at::Tensor> contiguous_weights;
  describe_layers<T>(p, weights, &biases, layout, contiguous_weights);
  p.activation = activation;
  p.M = M;
  p.hidden_rows = layout.rows;
  p.hidden_ld = layout.cols;
  p.input = input.const_data_ptr<T>();
  p.input_row_stride = input.stride(0);
  p.input_col_stride = input.stride(1);
  p.output = output.mutable_data_ptr<T>();
  p.hidden = save_hidden ? hidden.mutable_data_ptr<T>() : nullptr;
  mlp_forward_fused_kernel<T, Tile::FORWARD_ROWS, Tile::CHUNK>
      <<<static_cast<unsigned>(blocks), kFusedThreads, 0, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T>
void mlp_forward_per_layer(const at::Tensor& input, at::TensorList weights,
                           const c10::List<std::optional<at::Tensor>>& biases, Activation activation,
                           const MlpHiddenLayout& layout, at::Tensor& output, at::Tensor& hidden, bool save_hidden,
                           cudaStream_t stream) {
  const int64_t M = input.size(0);
  const size_t L = weights.size();
  View<T> a = view_of<T>(input);
  // a_l when hidden is not saved. Replacing it while the GEMM reading it is still queued is
  // safe: the caching allocator reuses memory in stream order.
  at::Tensor a_buffer;
  for (size_t l = 0; l < L; ++l) {
    const at::Tensor& w = weights[l];
    const int64_t N = w.size(0);
    const std::optional<at::Tensor> bias = bias_at(biases, l);
    const T* bias_data = bias ? bias->const_data_ptr<T>() : nullptr;
    const int64_t bias_stride = bias ? bias->stride(0) : 0;
    const View<T> w_t = view_of<T>(w).transposed();
    if (l + 1 == L) {
      gemm<T>(a, w_t, output.mutable_data_ptr<T>(), N, bias_data, bias_stride, nullptr, stream);
    } else if (save_hidden) {
      T* base = hidden.mutable_data_ptr<T>();
      T* y = base + layout.y_offset[l];
      T* z = activation != Activation::None ? base + layout.z_offset[l] : nullptr;
      gemm<T>(a, w_t, y, layout.cols, bias_data, bias_stride, nullptr, stream,
              GemmEpilogue<T>::forward(activation, z, layout.cols));
      a = View<T>{y, M, N, layout.cols, 1};
    } else {
      at::Tensor next = at::empty({M, N}, input.options());
      gemm<T>(a, w_t, next.mutable_data_ptr<T>(), N, bias_data, bias_stride, nullptr, stream,
              GemmEpilogue<T>::forward(activation));
      a = View<T>{next.const_data_ptr<T>(), M, N, N, 1};
      a_buffer = std::move(next);
    }
  }
}

std::tuple<at::Tensor, at::Tensor> mlp_forward_cuda(const at::Tensor& input, at::TensorList weights,
                                                    const c10::List<std::optional<at::Tensor>>& biases,
                                                    c10::string_view activation_name, bool save_hidden) {
  const std::vector<int64_t> widths = check_mlp_forward_args(input, weights, biases);
  const Activation activation = activation_from_name(kForwardOp, activation_name);
  const at::ScalarType dtype = input.scalar_type();
  if (is_reduced_precision(dtype)) {
    // float32 kernels, each result rounded once (reduced_precision.h).
    std::vector<at::Tensor> wide_weights;
    c10::List<std::optional<at::Tensor>> wide_biases;
    for (size_t l = 0; l < weights.size(); ++l) {
      wide_weights.push_back(widen(weights[l]));
      wide_biases.push_back(widen(bias_at(biases, l)));
    }
    auto [output, hidden] = mlp_forward_cuda(widen(input), wide_weights, wide_biases, activation_name, save_hidden);
    return {output.to(dtype), hidden.to(dtype)};
  }
  const c10::cuda::CUDAGuard device_guard(input.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t M = input.size(0);
  const MlpHiddenLayout layout(M, widths, activation != Activation::None);
  const bool fused = fits_fused(input.size(1), widths);
  const auto options = input.options();
  at::Tensor output = at::empty({M, widths.back()}, options);
  // The fused kernel writes all of hidden, padding included; the per-layer GEMMs only the
  // bands, so there hidden starts zeroed.
  at::Tensor hidden = !save_hidden ? at::empty({0}, options)
                      : fused      ? at::empty({layout.rows, layout.cols}, options)
                                   : at::zeros({layout.rows, layout.cols}, options);
  AT_DISPATCH_FLOATING_TYPES(dtype, "mlp_forward_cuda", [&] {
    if (fused) {
      mlp_forward_fused<scalar_t>(input, weights, biases, activation, layout, output, hidden, save_hidden, stream);
    } else {
      mlp_forward_per_layer<scalar_t>(input, weights, biases, activation, layout, output, hidden, save_hidden,
                                      stream);
    }
  });
  return {output, hidden};
}

// The gradients of mlp_backward, allocated as the schema shapes them.
struct MlpGradients {
  at::Tensor grad_input;
  std::vector<at::Tensor> grad_weights;
  std::vector<at::Tensor> grad_biases;
};

template <typename T>
void mlp_backward_fused(const at::Tensor& grad_output, const at::Tensor& input, at::TensorList weights,
                        const at::Tensor& hidden, Activation activation, at::ArrayRef<bool> has_bias,
                        bool input_grad, const MlpHiddenLayout& layout, MlpGradients& grads, cudaStream_t stream) {
  using Tile = FusedMlpTile<T>;
  const int64_t M = input.size(0);
  FusedMlpParams<T> p{};
  std::vector<at::Tensor> contiguous_weights;
  describe_layers<T>(p, weights, nullptr, layout, contiguous_weights);
  // Each block's row of partials: dW_0, [db_0], dW_1, [db_1], ...
  int64_t partials_stride = 0;
  for (size_t l = 0; l < weights.size(); ++l) {
    FusedLayer<T>& layer = p.layers[l];
    layer.grad_weight_offset = partials_stride;
    partials_stride += static_cast<int64_t>(layer.n) * layer.k;
    layer.grad_bias_offset = has_bias[l] ? partials_stride : -1;
    if (has_bias[l]) partials_stride += layer.n;
  }
  // A fixed split of the row tiles over at most kFusedMaxBackwardBlocks blocks.
  const int64_t row_tiles = ceil_div(M, Tile::BACKWARD_ROWS);
  const int64_t tiles_per_block = std::max<int64_t>(1, ceil_div(row_tiles, kFusedMaxBackwardBlocks));
  const int64_t blocks = ceil_div(row_tiles, tiles_per_block);  // 0 when M == 0: the sums below are zeros
  // Launched whenever there are rows, even if every dW and db is empty (partials_stride
  // == 0, the kernel then never touches the partials): grad_input may still need zeros.
  at::Tensor partials;
  if (blocks > 0) {
    partials = at::empty({blocks, partials_stride}, grad_output.options());
    p.activation = activation;
    p.M = M;
    p.hidden_rows = layout.rows;
    p.hidden_ld = layout.cols;
    p.input = input.const_data_ptr<T>();
    p.input_row_stride = input.stride(0);
    p.input_col_stride = input.stride(1);
    p.grad_output = grad_output.const_data_ptr<T>();
    p.grad_output_row_stride = grad_output.stride(0);
    p.grad_output_col_stride = grad_output.stride(1);
    p.saved_hidden = hidden.const_data_ptr<T>();
    p.grad_input = input_grad ? grads.grad_input.mutable_data_ptr<T>() : nullptr;
    p.partials = partials.mutable_data_ptr<T>();
    p.partials_stride = partials_stride;
    p.row_tiles = row_tiles;
    p.tiles_per_block = tiles_per_block;
    mlp_backward_fused_kernel<T, Tile::BACKWARD_ROWS, Tile::CHUNK>
        <<<static_cast<unsigned>(blocks), kFusedThreads, 0, stream>>>(p);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  const T* partials_data = partials.defined() ? partials.const_data_ptr<T>() : nullptr;
  const int64_t summed_blocks = partials.defined() ? blocks : 0;
  const auto reduce = [&](int64_t offset, int64_t count, T* out) {
    if (count == 0) return;
    const int64_t grid = std::min<int64_t>(ceil_div(count, 256), 1024);
    reduce_partials_kernel<T><<<static_cast<unsigned>(grid), 256, 0, stream>>>(partials_data, summed_blocks,
                                                                               partials_stride, offset, count, out);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  };
  for (size_t l = 0; l < weights.size(); ++l) {
    const FusedLayer<T>& layer = p.layers[l];
    reduce(layer.grad_weight_offset, static_cast<int64_t>(layer.n) * layer.k, grads.grad_weights[l].mutable_data_ptr<T>());
    if (has_bias[l]) reduce(layer.grad_bias_offset, layer.n, grads.grad_biases[l].mutable_data_ptr<T>());
  }
}

template <typename T>
void mlp_backward_per_layer(const at::Tensor& grad_output, const at::Tensor& input, at::TensorList weights,
                            const at::Tensor& hidden, Activation activation, at::ArrayRef<bool> has_bias,
                            bool input_grad, const MlpHiddenLayout& layout, MlpGradients& grads,
                            cudaStream_t stream) {
  const int64_t M = input.size(0);
  const auto options = grad_output.options();
  const T* saved = hidden.const_data_ptr<T>();
  View<T> dz = view_of<T>(grad_output);
  at::Tensor dz_buffer;  // dz_{l-1}; replaced in stream order, as in mlp_forward_per_layer
  for (size_t l = weights.size(); l-- > 0;) {
    const at::Tensor& w = weights[l];
    const int64_t K = w.size(1);
    const View<T> a_prev = l > 0 ? View<T>{saved + layout.y_offset[l - 1], M, K, layout.cols, 1} : view_of<T>(input);
    weight_and_bias_gradients<T>(dz, a_prev, grads.grad_weights[l].mutable_data_ptr<T>(),
                                 has_bias[l] ? grads.grad_biases[l].mutable_data_ptr<T>() : nullptr, options, stream);
    if (l > 0) {
      // dz_{l-1} = (dz_l @ W_l) * act'(z_{l-1}, a_{l-1}), the derivative applied in the epilogue.
      at::Tensor next = at::empty({M, K}, options);
      const GemmEpilogue<T> epilogue =
          activation == Activation::None
              ? GemmEpilogue<T>()
              : GemmEpilogue<T>::backward(activation, saved + layout.z_offset[l - 1], saved + layout.y_offset[l - 1],
                                          layout.cols);
      gemm<T>(dz, view_of<T>(w), next.mutable_data_ptr<T>(), K, nullptr, 0, nullptr, stream, epilogue);
      dz = View<T>{next.const_data_ptr<T>(), M, K, K, 1};
      dz_buffer = std::move(next);
    } else if (input_grad) {
      gemm<T>(dz, view_of<T>(w), grads.grad_input.mutable_data_ptr<T>(), K, nullptr, 0, nullptr, stream);
    }
  }
}

std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>> mlp_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, at::TensorList weights, const at::Tensor& hidden,
    c10::string_view activation_name, const c10::List<bool>& has_bias_list, bool input_grad) {
  const Activation activation = activation_from_name(kBackwardOp, activation_name);
  c10::SmallVector<bool, 16> has_bias_flags;
  for (const bool flag : has_bias_list) has_bias_flags.push_back(flag);
  const at::ArrayRef<bool> has_bias(has_bias_flags);
  const std::vector<int64_t> widths =
      check_mlp_backward_args(grad_output, input, weights, hidden, activation, has_bias);
  const at::ScalarType dtype = input.scalar_type();
  if (is_reduced_precision(dtype)) {
    std::vector<at::Tensor> wide_weights;
    for (const at::Tensor& w : weights) wide_weights.push_back(widen(w));
    auto [grad_input, grad_weights, grad_biases] = mlp_backward_cuda(
        widen(grad_output), widen(input), wide_weights, widen(hidden), activation_name, has_bias_list, input_grad);
    for (at::Tensor& g : grad_weights) g = g.to(dtype);
    for (at::Tensor& g : grad_biases) g = g.to(dtype);
    return {grad_input.to(dtype), std::move(grad_weights), std::move(grad_biases)};
  }
  const c10::cuda::CUDAGuard device_guard(input.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t M = input.size(0);
  const MlpHiddenLayout layout(M, widths, activation != Activation::None);
  const auto options = grad_output.options();
  MlpGradients grads;
  grads.grad_input = input_grad ? at::empty({M, input.size(1)}, options) : at::empty({0}, options);
  for (size_t l = 0; l < weights.size(); ++l) {
    grads.grad_weights.push_back(at::empty({weights[l].size(0), weights[l].size(1)}, options));
    grads.grad_biases.push_back(has_bias[l] ? at::empty({weights[l].size(0)}, options) : at::empty({0}, options));
  }
  AT_DISPATCH_FLOATING_TYPES(dtype, "mlp_backward_cuda", [&] {
    if (fits_fused(input.size(1), widths)) {
      mlp_backward_fused<scalar_t>(grad_output, input, weights, hidden, activation, has_bias, input_grad, layout,
                                   grads, stream);
    } else {
      mlp_backward_per_layer<scalar_t>(grad_output, input, weights, hidden, activation, has_bias, input_grad, layout,
                                       grads, stream);
    }
  });
  return {grads.grad_input, std::move(grads.grad_weights), std::move(grads.grad_biases)};
}

}  // namespace
}  // namespace pylibnn::cuda

TORCH_LIBRARY_IMPL(pylibnn, CUDA, m) {
  m.impl("mlp_forward", &pylibnn::cuda::mlp_forward_cuda);
  m.impl("mlp_backward", &pylibnn::cuda::mlp_backward_cuda);
}
