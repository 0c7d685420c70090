// Kernel selection for every GEMM of the CUDA backend, in one place (host only, no ATen):
// which kernel, which tile, how many K slices. gemm_launch.cuh calls plan_gemm and launches
// what it says; the tile numbers below are the kernels' only home (gemm_launch.cuh builds the
// tile types from them).
//
// The rule, per element type and shape (M, N, K):
//   bfloat16, float16  tensor cores (gemm_tensor_core.cuh), 128 x 128 x 32 blocks; 64 x 128 x 32
//                      when M <= kThinM (thin M: half the rows of mma work wasted on padding)
//   float32            TF32 tensor cores (128 x 128 x 16, thin: 64 x 128 x 16) when the caller allows TF32 (the op
//                      reads torch's setting at call time), else the warptiled SIMT kernel
//                      (gemm_warptile.cuh, 128 x 128 x 16, 8 x 8 per lane): exact float32
//   float64            the warptiled SIMT kernel in its float64 shape (64 x 64 x 16, 4 x 4 per lane)
//   with row sums      the basic SIMT tile (gemm_kernels.cuh), the only one that sums A's rows
//   split-K            when the output has fewer tiles than kSplitKTargetBlocks (about one wave
//                      on a 132-SM H100 / H200) and K is long: S = min(ceil(target / tiles),
//                      K / kSplitKMinSlice, kSplitKMaxSplits) slices of a whole number of BK,
//                      capped by the workspace budget; the slices' float sums are reduced in
//                      slice order (deterministic: the split depends on the shape alone, never
//                      on the device).
// Overrides (tests, benchmarks): a kernel and a split count, process-wide, initialised from the
// environment (PYLIBNN_CUDA_GEMM = auto | simt_basic | simt_warptile | tensor_core,
// PYLIBNN_CUDA_SPLIT_K = 0 (the rule) | S); an override a dtype cannot take (tensor cores for
// float64) is an error of that call.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "matrix.h"

