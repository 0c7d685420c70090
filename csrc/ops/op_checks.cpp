// The argument checks of the pylibnn ops (op_checks.h).
//
// Exception types follow what torch.nn.functional.linear raises for the same input, so a
// caller's `except` clauses keep working when nn.Linear becomes pylibnn.Linear:
//   - inputs F.linear rejects too (wrong sizes or ranks, mixed dtypes or devices) raise
//     RuntimeError (TORCH_CHECK);
//   - inputs F.linear accepts but pylibnn does not (integer and complex dtypes, sparse,
//     quantized or nested tensors, a 1-D weight, a broadcasting bias, meta tensors mixed
//     with real ones) raise NotImplementedError (TORCH_CHECK_NOT_IMPLEMENTED, a
//     RuntimeError subclass) whose message says "is not supported".
// Sizes are read as SymInts (sym_size), never as int64_t: the fake kernels run these checks
// on the symbolic tensors of torch.compile, where size() would throw. A comparison of two
// symbolic sizes guards on it, as torch._check does in a Python fake kernel.
#include "ops/op_checks.h"

#include <cstdio>
#include <string>

#include <c10/util/Exception.h>

#include "mlp_layout.h"

namespace pylibnn {
namespace {

// The floating types the ops take: float32 and float64 natively, bfloat16 and float16
// natively or widened to float32 (the backend decides; op_layer.h).
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
              ", but got a ", t.dim(), "-D tensor of shape ", t.sym_sizes());
}

void check_same_dtype_and_device(const char* op, const at::Tensor& reference, const char* reference_name,
                                 const at::Tensor& t, const char* name) {
  // F.linear lets a meta tensor meet a real one (the result is meta); pylibnn does not.
  TORCH_CHECK_NOT_IMPLEMENTED(t.device() == reference.device() || (!t.is_meta() && !reference.is_meta()), op,
                              ": mixing meta and ", t.is_meta() ? reference.device() : t.device(), " tensors (", name,
                              " on ", t.device(), ", ", reference_name, " on ", reference.device(),
                              ") is not supported; expected all on one device");
  TORCH_CHECK(t.device() == reference.device(), op, ": expected ", name, " to be on the device of ",
              reference_name, " (", reference.device(), "), but got ", t.device());
  TORCH_CHECK(t.scalar_type() == reference.scalar_type(), op, ": expected ", name, " to have the dtype of ",
              reference_name, " (", reference.scalar_type(), "), but got ", t.scalar_type());
}

void check_same_k(const char* op, const at::Tensor& input, const at::Tensor& weight) {
  TORCH_CHECK(input.sym_size(1) == weight.sym_size(1), op, ": expected input.size(1) to equal weight.size(1) (K = ",
              weight.sym_size(1), "), but got input of shape ", input.sym_sizes(), " and weight of shape ",
              weight.sym_sizes());
}

// Whether `sizes` broadcasts to (rows, cols), as F.linear's addmm lets a bias do.
bool broadcasts_to(c10::SymIntArrayRef sizes, const c10::SymInt& rows, const c10::SymInt& cols) {
  if (sizes.size() > 2) return false;
  const c10::SymInt* target[2] = {&rows, &cols};
  for (size_t i = 0; i < sizes.size(); ++i) {
    const c10::SymInt& size = sizes[sizes.size() - 1 - i];
    if (size != 1 && size != *target[1 - i]) return false;
  }
  return true;
}

// A name like "weights[3]", without a std::string: this runs on every call of a small network.
struct IndexedName {
  char text[32];
  IndexedName(const char* base, size_t index) { std::snprintf(text, sizeof(text), "%s[%zu]", base, index); }
};

}  // namespace

