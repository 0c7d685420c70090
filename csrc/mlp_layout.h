// The `hidden` tensor of the fused MLP ops: what mlp_forward saves for mlp_backward. Both
// backends and the op layer (csrc/ops/: shapes, symbolic ones for the fake kernels, and the
// mlp_hidden_shape Python reads) build it from this one definition.
//
// For L layers with output widths N_0 .. N_{L-1}, the hidden layers are l = 0 .. L-2.
// Each gets a column band padded to a whole number of 16-element groups (64 bytes of
// float32), so the CPU micro-kernels can load full vectors from any row:
//   z_l (pre-activation)  columns [z_offset(l), z_offset(l) + N_l),  z_offset(l) = Σ_{j<l} P(N_j)
//   y_l = act(z_l)        columns [H + z_offset(l), ...)             H = Σ_{j<L-1} P(N_j)
// with P(n) = 16 ⌈n / 16⌉. With activation 'none', y_l is z_l and only the z bands exist.
// hidden is (Mp, C): Mp = 8 ⌈M / 8⌉ rows, C = 2H (or H with 'none') columns, contiguous.
// Padding rows and columns hold zeros (so the tensor is a deterministic function of the
// inputs, as torch.compile's checks expect); readers use rows < M, columns < N_l only.
#pragma once

#include <cstdint>
#include <vector>

#include "matrix.h"

namespace pylibnn {

constexpr int64_t kHiddenColumnMultiple = 16;
constexpr int64_t kHiddenRowMultiple = 8;

// The width of a hidden layer's band.
template <typename Int>
inline Int padded_width(const Int& n) {
  return round_up(n, kHiddenColumnMultiple);
}

// Int: int64_t in the kernels, c10::SymInt in the op layer (symbolic sizes under
// torch.compile), so both compute the same shape from the same lines.
template <typename Int>
struct BasicMlpHiddenLayout {
  Int rows = 0;                 // Mp
  Int cols = 0;                 // C
  std::vector<Int> z_offset;    // per hidden layer
  std::vector<Int> y_offset;    // per hidden layer (== z_offset with 'none')

  // widths: N_0 .. N_{L-1} (the last one, the output, gets no band)
  BasicMlpHiddenLayout(const Int& M, const std::vector<Int>& widths, bool has_activation) {
    rows = round_up(M, kHiddenRowMultiple);
    Int H = 0;
    for (size_t l = 0; l + 1 < widths.size(); ++l) {
      z_offset.push_back(H);
      H = H + padded_width(widths[l]);
    }
    for (const Int& z : z_offset) y_offset.push_back(has_activation ? H + z : z);
    cols = has_activation ? H * 2 : H;
  }
};

using MlpHiddenLayout = BasicMlpHiddenLayout<int64_t>;

// The widths N_l of a network's weights (N_l, K_l) (any list of tensors: .size(0)).
template <typename Weights>
std::vector<int64_t> widths_of(const Weights& weights) {
  std::vector<int64_t> widths;
  for (const auto& w : weights) widths.push_back(w.size(0));
  return widths;
}

}  // namespace pylibnn
