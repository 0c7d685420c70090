// The activations pylibnn fuses into its GEMM epilogues: one list, one formula each.
//
//   none       y = z                                       y' = 1
//   relu       y = max(z, 0)                               y' = z > 0   (NaN passes: !(z <= 0))
//   gelu       y = z Φ(z) = z/2 (1 + erf(z/√2))            y' = Φ(z) + z φ(z)
//   gelu_tanh  y = z/2 (1 + tanh(u)), u = √(2/π)(z + 0.044715 z³)
//                                                          y' = (1 + t)/2 + z/2 (1 - t²) u',  t = tanh(u)
//   silu       y = z σ(z)                                  y' = σ(z) (1 + z (1 - σ(z)))
//   tanh       y = tanh(z)                                 y' = 1 - y²
//   sigmoid    y = σ(z)                                    y' = y (1 - y)
// The formulas are torch's own (aten/src/ATen/native/cpu/Activation.cpp), so results match
// act(F.linear(...)) to rounding.
//
// Each formula is written once, over a "math" type M that supplies the arithmetic:
//   M::c(double)                      a constant
//   M::add, sub, mul, div, fmadd(a, b, c) = a b + c
//   M::exp, tanh, erf, sigmoid
//   M::zero_where_not_positive(z, v)  (z <= 0) ? 0 : v, a NaN z keeping v
// and instantiated for scalars on the host and the GPU (ScalarMath below), for the SIMD
// vectors of each CPU instruction set (VectorMath, cpu/gemm_microkernel_templates.h) and for
// differentiable tensors (TensorMath, fused_autograd.cpp: the double backward).
// ActivationFormula<A>::value<M>(z) is act(z); gradient<M>(grad, z, y) is grad * act'(z)
// with y = act(z) given, so each activation uses whichever of z and y gives its derivative
// without recomputing a transcendental (uses_output says whether it reads y).
//
// Adding an activation: one PYLIBNN_ACTIVATIONS entry, its ActivationFormula specialisation,
// and its torch reference in tests/opdb.py.
#pragma once

#include <cmath>

#ifdef __CUDACC__
#define PYLIBNN_HOST_DEVICE __host__ __device__
#else
#define PYLIBNN_HOST_DEVICE
#endif