LinearSizes check_linear_forward_args(const char* op, const at::Tensor& input, const at::Tensor& weight,
                                      const std::optional<at::Tensor>& bias) {
  const bool has_bias = bias.has_value() && bias->defined();
  check_kind(op, "input", input);
  check_kind(op, "weight", weight);
  if (has_bias) check_kind(op, "bias", *bias);
  check_rank(op, "input", input, 2, "(M, K)");
  TORCH_CHECK_NOT_IMPLEMENTED(weight.dim() != 1, op, ": a 1-D weight (F.linear's vector form) is not supported; ",
                              "expected weight to be 2-D (N, K), but got shape ", weight.sym_sizes());
  check_rank(op, "weight", weight, 2, "(N, K)");
  check_same_dtype_and_device(op, input, "input", weight, "weight");
  if (has_bias) check_same_dtype_and_device(op, input, "input", *bias, "bias");
  check_same_k(op, input, weight);
  LinearSizes sizes{input.sym_size(0), input.sym_size(1), weight.sym_size(0)};
  if (has_bias && !(bias->dim() == 1 && bias->sym_size(0) == sizes.N)) {
    // F.linear broadcasts the bias over the output; only the (N) bias of nn.Linear is supported.
    TORCH_CHECK_NOT_IMPLEMENTED(!broadcasts_to(bias->sym_sizes(), sizes.M, sizes.N), op, ": a bias of shape ",
                                bias->sym_sizes(), " broadcast over the output is not supported; ",
                                "expected bias of shape [", sizes.N, "] (N = weight.size(0))");
    TORCH_CHECK(false, op, ": expected bias of shape [", sizes.N, "] (N = weight.size(0)), but got ",
                bias->sym_sizes());
  }
  return sizes;
}

LinearSizes check_linear_backward_args(const char* op, const at::Tensor& grad_output, const at::Tensor& input,
                                       const at::Tensor& weight, const at::Tensor* preactivation) {
  check_kind(op, "grad_output", grad_output);
  check_kind(op, "input", input);
  check_kind(op, "weight", weight);
  check_rank(op, "grad_output", grad_output, 2, "(M, N)");
  check_rank(op, "input", input, 2, "(M, K)");
  check_rank(op, "weight", weight, 2, "(N, K)");
  check_same_dtype_and_device(op, grad_output, "grad_output", input, "input");
  check_same_dtype_and_device(op, grad_output, "grad_output", weight, "weight");
  check_same_k(op, input, weight);
  LinearSizes sizes{input.sym_size(0), input.sym_size(1), weight.sym_size(0)};
  TORCH_CHECK(grad_output.sym_size(0) == sizes.M && grad_output.sym_size(1) == sizes.N, op,
              ": expected grad_output of shape [", sizes.M, ", ", sizes.N,
              "] (M = input.size(0), N = weight.size(0)), but got ", grad_output.sym_sizes());
  if (preactivation != nullptr) {
    check_kind(op, "preactivation", *preactivation);
    check_same_dtype_and_device(op, grad_output, "grad_output", *preactivation, "preactivation");
    TORCH_CHECK(preactivation->sym_sizes() == grad_output.sym_sizes(), op, ": expected preactivation of shape ",
                grad_output.sym_sizes(), " (the shape of grad_output), but got ", preactivation->sym_sizes());
  }
  return sizes;
}

Activation activation_from_name(const char* op, std::string_view name) {
  for (int i = 0; i < kActivationCount; ++i)
    if (name == kActivationNames[i]) return static_cast<Activation>(i);
  std::string expected;
  for (int i = 0; i < kActivationCount; ++i) {
    if (i > 0) expected += i + 1 < kActivationCount ? ", " : " or ";
    expected += std::string("'") + kActivationNames[i] + "'";
  }
  TORCH_CHECK_VALUE(false, op, ": expected activation to be one of ", expected, ", but got '", std::string(name),
                    "'");
}

