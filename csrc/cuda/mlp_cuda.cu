// The CUDA backend's fused MLP ops (cuda_backend.h; schemas: ops/op_list.h, hidden layout:
// mlp_layout.h; checks and allocation are the op layer's). Layer l of L maps a_{l-1} (M, K_l) to a_l (M, N_l), a_{-1} = input:
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
// reproducible. bfloat16 / float16 run in float32 and round each output once (widened here,
// see is_16_bit below); hidden is returned in the input dtype and widened again by the
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

#include "activation.h"
#include "cuda/gemm_launch.h"
#include "cuda/launch.h"
#include "cuda/mlp_kernels.cuh"
#include "cuda/mlp_launch.h"
#include "cuda/cuda_backend.h"
#include "cuda/op_backend.h"
#include "mlp_layout.h"

namespace pylibnn::cuda {
namespace {

bool fits_fused(int64_t input_width, const std::vector<int64_t>& widths) {
  if (input_width > kFusedMaxWidth || static_cast<int64_t>(widths.size()) > kFusedMaxLayers) return false;
  return std::all_of(widths.begin(), widths.end(), [](int64_t n) { return n <= kFusedMaxWidth; });
}

// bfloat16 / float16 networks run in float32 here, as the op layer runs them for a backend
// that does not compute those dtypes (CudaBackend computes them for the single-layer ops, on
// the tensor cores): the fused kernels hold float32 / float64 tiles, and the ops' contract
// keeps every hidden layer in float32 between layers (only the outputs, hidden included, are
// rounded, once).
bool is_16_bit(at::ScalarType dtype) { return dtype == at::kBFloat16 || dtype == at::kHalf; }

at::Tensor widened(const at::Tensor& t) { return t.to(at::kFloat); }
std::optional<at::Tensor> widened(const std::optional<at::Tensor>& t) {
  return t.has_value() ? std::optional<at::Tensor>(t->to(at::kFloat)) : std::nullopt;
}
std::vector<at::Tensor> widened(at::TensorList tensors) {
  std::vector<at::Tensor> wide;
  for (const at::Tensor& t : tensors) wide.push_back(t.to(at::kFloat));
  return wide;
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
  p.input = data_of<T>(input);
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
        layer.bias = data_of<T>(*bias);
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
                       const MlpHiddenLayout& layout, const at::Tensor& output, const at::Tensor& hidden,
                       cudaStream_t stream) {
  if (input.size(0) == 0) return;
  FusedMlpParams<T> p{};
  std::vector<at::Tensor> contiguous_weights;
  describe_layers<T>(p, input, activation, weights, &biases, layout, contiguous_weights);
  p.output = mutable_data_of<T>(output);
  p.hidden = hidden.defined() ? mutable_data_of<T>(hidden) : nullptr;
  launch_mlp_forward_fused(p, stream);
}

template <typename T>
void mlp_forward_per_layer(const at::Tensor& input, at::TensorList weights,
                           const c10::List<std::optional<at::Tensor>>& biases, Activation activation,
                           const MlpHiddenLayout& layout, const at::Tensor& output, const at::Tensor& hidden,
                           cudaStream_t stream) {
  const int64_t M = input.size(0);
  if (M == 0) return;  // nothing to write (and hidden's data pointer may be null: no band offsets)
  const bool save_hidden = hidden.defined();
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
    const T* bias_data = bias ? data_of<T>(*bias) : nullptr;
    const int64_t bias_stride = bias ? bias->stride(0) : 0;
    const View<T> w_t = view_of<T>(w).transposed();
    if (l + 1 == L) {
      gemm<T>(a, w_t, mutable_data_of<T>(output), N, bias_data, bias_stride, nullptr, stream, GemmEpilogue<T>(),
              context);
    } else if (save_hidden) {
      T* base = mutable_data_of<T>(hidden);
      T* y = base + layout.y_offset[l];
      T* z = activation != Activation::None ? base + layout.z_offset[l] : nullptr;
      gemm<T>(a, w_t, y, layout.cols, bias_data, bias_stride, nullptr, stream,
              GemmEpilogue<T>::forward(activation, z, layout.cols), context);
      a = View<T>{y, M, N, layout.cols, 1};
    } else {
      at::Tensor next = at::empty({M, N}, input.options());
      gemm<T>(a, w_t, mutable_data_of<T>(next), N, bias_data, bias_stride, nullptr, stream,
              GemmEpilogue<T>::forward(activation), context);
      a = View<T>{data_of<T>(next), M, N, N, 1};
      a_buffer = std::move(next);
    }
  }
}

// The gradients mlp_backward writes (allocated by the op layer; grad_input undefined unless
// requested, grad_biases[l] undefined without a bias).
struct MlpGradientOutputs {
  const at::Tensor& grad_input;
  const std::vector<at::Tensor>& grad_weights;
  const std::vector<at::Tensor>& grad_biases;
};

template <typename T>
void mlp_backward_fused(const at::Tensor& grad_output, const at::Tensor& input, at::TensorList weights,
                        const at::Tensor& hidden, Activation activation, const MlpHiddenLayout& layout,
                        const MlpGradientOutputs& grads, cudaStream_t stream) {
  using Tile = FusedMlpTile<T>;
  const int64_t M = input.size(0);
  FusedMlpParams<T> p{};
  std::vector<at::Tensor> contiguous_weights;
  describe_layers<T>(p, input, activation, weights, nullptr, layout, contiguous_weights);
  c10::SmallVector<bool, 16> has_bias;
  for (const at::Tensor& g : grads.grad_biases) has_bias.push_back(g.defined());
  const int64_t partials_stride = lay_out_partials(p, has_bias.data());
  const FusedBackwardSplit split = split_fused_backward(M, Tile::BACKWARD_ROWS, partials_stride);
  at::Tensor partials;
  if (split.blocks > 0) {
    partials = at::empty({split.blocks, partials_stride}, grad_output.options());
    p.grad_output = data_of<T>(grad_output);
    p.grad_output_row_stride = grad_output.stride(0);
    p.grad_output_col_stride = grad_output.stride(1);
    p.saved_hidden = data_of<T>(hidden);
    p.grad_input = grads.grad_input.defined() ? mutable_data_of<T>(grads.grad_input) : nullptr;
    p.partials = mutable_data_of<T>(partials);
    p.partials_stride = partials_stride;
    launch_mlp_backward_fused(p, split, stream);
  }
  // M == 0: no rows of partials, the sums are zeros.
  const T* partials_data = partials.defined() ? data_of<T>(partials) : nullptr;
  const int64_t summed_blocks = partials.defined() ? split.blocks : 0;
  for (size_t l = 0; l < weights.size(); ++l) {
    const FusedLayer<T>& layer = p.layers[l];
    reduce_partials(partials_data, summed_blocks, partials_stride, layer.grad_weight_offset,
                    static_cast<int64_t>(layer.n) * layer.k, mutable_data_of<T>(grads.grad_weights[l]), stream);
    if (has_bias[l]) {
      reduce_partials(partials_data, summed_blocks, partials_stride, layer.grad_bias_offset,
                      static_cast<int64_t>(layer.n), mutable_data_of<T>(grads.grad_biases[l]), stream);
    }
  }
}

template <typename T>
void mlp_backward_per_layer(const at::Tensor& grad_output, const at::Tensor& input, at::TensorList weights,
                            const at::Tensor& hidden, Activation activation, const MlpHiddenLayout& layout,
                            const MlpGradientOutputs& grads, cudaStream_t stream) {
  const int64_t M = input.size(0);
  if (M == 0) {
    // No rows: the weight and bias gradients are empty sums (and hidden's data pointer may
    // be null, so no band offsets are taken).
    for (size_t l = 0; l < weights.size(); ++l) {
      grads.grad_weights[l].zero_();
      if (grads.grad_biases[l].defined()) grads.grad_biases[l].zero_();
    }
    return;
  }
  const auto options = grad_output.options();
  TensorScratch scratch(options);
  const GemmContext context = gemm_context<T>(scratch);
  const T* saved = data_of<T>(hidden);
  View<T> dz = view_of<T>(grad_output);
  at::Tensor dz_buffer;  // dz_{l-1}; replaced in stream order, as in mlp_forward_per_layer
  for (size_t l = weights.size(); l-- > 0;) {
    const at::Tensor& w = weights[l];
    const int64_t K = w.size(1);
    const View<T> a_prev = l > 0 ? View<T>{saved + layout.y_offset[l - 1], M, K, layout.cols, 1} : view_of<T>(input);
    weight_and_bias_gradients<T>(dz, a_prev, mutable_data_of<T>(grads.grad_weights[l]),
                                 grads.grad_biases[l].defined() ? mutable_data_of<T>(grads.grad_biases[l]) : nullptr,
                                 scratch, stream, context.allow_tf32);
    if (l > 0) {
      // dz_{l-1} = (dz_l @ W_l) * act'(z_{l-1}, a_{l-1}), the derivative applied in the epilogue.
      at::Tensor next = at::empty({M, K}, options);
      const GemmEpilogue<T> epilogue =
          activation == Activation::None
              ? GemmEpilogue<T>()
              : GemmEpilogue<T>::backward(activation, saved + layout.z_offset[l - 1], saved + layout.y_offset[l - 1],
                                          layout.cols);
      gemm<T>(dz, view_of<T>(w), mutable_data_of<T>(next), K, nullptr, 0, nullptr, stream, epilogue, context);
      dz = View<T>{data_of<T>(next), M, K, K, 1};
      dz_buffer = std::move(next);
    } else if (grads.grad_input.defined()) {
      gemm<T>(dz, view_of<T>(w), mutable_data_of<T>(grads.grad_input), K, nullptr, 0, nullptr, stream,
              GemmEpilogue<T>(), context);
    }
  }
}

}  // namespace

