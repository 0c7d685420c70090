// CUDA implementations of the fused MLP ops (schemas: csrc/pylibnn.cpp, hidden layout:
// csrc/mlp_layout.h). Layer l of L maps a_{l-1} (M, K_l) to a_l (M, N_l), a_{-1} = input:
//   mlp_forward   z_l = a_{l-1} @ W_l^T + b_l;  a_l = act(z_l) for l < L-1;  output = z_{L-1}
//   mlp_backward  dz_{L-1} = grad_output, and for l = L-1 .. 0:
//                 dW_l = dz_l^T @ a_{l-1},  db_l = dz_l^T @ 1,  da_{l-1} = dz_l @ W_l,
//                 dz_{l-1} = da_{l-1} * act'(z_{l-1}, a_{l-1})   (z, a read from hidden)
//
// Two strategies, chosen on the shapes alone:
//  * Fused (K_0 and every N_l <= 128, L <= kFusedMaxLayers = 32): one launch of
//    mlp_forward_fused_kernel / mlp_backward_fused_kernel (csrc/cuda/mlp_kernels.cuh: tiles,
//    shared memory, determinism) runs every layer; the backward adds its per-block partial
//    dW, db with one reduce_partials_kernel launch per gradient. The backward uses at most
//    256 blocks, each walking a fixed run of row tiles; fewer when 256 rows of partials
//    (sum_l N_l K_l + N_l elements each) would pass 2^24 elements, down to 16 blocks (then
//    up to 16 x 32 x (128 x 128 + 128) elements for 32 layers of 128).
//    The kernels read weights as contiguous (N, K) rows: the host makes .contiguous() copies
//    of the (at most 128 x 128) weights that are not; input and grad_output are read
//    strided in place.
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
// The same file is the emulated CUDA backend when a host compiler builds it (op_backend.h).
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
#include <c10/util/SmallVector.h>
#include <torch/library.h>

#include "activation.h"
#include "cuda/gemm_launch.h"
#include "cuda/launch.h"
#include "cuda/mlp_kernels.cuh"
#include "cuda/mlp_launch.h"
#include "cuda/op_backend.h"
#include "linear_checks.h"
#include "mlp_layout.h"
#include "reduced_precision.h"

