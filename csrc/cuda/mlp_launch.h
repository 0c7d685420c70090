// Host-side planning and launches of the fused MLP kernels (mlp_kernels.cuh) over raw
// pointers, shared by mlp_cuda.cu, the emulated CUDA build and the kernel tests: how many
// blocks, how the backward's row tiles are split over them, where each layer's partial dW
// and db sit in a block's row of partials, and the block-order reduction of those rows.
// Everything derives from the shapes alone (never from the device), for determinism.
#pragma once

#include <algorithm>
#include <cstdint>

#include "cuda/gemm_launch.h"
#include "cuda/launch.h"
#include "cuda/mlp_kernels.cuh"

namespace pylibnn::cuda {

constexpr int kReducePartialsThreads = 256;
constexpr int64_t kReducePartialsMaxBlocks = 1024;

// Sets each layer's grad_weight_offset and grad_bias_offset (-1 without a bias) in a row of
// partials laid out dW_0, [db_0], dW_1, [db_1], ...; returns the row's length.
template <typename T>
int64_t lay_out_partials(FusedMlpParams<T>& p, const bool* has_bias) {
  int64_t stride = 0;
  for (int l = 0; l < p.num_layers; ++l) {
    FusedLayer<T>& layer = p.layers[l];
    layer.grad_weight_offset = stride;
    stride += static_cast<int64_t>(layer.n) * layer.k;
    layer.grad_bias_offset = has_bias[l] ? stride : -1;
    if (has_bias[l]) stride += layer.n;
  }
  return stride;
}

// The backward's fixed split of row tiles over blocks: at most kFusedMaxBackwardBlocks, fewer
// when their rows of partials would pass kFusedPartialsBudget elements (never below
// kFusedMinBackwardBlocks). blocks == 0 when M == 0.
struct FusedBackwardSplit {
  int64_t row_tiles;
  int64_t tiles_per_block;
  int64_t blocks;
};

inline FusedBackwardSplit split_fused_backward(int64_t M, int rows_per_tile, int64_t partials_stride) {
  const int64_t max_blocks = std::clamp(kFusedPartialsBudget / std::max<int64_t>(partials_stride, 1),
                                        kFusedMinBackwardBlocks, kFusedMaxBackwardBlocks);
  FusedBackwardSplit split;
  split.row_tiles = ceil_div(M, rows_per_tile);
  split.tiles_per_block = std::max<int64_t>(1, ceil_div(split.row_tiles, max_blocks));
  split.blocks = ceil_div(split.row_tiles, split.tiles_per_block);
  return split;
}

// Every layer for M = p.M rows (nothing when M == 0).
template <typename T>
void launch_mlp_forward_fused(const FusedMlpParams<T>& p, cudaStream_t stream) {
  using Tile = FusedMlpTile<T>;
  if (p.M == 0) return;
  const int64_t blocks = ceil_div(p.M, Tile::FORWARD_ROWS);
  if (blocks > kMaxGridX) {
    fail_launch_plan("pylibnn.mlp_forward: ", p.M, " rows need more than ", kMaxGridX, " blocks");
  }
  launch<mlp_forward_fused_kernel<T, Tile::FORWARD_ROWS, Tile::CHUNK>>(
      LaunchConfig{dim3(static_cast<unsigned>(blocks)), dim3(kFusedThreads), 0, stream}, p);
}

// The reverse pass into p.partials ((split.blocks, p.partials_stride)); p.row_tiles and
// p.tiles_per_block are taken from the split. Launched whenever there are rows, even if
// every dW and db is empty: grad_input may still need its values.
template <typename T>
void launch_mlp_backward_fused(FusedMlpParams<T>& p, const FusedBackwardSplit& split, cudaStream_t stream) {
  using Tile = FusedMlpTile<T>;
  if (split.blocks == 0) return;
  p.row_tiles = split.row_tiles;
  p.tiles_per_block = split.tiles_per_block;
  launch<mlp_backward_fused_kernel<T, Tile::BACKWARD_ROWS, Tile::CHUNK>>(
      LaunchConfig{dim3(static_cast<unsigned>(split.blocks)), dim3(kFusedThreads), 0, stream}, p);
}

// out[s] (count) = sum over the `blocks` rows b of partials (row stride `stride`) of
// partials[b * stride + offset + s], in row order; zeros when blocks == 0.
template <typename T>
void reduce_partials(const T* partials, int64_t blocks, int64_t stride, int64_t offset, int64_t count, T* out,
                     cudaStream_t stream) {
  if (count == 0) return;
  const int64_t grid = std::min<int64_t>(ceil_div(count, kReducePartialsThreads), kReducePartialsMaxBlocks);
  launch<reduce_partials_kernel<T>>(
      LaunchConfig{dim3(static_cast<unsigned>(grid)), dim3(kReducePartialsThreads), 0, stream}, partials, blocks,
      stride, offset, count, out);
}

}  // namespace pylibnn::cuda