void CudaBackend::mlp_forward(const at::Tensor& input, at::TensorList weights,
                              const c10::List<std::optional<at::Tensor>>& biases, Activation activation,
                              const at::Tensor& output, const at::Tensor& hidden) {
  if (is_16_bit(input.scalar_type())) {
    const at::Tensor output32 = at::empty(output.sizes(), output.options().dtype(at::kFloat));
    const at::Tensor hidden32 = hidden.defined() ? at::empty(hidden.sizes(), hidden.options().dtype(at::kFloat))
                                                 : at::Tensor();
    c10::List<std::optional<at::Tensor>> biases32;
    for (size_t l = 0; l < biases.size(); ++l) biases32.push_back(widened(bias_at(biases, l)));
    mlp_forward(input.to(at::kFloat), widened(weights), biases32, activation, output32, hidden32);
    output.copy_(output32);
    if (hidden.defined()) hidden.copy_(hidden32);
    return;
  }
  const OpDevice device(input);
  const cudaStream_t stream = device.stream();
  const std::vector<int64_t> widths = widths_of(weights);
  const MlpHiddenLayout layout(input.size(0), widths, activation != Activation::None);
  const bool fused = fits_fused(input.size(1), widths);
  // The fused kernel writes all of hidden, padding included; the per-layer GEMMs only the
  // bands, so there hidden starts zeroed.
  if (hidden.defined() && !fused) hidden.zero_();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "mlp_forward_cuda", [&] {
    if (fused) {
      mlp_forward_fused<scalar_t>(input, weights, biases, activation, layout, output, hidden, stream);
    } else {
      mlp_forward_per_layer<scalar_t>(input, weights, biases, activation, layout, output, hidden, stream);
    }
  });
}