namespace pylibnn::cuda {
namespace {

constexpr const char* kForwardOp = "pylibnn.mlp_forward";
constexpr const char* kBackwardOp = "pylibnn.mlp_backward";

bool fits_fused(int64_t input_width, const std::vector<int64_t>& widths) {
  if (input_width > kFusedMaxWidth || static_cast<int64_t>(widths.size()) > kFusedMaxLayers) return false;
  return std::all_of(widths.begin(), widths.end(), [](int64_t n) { return n <= kFusedMaxWidth; });
}

std::optional<at::Tensor> bias_at(const c10::List<std::optional<at::Tensor>>& biases, size_t l) {
  std::optional<at::Tensor> bias = biases.get(l);
  if (bias.has_value() && !bias->defined()) return std::nullopt;
  return bias;
}

// The parameters both fused kernels share: the input, the activation, hidden's shape, and
// the layer descriptors with the contiguous weights they point to (kept alive by the
// caller until the launch is enqueued).
template <typename T>
void describe_layers(FusedMlpParams<T>& p, const at::Tensor& input, Activation activation, at::TensorList weights,
                     const c10::List<std::optional<at::Tensor>>* biases, const MlpHiddenLayout& layout,
                     std::vector<at::Tensor>& contiguous_weights) {
  p.activation = activation;
  p.M = input.size(0);
  p.hidden_rows = layout.rows;
  p.hidden_ld = layout.cols;
  p.input = input.const_data_ptr<T>();
  p.input_row_stride = input.stride(0);
  p.input_col_stride = input.stride(1);
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
  if (input.size(0) == 0) return;
  FusedMlpParams<T> p{};
  std::vector<at::Tensor> contiguous_weights;
  describe_layers<T>(p, input, activation, weights, &biases, layout, contiguous_weights);
  p.output = output.mutable_data_ptr<T>();
  p.hidden = save_hidden ? hidden.mutable_data_ptr<T>() : nullptr;
  launch_mlp_forward_fused(p, stream);
}

template <typename T>
void mlp_forward_per_layer(const at::Tensor& input, at::TensorList weights,
                           const c10::List<std::optional<at::Tensor>>& biases, Activation activation,
                           const MlpHiddenLayout& layout, at::Tensor& output, at::Tensor& hidden, bool save_hidden,
                           cudaStream_t stream) {
  const int64_t M = input.size(0);
  if (M == 0) return;  // nothing to write (and hidden's data pointer may be null: no band offsets)
  const size_t L = weights.size();
  View<T> a = view_of<T>(input);
  // a_l when hidden is not saved. Replacing it while the GEMM reading it is still queued is
  // safe: the caching allocator reuses memory in stream order.
  at::Tensor a_buffer;
  TensorScratch scratch(input.options());
  const GemmContext context = gemm_context<T>(scratch);
  for (size_t l = 0; l < L; ++l) {
    const at::Tensor& w = weights[l];
    const int64_t N = w.size(0);
    const std::optional<at::Tensor> bias = bias_at(biases, l);
    const T* bias_data = bias ? bias->const_data_ptr<T>() : nullptr;
    const int64_t bias_stride = bias ? bias->stride(0) : 0;
    const View<T> w_t = view_of<T>(w).transposed();
    if (l + 1 == L) {
      gemm<T>(a, w_t, output.mutable_data_ptr<T>(), N, bias_data, bias_stride, nullptr, stream, GemmEpilogue<T>(),
              context);
    } else if (save_hidden) {
      T* base = hidden.mutable_data_ptr<T>();
      T* y = base + layout.y_offset[l];
      T* z = activation != Activation::None ? base + layout.z_offset[l] : nullptr;
      gemm<T>(a, w_t, y, layout.cols, bias_data, bias_stride, nullptr, stream,
              GemmEpilogue<T>::forward(activation, z, layout.cols), context);
      a = View<T>{y, M, N, layout.cols, 1};
    } else {
      at::Tensor next = at::empty({M, N}, input.options());
      gemm<T>(a, w_t, next.mutable_data_ptr<T>(), N, bias_data, bias_stride, nullptr, stream,
              GemmEpilogue<T>::forward(activation), context);
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
    return mlp_forward_in_float32(mlp_forward_cuda, input, weights, biases, activation_name, save_hidden);
  }
  const OpDevice device(input);
  const cudaStream_t stream = device.stream();
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
  describe_layers<T>(p, input, activation, weights, nullptr, layout, contiguous_weights);
  const int64_t partials_stride = lay_out_partials(p, has_bias.data());
  const FusedBackwardSplit split = split_fused_backward(M, Tile::BACKWARD_ROWS, partials_stride);
  at::Tensor partials;
  if (split.blocks > 0) {
    partials = at::empty({split.blocks, partials_stride}, grad_output.options());
    p.grad_output = grad_output.const_data_ptr<T>();
    p.grad_output_row_stride = grad_output.stride(0);
    p.grad_output_col_stride = grad_output.stride(1);
    p.saved_hidden = hidden.const_data_ptr<T>();
    p.grad_input = input_grad ? grads.grad_input.mutable_data_ptr<T>() : nullptr;
    p.partials = partials.mutable_data_ptr<T>();
    p.partials_stride = partials_stride;
    launch_mlp_backward_fused(p, split, stream);
  }
  // M == 0: no rows of partials, the sums are zeros.
  const T* partials_data = partials.defined() ? partials.const_data_ptr<T>() : nullptr;
  const int64_t summed_blocks = partials.defined() ? split.blocks : 0;
  for (size_t l = 0; l < weights.size(); ++l) {
    const FusedLayer<T>& layer = p.layers[l];
    reduce_partials(partials_data, summed_blocks, partials_stride, layer.grad_weight_offset,
                    static_cast<int64_t>(layer.n) * layer.k, grads.grad_weights[l].mutable_data_ptr<T>(), stream);
    if (has_bias[l]) {
      reduce_partials(partials_data, summed_blocks, partials_stride, layer.grad_bias_offset,
                      static_cast<int64_t>(layer.n), grads.grad_biases[l].mutable_data_ptr<T>(), stream);
    }
  }
}

template <typename T>
void mlp_backward_per_layer(const at::Tensor& grad_output, const at::Tensor& input, at::TensorList weights,
                            const at::Tensor& hidden, Activation activation, at::ArrayRef<bool> has_bias,
                            bool input_grad, const MlpHiddenLayout& layout, MlpGradients& grads,
                            cudaStream_t stream) {
  const int64_t M = input.size(0);
  if (M == 0) {
    // No rows: the weight and bias gradients are empty sums (and hidden's data pointer may
    // be null, so no band offsets are taken).
    for (size_t l = 0; l < weights.size(); ++l) {
      grads.grad_weights[l].zero_();
      if (has_bias[l]) grads.grad_biases[l].zero_();
    }
    return;
  }
  const auto options = grad_output.options();
  TensorScratch scratch(options);
  const GemmContext context = gemm_context<T>(scratch);
  const T* saved = hidden.const_data_ptr<T>();
  View<T> dz = view_of<T>(grad_output);
  at::Tensor dz_buffer;  // dz_{l-1}; replaced in stream order, as in mlp_forward_per_layer
  for (size_t l = weights.size(); l-- > 0;) {
    const at::Tensor& w = weights[l];
    const int64_t K = w.size(1);
    const View<T> a_prev = l > 0 ? View<T>{saved + layout.y_offset[l - 1], M, K, layout.cols, 1} : view_of<T>(input);
    weight_and_bias_gradients<T>(dz, a_prev, grads.grad_weights[l].mutable_data_ptr<T>(),
                                 has_bias[l] ? grads.grad_biases[l].mutable_data_ptr<T>() : nullptr, scratch, stream,
                                 context.allow_tf32);
    if (l > 0) {
      // dz_{l-1} = (dz_l @ W_l) * act'(z_{l-1}, a_{l-1}), the derivative applied in the epilogue.
      at::Tensor next = at::empty({M, K}, options);
      const GemmEpilogue<T> epilogue =
          activation == Activation::None
              ? GemmEpilogue<T>()
              : GemmEpilogue<T>::backward(activation, saved + layout.z_offset[l - 1], saved + layout.y_offset[l - 1],
                                          layout.cols);
      gemm<T>(dz, view_of<T>(w), next.mutable_data_ptr<T>(), K, nullptr, 0, nullptr, stream, epilogue, context);
      dz = View<T>{next.const_data_ptr<T>(), M, K, K, 1};
      dz_buffer = std::move(next);
    } else if (input_grad) {
      gemm<T>(dz, view_of<T>(w), grads.grad_input.mutable_data_ptr<T>(), K, nullptr, 0, nullptr, stream,
              GemmEpilogue<T>(), context);
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
      check_mlp_backward_args(grad_output, input, weights, hidden, activation, has_bias_list);
  const at::ScalarType dtype = input.scalar_type();
  if (is_reduced_precision(dtype)) {
    return mlp_backward_in_float32(mlp_backward_cuda, grad_output, input, weights, hidden, activation_name,
                                   has_bias_list, input_grad);
  }
  const OpDevice device(input);
  const cudaStream_t stream = device.stream();
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

PYLIBNN_CUDA_BACKEND_IMPL(m) {
  m.impl("mlp_forward", &pylibnn::cuda::mlp_forward_cuda);
  m.impl("mlp_backward", &pylibnn::cuda::mlp_backward_cuda);
}