namespace pylibnn::cuda {

enum class GemmKernel : int { Auto = 0, SimtBasic, SimtWarptile, TensorCore };
enum class ElementKind : int { BFloat16, Float16, Float32, Float64 };

inline const char* gemm_kernel_name(GemmKernel kernel) {
  switch (kernel) {
    case GemmKernel::Auto: return "auto";
    case GemmKernel::SimtBasic: return "simt_basic";
    case GemmKernel::SimtWarptile: return "simt_warptile";
    case GemmKernel::TensorCore: return "tensor_core";
  }
  return "?";
}

inline GemmKernel gemm_kernel_from_name(const std::string& name) {
  for (GemmKernel k : {GemmKernel::Auto, GemmKernel::SimtBasic, GemmKernel::SimtWarptile, GemmKernel::TensorCore}) {
    if (name == gemm_kernel_name(k)) return k;
  }
  throw std::invalid_argument("pylibnn: CUDA GEMM kernel: expected 'auto', 'simt_basic', 'simt_warptile' or "
                              "'tensor_core', got '" + name + "'");
}

// Block tiles (the kernels' template arguments are built from these).
struct TileDims {
  int bm, bn, bk;
};
constexpr TileDims kTensorCoreTile16{128, 128, 32};  // bfloat16 / float16: 4 warps of 64 x 64, 4 stages
constexpr TileDims kTensorCoreTileTf32{128, 128, 16};  // TF32: the same warps, 16-deep slabs (4-byte elements)
constexpr TileDims kTensorCoreTile16Thin{64, 128, 32};  // M <= kThinM: warps of 32 x 32
constexpr TileDims kTensorCoreTileTf32Thin{64, 128, 16};
constexpr int64_t kThinM = 64;
constexpr TileDims kWarptileFloat{128, 128, 16};
constexpr TileDims kWarptileDouble{64, 64, 16};
constexpr TileDims kSimtBasicTile{64, 64, 16};

constexpr int64_t kSplitKTargetBlocks = 128;
constexpr int64_t kSplitKMinSlice = 256;
constexpr int64_t kSplitKMaxSplits = 16;
constexpr int64_t kSplitKWorkspaceBytes = int64_t(64) << 20;

namespace detail {
inline std::atomic<int>& kernel_override() {
  static std::atomic<int> value{[] {
    const char* env = std::getenv("PYLIBNN_CUDA_GEMM");
    return static_cast<int>(env != nullptr && *env ? gemm_kernel_from_name(env) : GemmKernel::Auto);
  }()};
  return value;
}
inline std::atomic<int64_t>& split_override() {
  static std::atomic<int64_t> value{[] {
    const char* env = std::getenv("PYLIBNN_CUDA_SPLIT_K");
    return static_cast<int64_t>(env != nullptr && *env ? std::max(0L, std::strtol(env, nullptr, 10)) : 0L);
  }()};
  return value;
}
}  // namespace detail

inline void set_gemm_kernel_override(GemmKernel kernel) { detail::kernel_override() = static_cast<int>(kernel); }
inline GemmKernel gemm_kernel_override() { return static_cast<GemmKernel>(detail::kernel_override().load()); }
// 0: the rule above; S >= 1: S slices wherever the kernel can take them (1: never split).
inline void set_split_k_override(int64_t splits) {
  if (splits < 0) throw std::invalid_argument("pylibnn: split-K override: expected 0 (auto) or a count >= 1");
  detail::split_override() = splits;
}
inline int64_t split_k_override() { return detail::split_override().load(); }

struct GemmPlan {
  GemmKernel kernel;
  TileDims tile;
  int64_t splits;   // K slices (1: no split)
  int64_t k_slice;  // K per slice, a multiple of tile.bk (K when splits == 1)
};

// The plan for C (M, N) = A (M, K) @ B (K, N) of `kind`; see the rule at the top.
inline GemmPlan plan_gemm(ElementKind kind, int64_t M, int64_t N, int64_t K, bool allow_tf32, bool row_sums) {
  GemmPlan plan{};
  GemmKernel kernel = gemm_kernel_override();
  if (row_sums) kernel = GemmKernel::SimtBasic;
  const bool half = kind == ElementKind::BFloat16 || kind == ElementKind::Float16;
  if (kernel == GemmKernel::Auto) {
    if (half || (kind == ElementKind::Float32 && allow_tf32)) {
      kernel = GemmKernel::TensorCore;
    } else {
      kernel = GemmKernel::SimtWarptile;
    }
  }
  if (half && kernel != GemmKernel::TensorCore) {
    // 16-bit types have no SIMT kernel of their own (their products accumulate in float32 on
    // the tensor cores): an override of the SIMT kernels leaves them on the tensor cores.
    kernel = GemmKernel::TensorCore;
  }
  if (kind == ElementKind::Float64 && kernel == GemmKernel::TensorCore) {
    throw std::invalid_argument("pylibnn: the tensor-core GEMM takes bfloat16, float16 and float32 (TF32), "
                                "not float64; use the 'auto' or a SIMT kernel override");
  }
  plan.kernel = kernel;
  switch (kernel) {
    case GemmKernel::TensorCore:
      if (M <= kThinM) {
        plan.tile = half ? kTensorCoreTile16Thin : kTensorCoreTileTf32Thin;
      } else {
        plan.tile = half ? kTensorCoreTile16 : kTensorCoreTileTf32;
      }
      break;
    case GemmKernel::SimtWarptile: plan.tile = kind == ElementKind::Float64 ? kWarptileDouble : kWarptileFloat; break;
    default: plan.tile = kSimtBasicTile; break;
  }
  plan.splits = 1;
  plan.k_slice = K;
  if (kernel == GemmKernel::SimtBasic || K == 0 || M == 0 || N == 0) return plan;
  const int64_t tiles = ceil_div(M, plan.tile.bm) * ceil_div(N, plan.tile.bn);
  int64_t splits = split_k_override();
  if (splits == 0) {
    splits = 1;
    if (tiles < kSplitKTargetBlocks) {
      splits = std::min({ceil_div(kSplitKTargetBlocks, tiles), K / kSplitKMinSlice, kSplitKMaxSplits});
      const int64_t accumulator_bytes = kind == ElementKind::Float64 ? 8 : 4;
      splits = std::min(splits, kSplitKWorkspaceBytes / std::max<int64_t>(1, M * N * accumulator_bytes));
    }
  }
  if (splits <= 1) return plan;
  const int64_t slice = ceil_div(ceil_div(K, splits), plan.tile.bk) * plan.tile.bk;
  plan.k_slice = slice;
  plan.splits = ceil_div(K, slice);
  return plan;
}

}  // namespace pylibnn::cuda