namespace pylibnn {

// X(enumerator, name the ops take)
#define PYLIBNN_ACTIVATIONS(X) \
  X(None, "none")              \
  X(ReLU, "relu")              \
  X(GELU, "gelu")              \
  X(GELUTanh, "gelu_tanh")     \
  X(SiLU, "silu")              \
  X(Tanh, "tanh")              \
  X(Sigmoid, "sigmoid")

enum class Activation : int {
#define PYLIBNN_ACTIVATION_ENUMERATOR(enumerator, name) enumerator,
  PYLIBNN_ACTIVATIONS(PYLIBNN_ACTIVATION_ENUMERATOR)
#undef PYLIBNN_ACTIVATION_ENUMERATOR
};

// The names, in the order of the list (pylibnn.ops.ACTIVATIONS reads them through _C).
inline constexpr const char* kActivationNames[] = {
#define PYLIBNN_ACTIVATION_NAME(enumerator, name) name,
    PYLIBNN_ACTIVATIONS(PYLIBNN_ACTIVATION_NAME)
#undef PYLIBNN_ACTIVATION_NAME
};
inline constexpr int kActivationCount = sizeof(kActivationNames) / sizeof(kActivationNames[0]);

template <Activation A>
struct ActivationFormula;

template <>
struct ActivationFormula<Activation::None> {
  static constexpr bool uses_output = false;
  template <typename M, typename V>
  PYLIBNN_HOST_DEVICE static V value(const V& z) { return z; }
  template <typename M, typename V>
  PYLIBNN_HOST_DEVICE static V gradient(const V& grad, const V&, const V&) { return grad; }
};

template <>
struct ActivationFormula<Activation::ReLU> {
  static constexpr bool uses_output = false;
  template <typename M, typename V>
  PYLIBNN_HOST_DEVICE static V value(const V& z) { return M::zero_where_not_positive(z, z); }
  template <typename M, typename V>
  PYLIBNN_HOST_DEVICE static V gradient(const V& grad, const V& z, const V&) {
    return M::zero_where_not_positive(z, grad);
  }
};

template <>
struct ActivationFormula<Activation::GELU> {
  static constexpr bool uses_output = false;
  template <typename M, typename V>
  PYLIBNN_HOST_DEVICE static V value(const V& z) {
    return M::mul(M::mul(z, M::c(0.5)), M::add(M::c(1), M::erf(M::mul(z, M::c(M_SQRT1_2)))));
  }
  template <typename M, typename V>
  PYLIBNN_HOST_DEVICE static V gradient(const V& grad, const V& z, const V&) {
    const V cdf = M::mul(M::c(0.5), M::add(M::c(1), M::erf(M::mul(z, M::c(M_SQRT1_2)))));
    const V pdf = M::mul(M::exp(M::mul(M::c(-0.5), M::mul(z, z))), M::c(M_2_SQRTPI * M_SQRT1_2 * 0.5));
    return M::mul(grad, M::fmadd(z, pdf, cdf));
  }
};

template <>
struct ActivationFormula<Activation::GELUTanh> {
  static constexpr bool uses_output = false;
  static constexpr double kBeta = M_SQRT2 * M_2_SQRTPI * 0.5;  // √(2/π)
  static constexpr double kKappa = 0.044715;
  template <typename M, typename V>
  PYLIBNN_HOST_DEVICE static V value(const V& z) {
    const V inner = M::mul(M::c(kBeta), M::fmadd(M::mul(M::c(kKappa), M::mul(z, z)), z, z));
    return M::mul(M::mul(M::c(0.5), z), M::add(M::c(1), M::tanh(inner)));
  }
  template <typename M, typename V>
  PYLIBNN_HOST_DEVICE static V gradient(const V& grad, const V& z, const V&) {
    const V z2 = M::mul(z, z);
    const V t = M::tanh(M::mul(M::c(kBeta), M::fmadd(M::mul(M::c(kKappa), z2), z, z)));
    const V inner_derivative = M::mul(M::c(kBeta), M::fmadd(M::c(3 * kKappa), z2, M::c(1)));
    const V left = M::mul(M::c(0.5), M::add(M::c(1), t));
    const V right = M::mul(M::mul(M::mul(M::c(0.5), z), M::sub(M::c(1), M::mul(t, t))), inner_derivative);
    return M::mul(grad, M::add(left, right));
  }
};

template <>
struct ActivationFormula<Activation::SiLU> {
  static constexpr bool uses_output = false;
  template <typename M, typename V>
  PYLIBNN_HOST_DEVICE static V value(const V& z) { return M::mul(z, M::sigmoid(z)); }
  template <typename M, typename V>
  PYLIBNN_HOST_DEVICE static V gradient(const V& grad, const V& z, const V&) {
    const V s = M::sigmoid(z);
    return M::mul(grad, M::mul(s, M::fmadd(z, M::sub(M::c(1), s), M::c(1))));
  }
};

template <>
struct ActivationFormula<Activation::Tanh> {
  static constexpr bool uses_output = true;
  template <typename M, typename V>
  PYLIBNN_HOST_DEVICE static V value(const V& z) { return M::tanh(z); }
  template <typename M, typename V>
  PYLIBNN_HOST_DEVICE static V gradient(const V& grad, const V&, const V& y) {
    return M::mul(grad, M::sub(M::c(1), M::mul(y, y)));
  }
};

template <>
struct ActivationFormula<Activation::Sigmoid> {
  static constexpr bool uses_output = true;
  template <typename M, typename V>
  PYLIBNN_HOST_DEVICE static V value(const V& z) { return M::sigmoid(z); }
  template <typename M, typename V>
  PYLIBNN_HOST_DEVICE static V gradient(const V& grad, const V&, const V& y) {
    return M::mul(grad, M::mul(y, M::sub(M::c(1), y)));
  }
};

// Calls fn(ActivationFormula<act>{}): the one switch from the runtime activation to its
// compile-time formula. Kernels call it outside their loops, so each loop is specialised.
template <typename Fn>
PYLIBNN_HOST_DEVICE inline decltype(auto) with_activation(Activation act, Fn&& fn) {
  switch (act) {
#define PYLIBNN_ACTIVATION_CASE(enumerator, name) \
  case Activation::enumerator:                    \
    return fn(ActivationFormula<Activation::enumerator>{});
    PYLIBNN_ACTIVATIONS(PYLIBNN_ACTIVATION_CASE)
#undef PYLIBNN_ACTIVATION_CASE
  }
  return fn(ActivationFormula<Activation::None>{});
}

// Scalar arithmetic, host and device: float and double.
template <typename T>
struct ScalarMath {
  PYLIBNN_HOST_DEVICE static T c(double value) { return T(value); }
  PYLIBNN_HOST_DEVICE static T add(T a, T b) { return a + b; }
  PYLIBNN_HOST_DEVICE static T sub(T a, T b) { return a - b; }
  PYLIBNN_HOST_DEVICE static T mul(T a, T b) { return a * b; }
  PYLIBNN_HOST_DEVICE static T div(T a, T b) { return a / b; }
  PYLIBNN_HOST_DEVICE static T fmadd(T a, T b, T c) { return a * b + c; }
  PYLIBNN_HOST_DEVICE static T exp(T x) {
    using std::exp;
    return exp(x);
  }
  PYLIBNN_HOST_DEVICE static T tanh(T x) {
    using std::tanh;
    return tanh(x);
  }
  PYLIBNN_HOST_DEVICE static T erf(T x) {
    using std::erf;
    return erf(x);
  }
  PYLIBNN_HOST_DEVICE static T sigmoid(T x) { return T(1) / (T(1) + exp(-x)); }
  PYLIBNN_HOST_DEVICE static T zero_where_not_positive(T z, T v) { return z <= T(0) ? T(0) : v; }
};

// act(z) and grad * act'(z) for one scalar, the activation chosen at run time (the CUDA
// kernels' epilogues, the portable CPU kernels and the tests' C++ references). The gradient
// is the formula's, not grad times a derivative: relu gives 0 where z <= 0 even for a NaN
// or infinite grad, as torch's threshold_backward does.
template <typename T>
PYLIBNN_HOST_DEVICE inline T apply_activation(Activation act, T z) {
  return with_activation(act, [&](auto formula) { return decltype(formula)::template value<ScalarMath<T>>(z); });
}

// y = apply_activation(act, z) given.
template <typename T>
PYLIBNN_HOST_DEVICE inline T activation_gradient(Activation act, T grad, T z, T y) {
  return with_activation(
      act, [&](auto formula) { return decltype(formula)::template gradient<ScalarMath<T>>(grad, z, y); });
}

// y recomputed from z, only for the activations whose derivative reads it.
template <typename T>
PYLIBNN_HOST_DEVICE inline T activation_gradient(Activation act, T grad, T z) {
  return with_activation(act, [&](auto formula) {
    using Formula = decltype(formula);
    const T y = Formula::uses_output ? Formula::template value<ScalarMath<T>>(z) : z;
    return Formula::template gradient<ScalarMath<T>>(grad, z, y);
  });
}

}  // namespace pylibnn
