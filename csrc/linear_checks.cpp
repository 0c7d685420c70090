// Shared argument validation for linear_forward / linear_backward (see linear_checks.h).
//
// Exception types follow what torch.nn.functional.linear raises for the same input, so a
// caller's `except` clauses keep working when nn.Linear becomes pylibnn.Linear:
//   - inputs F.linear rejects too (wrong sizes or ranks, mixed dtypes or devices) raise
//     RuntimeError (TORCH_CHECK);
//   - inputs F.linear accepts but pylibnn does not (integer and complex dtypes,
//     sparse, quantized or nested tensors, a 1-D weight, a broadcasting bias) raise
//     NotImplementedError (TORCH_CHECK_NOT_IMPLEMENTED, a RuntimeError subclass) whose
//     message says "is not supported".
// Every message starts with the op name and names the argument, expected and actual values.
#include "linear_checks.h"

#include <cstdio>
#include <string>

#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include "mlp_layout.h"

namespace pylibnn {
namespace {

// The floating types the ops take: float32 and float64 natively, bfloat16 and float16
// computed in float32 (see linear_cpu.cpp / linear_cuda.cu).
bool is_supported_dtype(at::ScalarType dtype) {
  return dtype == at::kFloat || dtype == at::kDouble || dtype == at::kBFloat16 || dtype == at::kHalf;
}

// Layout, storage kind and dtype: what the kernels can read at all. Checked before the
// shape, because a nested tensor has no sizes to report.
void check_kind(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.defined(), op, ": expected ", name, " to be a tensor, but got an undefined tensor");
  TORCH_CHECK_NOT_IMPLEMENTED(!t.is_nested(), op, ": nested ", name,
                              " is not supported; expected a dense (strided) tensor");
  TORCH_CHECK_NOT_IMPLEMENTED(t.layout() == at::kStrided, op, ": ", name, " with layout ", t.layout(),
                              " is not supported; expected a dense (strided) tensor");
  TORCH_CHECK_NOT_IMPLEMENTED(!t.is_quantized(), op, ": quantized ", name, " (dtype ", t.scalar_type(),
                              ") is not supported; expected float32, float64, bfloat16 or float16");
  TORCH_CHECK_NOT_IMPLEMENTED(is_supported_dtype(t.scalar_type()), op, ": ", name, " of dtype ",
                              t.scalar_type(), " is not supported; expected float32, float64, bfloat16 or float16");
}

void check_rank(const char* op, const char* name, const at::Tensor& t, int64_t expected_dim,
                const char* expected_shape) {
  TORCH_CHECK(t.dim() == expected_dim, op, ": expected ", name, " to be ", expected_dim, "-D ", expected_shape,
              ", but got a ", t.dim(), "-D tensor of shape ", t.sizes());
}

void check_same_dtype_and_device(const char* op, const at::Tensor& reference, const char* reference_name,
                                 const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device() == reference.device(), op, ": expected ", name, " to be on the device of ",
              reference_name, " (", reference.device(), "), but got ", t.device());
  TORCH_CHECK(t.scalar_type() == reference.scalar_type(), op, ": expected ", name, " to have the dtype of ",
              reference_name, " (", reference.scalar_type(), "), but got ", t.scalar_type());
}

// Whether `sizes` broadcasts to (rows, cols), as F.linear's addmm lets a bias do.
bool broadcasts_to(at::IntArrayRef sizes, int64_t rows, int64_t cols) {
  if (sizes.size() > 2) return false;
  const int64_t target[2] = {rows, cols};
  for (size_t i = 0; i < sizes.size(); ++i) {
    const int64_t size = sizes[sizes.size() - 1 - i];
    if (size != 1 && size != target[1 - i]) return false;
  }
  return true;
}

}  // namespace

