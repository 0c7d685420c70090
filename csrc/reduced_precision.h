// bfloat16 and float16 in the pylibnn ops: both backends widen the operands to float32, run
// their float32 kernels (products accumulated in float32) and round each result once, as
// torch's own CPU and CUDA linear do for these dtypes. The widened copies are the price of
// reusing the float32 micro-kernels; they are O(MK + NK + MN) next to O(MNK) arithmetic.
#pragma once

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

}  // namespace pylibnn
