// Autocast for the forward ops (linear_forward, linear_act_forward, mlp_forward): inside
// torch.autocast("cpu" / "cuda", dtype=...), pylibnn.linear casts its floating-point
// arguments to the autocast dtype exactly as F.linear does (it is on autocast's
// lower-precision list): float32 inputs become bfloat16 / float16, float64 ones are left
// alone, and the output has the cast dtype.
// The casts are recorded by autograd like any `to`, so gradients flow back in the
// original dtypes. The backward ops need no rule: autocast's fallthrough passes them on.
// The fused ops follow the same rule (linear_act_forward, mlp_forward: their products are
// F.linear's); the activation of a fused layer then runs in the cast dtype, as an
// activation after an autocast F.linear does.
#include <ATen/autocast_mode.h>
#include <torch/library.h>

#include "op_calls.h"

namespace pylibnn {
namespace {

template <c10::DeviceType device_type>
at::Tensor linear_forward_autocast(const at::Tensor& input, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias) {
  // Below autocast from here on, so the cast arguments are not cast again.
  c10::impl::ExcludeDispatchKeyGuard no_autocast(at::autocast::get_autocast_dispatch_key_from_device_type(device_type));
  const at::ScalarType dtype = at::autocast::get_autocast_dtype(device_type);
  return call_linear_forward(at::autocast::cached_cast(dtype, input, device_type),
                             at::autocast::cached_cast(dtype, weight, device_type),
                             at::autocast::cached_cast(dtype, bias, device_type));
}

template <c10::DeviceType device_type>
std::tuple<at::Tensor, at::Tensor> linear_act_forward_autocast(const at::Tensor& input, const at::Tensor& weight,
                                                               const std::optional<at::Tensor>& bias,
                                                               c10::string_view activation, bool save_preactivation) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(at::autocast::get_autocast_dispatch_key_from_device_type(device_type));
  const at::ScalarType dtype = at::autocast::get_autocast_dtype(device_type);
  return call_linear_act_forward(at::autocast::cached_cast(dtype, input, device_type),
                                 at::autocast::cached_cast(dtype, weight, device_type),
                                 at::autocast::cached_cast(dtype, bias, device_type), activation, save_preactivation);
}

template <c10::DeviceType device_type>
std::tuple<at::Tensor, at::Tensor> mlp_forward_autocast(const at::Tensor& input, at::TensorList weights,
                                                        const c10::List<std::optional<at::Tensor>>& biases,
                                                        c10::string_view activation, bool save_hidden) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(at::autocast::get_autocast_dispatch_key_from_device_type(device_type));
  const at::ScalarType dtype = at::autocast::get_autocast_dtype(device_type);
  std::vector<at::Tensor> cast_weights;
  for (const at::Tensor& w : weights) cast_weights.push_back(at::autocast::cached_cast(dtype, w, device_type));
  c10::List<std::optional<at::Tensor>> cast_biases;
  for (size_t l = 0; l < biases.size(); ++l)
    cast_biases.push_back(at::autocast::cached_cast(dtype, biases.get(l), device_type));
  return call_mlp_forward(at::autocast::cached_cast(dtype, input, device_type), cast_weights, cast_biases, activation,
                          save_hidden);
}

}  // namespace
}  // namespace pylibnn

TORCH_LIBRARY_IMPL(pylibnn, AutocastCPU, m) {
  m.impl("linear_forward", &pylibnn::linear_forward_autocast<c10::DeviceType::CPU>);
  m.impl("linear_act_forward", &pylibnn::linear_act_forward_autocast<c10::DeviceType::CPU>);
  m.impl("mlp_forward", &pylibnn::mlp_forward_autocast<c10::DeviceType::CPU>);
}

TORCH_LIBRARY_IMPL(pylibnn, AutocastCUDA, m) {
  m.impl("linear_forward", &pylibnn::linear_forward_autocast<c10::DeviceType::CUDA>);
  m.impl("linear_act_forward", &pylibnn::linear_act_forward_autocast<c10::DeviceType::CUDA>);
  m.impl("mlp_forward", &pylibnn::mlp_forward_autocast<c10::DeviceType::CUDA>);
}