void check_linear_forward_args(const at::Tensor& input, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias, const char* op) {
  const bool has_bias = bias.has_value() && bias->defined();
  check_kind(op, "input", input);
  check_kind(op, "weight", weight);
  if (has_bias) check_kind(op, "bias", *bias);
  check_rank(op, "input", input, 2, "(M, K)");
  TORCH_CHECK_NOT_IMPLEMENTED(weight.dim() != 1, op, ": a 1-D weight (F.linear's vector form) is not supported; ",
                              "expected weight to be 2-D (N, K), but got shape ", weight.sizes());
  check_rank(op, "weight", weight, 2, "(N, K)");
  check_same_dtype_and_device(op, input, "input", weight, "weight");
  if (has_bias) check_same_dtype_and_device(op, input, "input", *bias, "bias");
  TORCH_CHECK(input.size(1) == weight.size(1), op, ": expected input.size(1) to equal weight.size(1) (K = ",
              weight.size(1), "), but got input of shape ", input.sizes(), " and weight of shape ",
              weight.sizes());
  if (has_bias && !(bias->dim() == 1 && bias->size(0) == weight.size(0))) {
    // F.linear broadcasts the bias over the output; only the (N) bias of nn.Linear is supported.
    TORCH_CHECK_NOT_IMPLEMENTED(!broadcasts_to(bias->sizes(), input.size(0), weight.size(0)), op,
                                ": a bias of shape ", bias->sizes(), " broadcast over the output is not supported; ",
                                "expected bias of shape [", weight.size(0), "] (N = weight.size(0))");
    TORCH_CHECK(false, op, ": expected bias of shape [", weight.size(0), "] (N = weight.size(0)), but got ",
                bias->sizes());
  }
}

void check_linear_backward_args(const at::Tensor& grad_output, const at::Tensor& input,
                                const at::Tensor& weight, const char* op) {
  check_kind(op, "grad_output", grad_output);
  check_kind(op, "input", input);
  check_kind(op, "weight", weight);
  check_rank(op, "grad_output", grad_output, 2, "(M, N)");
  check_rank(op, "input", input, 2, "(M, K)");
  check_rank(op, "weight", weight, 2, "(N, K)");
  check_same_dtype_and_device(op, grad_output, "grad_output", input, "input");
  check_same_dtype_and_device(op, grad_output, "grad_output", weight, "weight");
  TORCH_CHECK(input.size(1) == weight.size(1), op, ": expected input.size(1) to equal weight.size(1) (K = ",
              weight.size(1), "), but got input of shape ", input.sizes(), " and weight of shape ",
              weight.sizes());
  TORCH_CHECK(grad_output.size(0) == input.size(0) && grad_output.size(1) == weight.size(0), op,
              ": expected grad_output of shape [", input.size(0), ", ", weight.size(0),
              "] (M = input.size(0), N = weight.size(0)), but got ", grad_output.sizes());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> empty_linear_gradients(const at::Tensor& grad_output,
                                                                      const at::Tensor& input,
                                                                      const at::Tensor& weight,
                                                                      std::array<bool, 3> output_mask) {
  const int64_t M = input.size(0), K = input.size(1), N = weight.size(0);
  const auto options = grad_output.options();
  const auto shaped = [&](bool requested, std::initializer_list<int64_t> sizes) {
    return requested ? at::empty(sizes, options) : at::empty({0}, options);
  };
  return {shaped(output_mask[0], {M, K}), shaped(output_mask[1], {N, K}), shaped(output_mask[2], {N})};
}

Activation activation_from_name(const char* op, std::string_view name) {
  static constexpr std::pair<std::string_view, Activation> kNames[] = {
      {"none", Activation::None}, {"relu", Activation::ReLU},     {"gelu", Activation::GELU},
      {"gelu_tanh", Activation::GELUTanh}, {"silu", Activation::SiLU}, {"tanh", Activation::Tanh},
      {"sigmoid", Activation::Sigmoid}};
  for (const auto& [known, activation] : kNames)
    if (name == known) return activation;
  TORCH_CHECK_VALUE(false, op, ": expected activation to be one of ", kActivationNames, ", but got '",
                    std::string(name), "'");
}

void check_linear_act_forward_args(const at::Tensor& input, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias) {
  check_linear_forward_args(input, weight, bias, "pylibnn.linear_act_forward");
}

void check_linear_act_backward_args(const at::Tensor& grad_output, const at::Tensor& input,
                                    const at::Tensor& weight, const at::Tensor& preactivation) {
  constexpr const char* op = "pylibnn.linear_act_backward";
  check_linear_backward_args(grad_output, input, weight, op);
  check_kind(op, "preactivation", preactivation);
  check_same_dtype_and_device(op, grad_output, "grad_output", preactivation, "preactivation");
  TORCH_CHECK(preactivation.sizes() == grad_output.sizes(), op, ": expected preactivation of shape ",
              grad_output.sizes(), " (the shape of grad_output), but got ", preactivation.sizes());
}

namespace {

std::vector<int64_t> check_mlp_layers(const char* op, const at::Tensor& input, at::TensorList weights) {
  TORCH_CHECK(!weights.empty(), op, ": expected at least one weight, but got an empty list");
  std::vector<int64_t> widths;
  int64_t fan_in = input.size(1);
  for (size_t l = 0; l < weights.size(); ++l) {
    const at::Tensor& w = weights[l];
    char name[32];  // not a std::string: this runs on every call of a small network
    std::snprintf(name, sizeof(name), "weights[%zu]", l);
    check_kind(op, name, w);
    check_rank(op, name, w, 2, "(N_l, K_l)");
    check_same_dtype_and_device(op, input, "input", w, name);
    TORCH_CHECK(w.size(1) == fan_in, op, ": expected ", name, ".size(1) to equal ",
                l == 0 ? "input.size(1)" : "the previous layer's width", " (", fan_in, "), but got ", name,
                " of shape ", w.sizes());
    widths.push_back(w.size(0));
    fan_in = w.size(0);
  }
  return widths;
}

}  // namespace

std::vector<int64_t> check_mlp_forward_args(const at::Tensor& input, at::TensorList weights,
                                            const c10::List<std::optional<at::Tensor>>& biases) {
  constexpr const char* op = "pylibnn.mlp_forward";
  check_kind(op, "input", input);
  check_rank(op, "input", input, 2, "(M, K)");
  const std::vector<int64_t> widths = check_mlp_layers(op, input, weights);
  TORCH_CHECK(biases.size() == weights.size(), op, ": expected one bias entry (a tensor or None) per weight (",
              weights.size(), "), but got ", biases.size());
  for (size_t l = 0; l < biases.size(); ++l) {
    const std::optional<at::Tensor> bias = biases.get(l);
    if (!bias.has_value() || !bias->defined()) continue;
    char name[32];
    std::snprintf(name, sizeof(name), "biases[%zu]", l);
    check_kind(op, name, *bias);
    check_same_dtype_and_device(op, input, "input", *bias, name);
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == widths[l], op, ": expected ", name, " of shape [",
                widths[l], "] (weights[", l, "].size(0)), but got ", bias->sizes());
  }
  return widths;
}

