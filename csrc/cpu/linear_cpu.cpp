// The CPU backend's single-layer ops (cpu_backend.h): each product of the dense layer is one
// call of the GEMM engine (gemm.h).
//   linear_forward   y  = x @ W^T + b                  x (M, K), W (N, K), b (N) -> y (M, N)
//                    with an activation, z = x @ W^T + b, y = act(z): the activation is the
//                    GEMM's epilogue, applied per tile as the tile is stored (gemm.h)
//   linear_backward  dz = dy * act'(z) (dz = dy without activation), then
//                    dx = dz @ W,  dW = dz^T @ x,  db = dz^T @ 1
//                    dz is computed once, in one vectorized pass, and read by both products:
//                    applying act' inside the packing of each product would evaluate the
//                    transcendentals (gelu, silu, tanh) twice and pack grad_weight's operand
//                    column by column.
// bfloat16 and float16: the same products through gemm_widened (gemm.h): operands widened
// while packed, float32 arithmetic, each result rounded once. With an activation, dz is
// computed in float32 and rounded to the dtype before the two products read it (as torch's
// autograd rounds the gradient of its own bfloat16 activation).
// Registers the op layer over this backend for the CPU key.
#include <algorithm>
#include <type_traits>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include "cpu/cpu_backend.h"
#include "cpu/cpu_isa.h"
#include "cpu/gemm.h"
#include "cpu/output_cache.h"
#include "ops/op_layer.h"
#include "ops/op_list.h"

namespace pylibnn::cpu {
namespace {

template <typename T>
MatrixView<T> view_of(const at::Tensor& t) {
  return {t.const_data_ptr<T>(), t.size(0), t.size(1), t.stride(0), t.stride(1)};
}

// The engine for the dtype: float32 / float64 natively, bfloat16 / float16 widened.
template <typename T>
void run_gemm(const GemmArgs<T>& args) {
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) gemm(args);
  else gemm_widened(args);
}

// db = dz^T @ 1 without dW: the column sums of dz, float32 sums rounded once for the
// reduced dtypes, rows in order (deterministic).
template <typename T>
void column_sums(const MatrixView<T>& dz, T* db) {
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    row_sums(dz.transposed(), db);
  } else {
    at::parallel_for(0, dz.cols, 256, [&](int64_t begin, int64_t end) {
      std::vector<float> sums(end - begin, 0.0f);
      for (int64_t i = 0; i < dz.rows; ++i)
        for (int64_t j = begin; j < end; ++j) sums[j - begin] += static_cast<float>(dz(i, j));
      for (int64_t j = begin; j < end; ++j) db[j] = T(sums[j - begin]);
    });
  }
}

// grad_output * act'(preactivation), (M, N) contiguous, rows split over the threads.
at::Tensor activation_gradient(Activation act, const at::Tensor& grad_output, const at::Tensor& preactivation) {
  if (grad_output.scalar_type() == at::kBFloat16 || grad_output.scalar_type() == at::kHalf) {
    return activation_gradient(act, grad_output.to(at::kFloat), preactivation.to(at::kFloat))
        .to(grad_output.scalar_type());
  }
  const at::Tensor grad = grad_output.contiguous();
  const at::Tensor z = preactivation.contiguous();
  at::Tensor grad_z = empty_output(grad.sym_sizes(), grad.options());  // a temporary: back to the cache after the op
  const int64_t M = grad.size(0), N = grad.size(1);
  if (grad_z.numel() == 0) return grad_z;
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "linear_act_backward_cpu", [&] {
    const ActivationKernels<scalar_t>& activation = activation_kernels<scalar_t>(fused_microkernels());
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    const scalar_t* zp = z.const_data_ptr<scalar_t>();
    scalar_t* out = grad_z.mutable_data_ptr<scalar_t>();
    const int64_t grain = std::max<int64_t>(1, (32 * 1024) / std::max<int64_t>(N, 1));
    at::parallel_for(0, M, grain, [&](int64_t begin, int64_t end) {
      activation.gradient(act, g + begin * N, N, zp + begin * N, N, nullptr, 0, out + begin * N, N, end - begin, N);
    });
  });
  return grad_z;
}

}  // namespace

at::Tensor CpuBackend::empty_output(c10::SymIntArrayRef sizes, const at::TensorOptions& options) {
  return cpu::empty_output(sizes, options);
}

void CpuBackend::linear_forward(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                                Activation activation, const at::Tensor& output, const at::Tensor& preactivation) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, input.scalar_type(), "linear_forward_cpu", [&] {
    GemmArgs<scalar_t> args{view_of<scalar_t>(input), view_of<scalar_t>(weight).transposed(),
                            output.mutable_data_ptr<scalar_t>(), output.stride(0)};
    if (bias.defined()) {
      args.bias = bias.const_data_ptr<scalar_t>();
      args.bias_stride = bias.stride(0);
    }
    args.activation = activation;
    if (preactivation.defined()) {
      args.preactivation = preactivation.mutable_data_ptr<scalar_t>();
      args.ld_preactivation = preactivation.stride(0);
    }
    run_gemm(args);
  });
}

void CpuBackend::linear_backward(const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
                                 const at::Tensor& preactivation, Activation activation, const at::Tensor& grad_input,
                                 const at::Tensor& grad_weight, const at::Tensor& grad_bias) {
  const at::Tensor grad_z =
      activation == Activation::None ? grad_output : activation_gradient(activation, grad_output, preactivation);
  const int64_t K = input.size(1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, grad_z.scalar_type(), "linear_backward_cpu", [&] {
    const MatrixView<scalar_t> dz = view_of<scalar_t>(grad_z);
    if (grad_input.defined()) {
      run_gemm(GemmArgs<scalar_t>{dz, view_of<scalar_t>(weight), grad_input.mutable_data_ptr<scalar_t>(), K});
    }
    scalar_t* db = grad_bias.defined() ? grad_bias.mutable_data_ptr<scalar_t>() : nullptr;
    if (grad_weight.defined()) {
      GemmArgs<scalar_t> args{dz.transposed(), view_of<scalar_t>(input), grad_weight.mutable_data_ptr<scalar_t>(), K};
      args.a_row_sums = db;  // grad_bias from the same pass over grad_z
      run_gemm(args);
    } else if (db) {
      column_sums(dz, db);
    }
  });
}

}  // namespace pylibnn::cpu

PYLIBNN_REGISTER_OPS(pylibnn, CPU, pylibnn::OpLayer<pylibnn::cpu::CpuBackend>)