namespace {

std::vector<c10::SymInt> check_mlp_layers(const char* op, const at::Tensor& input, at::TensorList weights) {
  TORCH_CHECK(!weights.empty(), op, ": expected at least one weight, but got an empty list");
  std::vector<c10::SymInt> widths;
  c10::SymInt fan_in = input.sym_size(1);
  for (size_t l = 0; l < weights.size(); ++l) {
    const at::Tensor& w = weights[l];
    const IndexedName name("weights", l);
    check_kind(op, name.text, w);
    check_rank(op, name.text, w, 2, "(N_l, K_l)");
    check_same_dtype_and_device(op, input, "input", w, name.text);
    TORCH_CHECK(w.sym_size(1) == fan_in, op, ": expected ", name.text, ".size(1) to equal ",
                l == 0 ? "input.size(1)" : "the previous layer's width", " (", fan_in, "), but got ", name.text,
                " of shape ", w.sym_sizes());
    widths.push_back(w.sym_size(0));
    fan_in = w.sym_size(0);
  }
  return widths;
}

}  // namespace

std::vector<c10::SymInt> check_mlp_forward_args(const char* op, const at::Tensor& input, at::TensorList weights,
                                                const c10::List<std::optional<at::Tensor>>& biases) {
  check_kind(op, "input", input);
  check_rank(op, "input", input, 2, "(M, K)");
  std::vector<c10::SymInt> widths = check_mlp_layers(op, input, weights);
  TORCH_CHECK(biases.size() == weights.size(), op, ": expected one bias entry (a tensor or None) per weight (",
              weights.size(), "), but got ", biases.size());
  for (size_t l = 0; l < biases.size(); ++l) {
    const std::optional<at::Tensor> bias = biases.get(l);
    if (!bias.has_value() || !bias->defined()) continue;
    const IndexedName name("biases", l);
    check_kind(op, name.text, *bias);
    check_same_dtype_and_device(op, input, "input", *bias, name.text);
    TORCH_CHECK(bias->dim() == 1 && bias->sym_size(0) == widths[l], op, ": expected ", name.text, " of shape [",
                widths[l], "] (weights[", l, "].size(0)), but got ", bias->sym_sizes());
  }
  return widths;
}

std::vector<c10::SymInt> check_mlp_backward_args(const char* op, const at::Tensor& grad_output,
                                                 const at::Tensor& input, at::TensorList weights,
                                                 const at::Tensor& hidden, Activation activation,
                                                 const c10::List<bool>& has_bias) {
  check_kind(op, "grad_output", grad_output);
  check_kind(op, "input", input);
  check_kind(op, "hidden", hidden);
  check_rank(op, "input", input, 2, "(M, K)");
  check_rank(op, "grad_output", grad_output, 2, "(M, N)");
  check_same_dtype_and_device(op, input, "input", grad_output, "grad_output");
  check_same_dtype_and_device(op, input, "input", hidden, "hidden");
  std::vector<c10::SymInt> widths = check_mlp_layers(op, input, weights);
  TORCH_CHECK(has_bias.size() == weights.size(), op, ": expected one has_bias entry per weight (", weights.size(),
              "), but got ", has_bias.size());
  const c10::SymInt M = input.sym_size(0);
  TORCH_CHECK(grad_output.sym_size(0) == M && grad_output.sym_size(1) == widths.back(), op,
              ": expected grad_output of shape [", M, ", ", widths.back(),
              "] (M = input.size(0), N = weights[-1].size(0)), but got ", grad_output.sym_sizes());
  const BasicMlpHiddenLayout<c10::SymInt> layout(M, widths, activation != Activation::None);
  const bool contiguous = hidden.is_contiguous();
  TORCH_CHECK(hidden.dim() == 2 && hidden.sym_size(0) == layout.rows && hidden.sym_size(1) == layout.cols &&
                  contiguous,
              op, ": expected hidden to be the contiguous [", layout.rows, ", ", layout.cols,
              "] tensor saved by mlp_forward for these shapes, but got shape ", hidden.sym_sizes(),
              contiguous ? "" : " (not contiguous)");
  return widths;
}

}  // namespace pylibnn
