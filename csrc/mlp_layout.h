// The `hidden` tensor of the fused MLP ops: what mlp_forward saves for mlp_backward. Both
// backends and the fake kernel (pylibnn/ops.py, _mlp_hidden_shape) build it the same way.
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

namespace pylibnn {

constexpr int64_t kHiddenColumnMultiple = 16;
constexpr int64_t kHiddenRowMultiple = 8;

inline int64_t padded_width(int64_t n) {
  return (n + kHiddenColumnMultiple - 1) / kHiddenColumnMultiple * kHiddenColumnMultiple;
}

struct MlpHiddenLayout {
  int64_t rows = 0;                 // Mp
  int64_t cols = 0;                 // C
  std::vector<int64_t> z_offset;    // per hidden layer
  std::vector<int64_t> y_offset;    // per hidden layer (== z_offset with 'none')

  // widths: N_0 .. N_{L-1} (the last one, the output, gets no band)
  MlpHiddenLayout(int64_t M, const std::vector<int64_t>& widths, bool has_activation) {
    rows = (M + kHiddenRowMultiple - 1) / kHiddenRowMultiple * kHiddenRowMultiple;
    int64_t H = 0;
    for (size_t l = 0; l + 1 < widths.size(); ++l) {
      z_offset.push_back(H);
      H += padded_width(widths[l]);
    }
    for (int64_t z : z_offset) y_offset.push_back(has_activation ? H + z : z);
    cols = has_activation ? 2 * H : H;
  }
};

}  // namespace pylibnn
