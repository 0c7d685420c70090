// The activations pylibnn fuses into its GEMM epilogues, shared by the CPU and CUDA code
// (host and device):
//   none       y = z
//   relu       y = max(z, 0)                               y' = z > 0   (NaN passes: !(z <= 0))
//   gelu       y = z Φ(z) = z/2 (1 + erf(z/√2))            y' = Φ(z) + z φ(z)
//   gelu_tanh  y = z/2 (1 + tanh(u)), u = √(2/π)(z + 0.044715 z³)
//                                                          y' = (1 + t)/2 + z/2 (1 - t²) u',  t = tanh(u)
//   silu       y = z σ(z)                                  y' = σ(z) (1 + z (1 - σ(z)))
//   tanh       y = tanh(z)                                 y' = 1 - y²
//   sigmoid    y = σ(z)                                    y' = y (1 - y)
// The formulas are torch's own (aten/src/ATen/native/cpu/Activation.cpp), so results match
// act(F.linear(...)) to rounding. The derivative takes both z and y, so each activation
// uses whichever of them gives it without recomputing a transcendental.
#pragma once

#include <cmath>

#ifdef __CUDACC__
#define PYLIBNN_HOST_DEVICE __host__ __device__
#else
#define PYLIBNN_HOST_DEVICE
#endif

namespace pylibnn {

enum class Activation : int { None = 0, ReLU, GELU, GELUTanh, SiLU, Tanh, Sigmoid };

// The names of the activation argument; activation_from_name raises ValueError for others.
inline constexpr const char* kActivationNames = "'none', 'relu', 'gelu', 'gelu_tanh', 'silu', 'tanh' or 'sigmoid'";

template <typename T>
PYLIBNN_HOST_DEVICE inline T activation_sigmoid(T z) {
  return T(1) / (T(1) + exp(-z));
}

template <typename T>
PYLIBNN_HOST_DEVICE inline T apply_activation(Activation act, T z) {
  using std::erf;
  using std::exp;
  using std::tanh;
  switch (act) {
    case Activation::None: return z;
    case Activation::ReLU: return z <= T(0) ? T(0) : z;  // keeps NaN, as torch.relu does
    case Activation::GELU: return z * T(0.5) * (T(1) + erf(z * T(M_SQRT1_2)));
    case Activation::GELUTanh: {
      const T inner = T(M_SQRT2 * M_2_SQRTPI * 0.5) * (z + T(0.044715) * z * z * z);
      return T(0.5) * z * (T(1) + tanh(inner));
    }
    case Activation::SiLU: return z / (T(1) + exp(-z));
    case Activation::Tanh: return tanh(z);
    case Activation::Sigmoid: return T(1) / (T(1) + exp(-z));
  }
  return z;
}

// dy/dz at z, where y = apply_activation(act, z).
template <typename T>
PYLIBNN_HOST_DEVICE inline T activation_derivative(Activation act, T z, T y) {
  using std::erf;
  using std::exp;
  using std::tanh;
  switch (act) {
    case Activation::None: return T(1);
    case Activation::ReLU: return z <= T(0) ? T(0) : T(1);
    case Activation::GELU: {
      const T cdf = T(0.5) * (T(1) + erf(z * T(M_SQRT1_2)));
      const T pdf = exp(T(-0.5) * z * z) * T(M_2_SQRTPI * M_SQRT1_2 * 0.5);
      return cdf + z * pdf;
    }
    case Activation::GELUTanh: {
      const T beta = T(M_SQRT2 * M_2_SQRTPI * 0.5);
      const T kappa = T(0.044715);
      const T t = tanh(beta * (z + kappa * z * z * z));
      const T inner_derivative = beta * (T(1) + T(3) * kappa * z * z);
      return T(0.5) * (T(1) + t) + T(0.5) * z * (T(1) - t * t) * inner_derivative;
    }
    case Activation::SiLU: {
      const T s = T(1) / (T(1) + exp(-z));
      return s * (T(1) + z * (T(1) - s));
    }
    case Activation::Tanh: return T(1) - y * y;
    case Activation::Sigmoid: return y * (T(1) - y);
  }
  return T(1);
}

}  // namespace pylibnn
