// bfloat16 and float16 in the pylibnn ops (all six): both backends widen the operands to float32, run
// their float32 kernels (products accumulated in float32) and round each result once, as
// torch's own CPU and CUDA linear do for these dtypes. The widened copies are the price of
// reusing the float32 micro-kernels; they are O(MK + NK + MN) next to O(MNK) arithmetic.
#pragma once

#include <array>
#include <optional>
#include <string_view>
#include <tuple>
#include <vector>

#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/zeros.h>

namespace pylibnn {

inline bool is_reduced_precision(at::ScalarType dtype) {
  return dtype == at::kBFloat16 || dtype == at::kHalf;
}

// A float32 copy of t when the kernel reads it; otherwise a float32 stand-in of t's shape
// that owns no memory (the backward op takes operands for their shapes alone).
inline at::Tensor widen(const at::Tensor& t, bool read = true) {
  if (read) return t.to(at::kFloat);
  return at::zeros({}, t.options().dtype(at::kFloat)).expand(t.sizes());
}

inline std::optional<at::Tensor> widen(const std::optional<at::Tensor>& t) {
  if (!t.has_value() || !t->defined()) return std::nullopt;
  return widen(*t);
}

// Runs a backend's float32 forward for bfloat16 / float16 arguments and rounds the result.
template <typename Forward>
at::Tensor forward_in_float32(Forward&& forward, const at::Tensor& input, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias) {
  return forward(widen(input), widen(weight), widen(bias)).to(input.scalar_type());
}

// The same for the backward; grad_input reads the weight, grad_weight the input, grad_bias
// neither, so only what a requested gradient reads is widened.
template <typename Backward>
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward_in_float32(Backward&& backward, const at::Tensor& grad_output,
                                                                   const at::Tensor& input, const at::Tensor& weight,
                                                                   std::array<bool, 3> output_mask) {
  auto [grad_input, grad_weight, grad_bias] =
      backward(widen(grad_output), widen(input, output_mask[1]), widen(weight, output_mask[0]), output_mask);
  const at::ScalarType dtype = grad_output.scalar_type();
  return {grad_input.to(dtype), grad_weight.to(dtype), grad_bias.to(dtype)};
}

// The same for the fused ops (pylibnn.cpp): each backend's op calls its own float32 version
// through these, so both widen and round alike. hidden / preactivation keep the input's
// dtype (what the fake kernels promise); the backward widens them again.
inline std::vector<at::Tensor> widen(at::TensorList tensors) {
  std::vector<at::Tensor> wide;
  for (const at::Tensor& t : tensors) wide.push_back(widen(t));
  return wide;
}

inline c10::List<std::optional<at::Tensor>> widen(const c10::List<std::optional<at::Tensor>>& tensors) {
  c10::List<std::optional<at::Tensor>> wide;
  for (size_t i = 0; i < tensors.size(); ++i) wide.push_back(widen(tensors.get(i)));
  return wide;
}

template <typename Forward>
std::tuple<at::Tensor, at::Tensor> act_forward_in_float32(Forward&& forward, const at::Tensor& input,
                                                          const at::Tensor& weight,
                                                          const std::optional<at::Tensor>& bias,
                                                          std::string_view activation, bool save_preactivation) {
  auto [output, preactivation] = forward(widen(input), widen(weight), widen(bias), activation, save_preactivation);
  return {output.to(input.scalar_type()), preactivation.to(input.scalar_type())};
}

// As backward_in_float32; the pre-activation is always read.
template <typename Backward>
std::tuple<at::Tensor, at::Tensor, at::Tensor> act_backward_in_float32(
    Backward&& backward, const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight,
    const at::Tensor& preactivation, std::string_view activation, std::array<bool, 3> output_mask) {
  auto [grad_input, grad_weight, grad_bias] =
      backward(widen(grad_output), widen(input, output_mask[1]), widen(weight, output_mask[0]), widen(preactivation),
               activation, output_mask);
  const at::ScalarType dtype = grad_output.scalar_type();
  return {grad_input.to(dtype), grad_weight.to(dtype), grad_bias.to(dtype)};
}

template <typename Forward>
std::tuple<at::Tensor, at::Tensor> mlp_forward_in_float32(Forward&& forward, const at::Tensor& input,
                                                          at::TensorList weights,
                                                          const c10::List<std::optional<at::Tensor>>& biases,
                                                          std::string_view activation, bool save_hidden) {
  auto [output, hidden] = forward(widen(input), widen(weights), widen(biases), activation, save_hidden);
  return {output.to(input.scalar_type()), hidden.to(input.scalar_type())};
}

template <typename Backward>
std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>> mlp_backward_in_float32(
    Backward&& backward, const at::Tensor& grad_output, const at::Tensor& input, at::TensorList weights,
    const at::Tensor& hidden, std::string_view activation, const c10::List<bool>& has_bias, bool input_grad) {
  auto [grad_input, grad_weights, grad_biases] = backward(widen(grad_output), widen(input), widen(weights),
                                                          widen(hidden), activation, has_bias, input_grad);
  const at::ScalarType dtype = input.scalar_type();
  for (at::Tensor& g : grad_weights) g = g.to(dtype);
  for (at::Tensor& g : grad_biases) g = g.to(dtype);
  return {grad_input.to(dtype), std::move(grad_weights), std::move(grad_biases)};
}

}  // namespace pylibnn
