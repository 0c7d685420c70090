// The six pylibnn ops, in one list: their schemas (TORCH_LIBRARY in pylibnn.cpp, and the
// test-only emulated CUDA library) and the registration of an implementation per dispatch key
// (register_ops below: every backend, the Meta kernels, autograd).
#pragma once

#include <tuple>
#include <vector>

#include <ATen/core/Tensor.h>
#include <torch/library.h>

namespace pylibnn {

// X(op, schema)
#define PYLIBNN_OPS(X)                                                                                           \
  /* y = input @ weight.T + bias;  input (M, K), weight (N, K), bias (N) -> y (M, N) */                          \
  X(linear_forward, "linear_forward(Tensor input, Tensor weight, Tensor? bias) -> Tensor")                      \
  /* (grad_input (M, K), grad_weight (N, K), grad_bias (N)); gradients whose output_mask entry is false are     \
     returned as empty (0,) tensors. */                                                                          \
  X(linear_backward,                                                                                             \
    "linear_backward(Tensor grad_output, Tensor input, Tensor weight, bool[3] output_mask)"                      \
    " -> (Tensor, Tensor, Tensor)")                                                                              \
  /* The fused ops (activation names and formulas: activation.h).                                               \
     (output = act(z), preactivation = z) with z = input @ weight.T + bias, both (M, N); preactivation is an    \
     empty (0,) tensor unless save_preactivation. */                                                             \
  X(linear_act_forward,                                                                                          \
    "linear_act_forward(Tensor input, Tensor weight, Tensor? bias, str activation, bool save_preactivation)"     \
    " -> (Tensor, Tensor)")                                                                                      \
  /* linear_backward of grad_z = grad_output * act'(preactivation). */                                          \
  X(linear_act_backward,                                                                                         \
    "linear_act_backward(Tensor grad_output, Tensor input, Tensor weight, Tensor preactivation, str activation," \
    " bool[3] output_mask) -> (Tensor, Tensor, Tensor)")                                                         \
  /* A whole MLP: layer l computes z_l = a_{l-1} @ weights[l].T + biases[l] (a_{-1} = input), a_l = act(z_l)   \
     for every layer but the last, whose z is the output (M, N_{L-1}). hidden: every hidden layer's z_l and     \
     a_l in the layout of mlp_layout.h, or an empty (0,) tensor unless save_hidden. */                           \
  X(mlp_forward,                                                                                                 \
    "mlp_forward(Tensor input, Tensor[] weights, Tensor?[] biases, str activation, bool save_hidden)"            \
    " -> (Tensor, Tensor)")                                                                                      \
  /* (grad_input (M, K_0) or empty (0,) unless input_grad, grad_weights[l] (N_l, K_l), grad_biases[l] (N_l)     \
     where has_bias[l], else empty (0,)). */                                                                     \
  X(mlp_backward,                                                                                                \
    "mlp_backward(Tensor grad_output, Tensor input, Tensor[] weights, Tensor hidden, str activation,"            \
    " bool[] has_bias, bool input_grad) -> (Tensor, Tensor[], Tensor[])")

// mlp_backward's result: (grad_input, grad_weights, grad_biases).
using MlpGradients = std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>>;

inline constexpr const char* kOpSchemas[] = {
#define PYLIBNN_OP_SCHEMA(op, schema) schema,
    PYLIBNN_OPS(PYLIBNN_OP_SCHEMA)
#undef PYLIBNN_OP_SCHEMA
};

// Registers Impl::<op> for every op of the list: Impl is a struct with the six ops as static
// functions of the schemas' C++ signatures (an OpLayer<Backend>, op_layer.h, or the autograd
// kernels).
template <typename Impl>
void register_ops(torch::Library& m) {
#define PYLIBNN_OP_IMPL(op, schema) m.impl(#op, &Impl::op);
  PYLIBNN_OPS(PYLIBNN_OP_IMPL)
#undef PYLIBNN_OP_IMPL
}

}  // namespace pylibnn

#define PYLIBNN_REGISTER_OPS(library, key, Impl) \
  TORCH_LIBRARY_IMPL(library, key, m) { ::pylibnn::register_ops<Impl>(m); }
