// Host-side launchers of the kernels in gemm_kernels.cuh: the launch planning (tiles, grid,
// chunks of the column sums and their scratch) over raw pointers and strides, shared by
// the CUDA ops (linear_cuda.cu, mlp_cuda.cu), the emulated CUDA build and the kernel tests.
// Declared here, defined in gemm_launch.cuh; linear_cuda.cu instantiates them for float and
// double, so the GEMM kernel is compiled once, and mlp_cuda.cu reuses them.
// No argument checks here: the ops check, allocate and pick the stream; these launch
// (nothing when the result is empty) and check the launch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <sstream>
#include <stdexcept>

#include "activation.h"
#include "cuda/gemm_numeric.h"
#include "cuda/gemm_select.h"
#include "matrix.h"
#include "cuda/launch.h"

namespace pylibnn::cuda {

// Grid limits of CUDA: x up to 2^31 - 1 blocks, y up to 65535.
constexpr int64_t kMaxGridX = std::numeric_limits<int32_t>::max();
constexpr int64_t kMaxGridY = 65535;

// A shape the launch planning cannot map onto CUDA's grid (a RuntimeError in Python).
template <typename... Parts>
[[noreturn]] void fail_launch_plan(const Parts&... parts) {
  std::ostringstream message;
  (message << ... << parts);
  throw std::runtime_error(message.str());
}

// The operands: strided views over device memory (matrix.h, shared with the CPU).
template <typename T>
using View = MatrixView<T>;

// Device memory for a launcher's temporaries, valid until the scratch is destroyed (the ops
// back it with tensors of the op's device: the caching allocator reuses memory in stream
// order, so it may be released as soon as the launches are enqueued).
class Scratch {
 public:
  virtual ~Scratch() = default;
  virtual void* allocate(size_t bytes) = 0;

  template <typename T>
  T* allocate_array(int64_t count) {
    return static_cast<T*>(allocate(static_cast<size_t>(count) * sizeof(T)));
  }
};

// What the GEMM stores besides (or instead of) V = A @ B + bias; see GemmParams in
// gemm_kernels.cuh. The default is the plain GEMM.
template <typename T>
struct GemmEpilogue {
  Activation activation = Activation::None;
  T* preactivation = nullptr;   // forward: receives V (row-major, ld_preactivation)
  int64_t ld_preactivation = 0;
  const T* derivative_z = nullptr;  // backward: C = V * act'(z, y), z row-major (ld_derivative)
  const T* derivative_y = nullptr;  //           y = act(z) read from here, or recomputed if null
  int64_t ld_derivative = 0;

  static GemmEpilogue forward(Activation activation, T* preactivation = nullptr, int64_t ld_preactivation = 0) {
    GemmEpilogue e;
    e.activation = activation;
    e.preactivation = preactivation;
    e.ld_preactivation = ld_preactivation;
    return e;
  }
  static GemmEpilogue backward(Activation activation, const T* z, const T* y, int64_t ld) {
    GemmEpilogue e;
    e.activation = activation;
    e.derivative_z = z;
    e.derivative_y = y;
    e.ld_derivative = ld;
    return e;
  }
};

// What a GEMM may use besides its operands: scratch memory (split-K's partial sums, the
// tensor-core path's packed copies of views it cannot read in place) and whether float32 may
// run as TF32 (the op reads torch's setting at call time). Without scratch, nothing is split
// and views are read in place where the chosen kernel can.
struct GemmContext {
  Scratch* scratch = nullptr;
  bool allow_tf32 = false;
};

// C (a.rows, b.cols), row-major with leading dimension ldc, = epilogue(a @ b [+ bias]);
// a_row_sums (a.rows) = a @ 1 when non-null (only meaningful for a plain epilogue, which
// is how it is used: db alongside dW), written even when C has no columns. The kernel is
// the one plan_gemm (gemm_select.h) picks for T and the shape. T: float, double, bfloat16,
// float16 (row sums: float and double only).
template <typename T>
void gemm(const View<T>& a, const View<T>& b, T* c, int64_t ldc, const T* bias, int64_t bias_stride,
          T* a_row_sums, cudaStream_t stream, const GemmEpilogue<T>& epilogue = GemmEpilogue<T>(),
          const GemmContext& context = GemmContext());

// out (m.cols) = column sums of m, deterministic (fixed chunks, fixed trees), accumulated in
// Accumulator<T> (float32 for the 16-bit types) and rounded once.
template <typename T>
void column_sums(View<T> m, T* out, Scratch& scratch, cudaStream_t stream);

// The parameter gradients of a layer from the gradient dz (M, N) of its pre-activation and
// its input x (M, K): grad_weight (N, K, contiguous) = dz^T @ x when non-null, grad_bias (N) =
// dz^T @ 1 when non-null (summed by the dW GEMM when that is the basic SIMT tile, the only
// kernel that sums rows on the way, else by column_sums).
template <typename T>
void weight_and_bias_gradients(const View<T>& dz, const View<T>& x, T* grad_weight, T* grad_bias, Scratch& scratch,
                               cudaStream_t stream, bool allow_tf32 = false);

// grad_z (grad_y.rows, grad_y.cols), row-major with leading dimension ld_grad_z,
// = grad_y * act'(z) elementwise (act(z) recomputed for the derivatives that use it).
template <typename T>
void activation_grad(const View<T>& grad_y, const View<T>& z, Activation activation, T* grad_z, int64_t ld_grad_z,
                     cudaStream_t stream);

}  // namespace pylibnn::cuda