void CudaBackend::mlp_backward(const at::Tensor& grad_output, const at::Tensor& input, at::TensorList weights,
                               const at::Tensor& hidden, Activation activation, const at::Tensor& grad_input,
                               const std::vector<at::Tensor>& grad_weights,
                               const std::vector<at::Tensor>& grad_biases) {
  if (is_16_bit(input.scalar_type())) {
    const auto float_like = [](const at::Tensor& t) {
      return t.defined() ? at::empty(t.sizes(), t.options().dtype(at::kFloat)) : at::Tensor();
    };
    const at::Tensor grad_input32 = float_like(grad_input);
    std::vector<at::Tensor> grad_weights32, grad_biases32;
    for (const at::Tensor& g : grad_weights) grad_weights32.push_back(float_like(g));
    for (const at::Tensor& g : grad_biases) grad_biases32.push_back(float_like(g));
    mlp_backward(grad_output.to(at::kFloat), input.to(at::kFloat), widened(weights),
                 hidden.defined() ? hidden.to(at::kFloat) : hidden, activation,
                 grad_input32, grad_weights32, grad_biases32);
    if (grad_input.defined()) grad_input.copy_(grad_input32);
    for (size_t l = 0; l < grad_weights.size(); ++l) grad_weights[l].copy_(grad_weights32[l]);
    for (size_t l = 0; l < grad_biases.size(); ++l) {
      if (grad_biases[l].defined()) grad_biases[l].copy_(grad_biases32[l]);
    }
    return;
  }
  const OpDevice device(input);
  const cudaStream_t stream = device.stream();
  const std::vector<int64_t> widths = widths_of(weights);
  const MlpHiddenLayout layout(input.size(0), widths, activation != Activation::None);
  const MlpGradientOutputs grads{grad_input, grad_weights, grad_biases};
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "mlp_backward_cuda", [&] {
    if (fits_fused(input.size(1), widths)) {
      mlp_backward_fused<scalar_t>(grad_output, input, weights, hidden, activation, layout, grads, stream);
    } else {
      mlp_backward_per_layer<scalar_t>(grad_output, input, weights, hidden, activation, layout, grads, stream);
    }
  });
}

}  // namespace pylibnn::cuda