std::vector<int64_t> check_mlp_backward_args(const at::Tensor& grad_output, const at::Tensor& input,
                                             at::TensorList weights, const at::Tensor& hidden,
                                             Activation activation, const c10::List<bool>& has_bias) {
  constexpr const char* op = "pylibnn.mlp_backward";
  check_kind(op, "grad_output", grad_output);
  check_kind(op, "input", input);
  check_kind(op, "hidden", hidden);
  check_rank(op, "input", input, 2, "(M, K)");
  check_rank(op, "grad_output", grad_output, 2, "(M, N)");
  check_same_dtype_and_device(op, input, "input", grad_output, "grad_output");
  check_same_dtype_and_device(op, input, "input", hidden, "hidden");
  const std::vector<int64_t> widths = check_mlp_layers(op, input, weights);
  TORCH_CHECK(has_bias.size() == weights.size(), op, ": expected one has_bias entry per weight (", weights.size(),
              "), but got ", has_bias.size());
  TORCH_CHECK(grad_output.size(0) == input.size(0) && grad_output.size(1) == widths.back(), op,
              ": expected grad_output of shape [", input.size(0), ", ", widths.back(),
              "] (M = input.size(0), N = weights[-1].size(0)), but got ", grad_output.sizes());
  const MlpHiddenLayout layout(input.size(0), widths, activation != Activation::None);
  TORCH_CHECK(hidden.dim() == 2 && hidden.size(0) == layout.rows && hidden.size(1) == layout.cols &&
                  hidden.is_contiguous(),
              op, ": expected hidden to be the contiguous [", layout.rows, ", ", layout.cols,
              "] tensor saved by mlp_forward for these shapes, but got shape ", hidden.sizes(),
              hidden.is_contiguous() ? "" : " (not contiguous)");
  return widths;
}

}  // namespace pylibnn
