// Autocast for the linear_forward op: inside torch.autocast("cpu" / "cuda", dtype=...),
// pylibnn.linear casts its floating-point arguments to the autocast dtype exactly as
// F.linear does (it is on autocast's lower-precision list): float32 inputs become
// bfloat16 / float16, float64 ones are left alone, and the output has the cast dtype.
// The casts are recorded by autograd like any `to`, so gradients flow back in the
// original dtypes. linear_backward needs no rule: autocast's fallthrough passes it on.
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

}  // namespace
}  // namespace pylibnn

TORCH_LIBRARY_IMPL(pylibnn, AutocastCPU, m) {
  m.impl("linear_forward", &pylibnn::linear_forward_autocast<c10::DeviceType::CPU>);
}

TORCH_LIBRARY_IMPL(pylibnn, AutocastCUDA, m) {
  m.impl("linear_forward", &pylibnn::linear_forward_autocast<c10::DeviceType::CUDA>);
}
