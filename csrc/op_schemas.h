// The schemas of the pylibnn ops, in one place: csrc/pylibnn.cpp defines them in the
// `pylibnn` library, and the test-only emulated CUDA build (csrc/cuda/emulation/) defines
// the same ops in its own `pylibnn_emulated_cuda` library.
#pragma once

namespace pylibnn {

inline constexpr const char* kOpSchemas[] = {
    // y = input @ weight.T + bias;  input (M, K), weight (N, K), bias (N) -> y (M, N)
    "linear_forward(Tensor input, Tensor weight, Tensor? bias) -> Tensor",
    // (grad_input (M, K), grad_weight (N, K), grad_bias (N)); gradients whose output_mask
    // entry is false are returned as empty tensors.
    "linear_backward(Tensor grad_output, Tensor input, Tensor weight, bool[3] output_mask)"
    " -> (Tensor, Tensor, Tensor)",

    // The fused ops (activation names and formulas: activation.h).
    // (output = act(z), preactivation = z) with z = input @ weight.T + bias, both (M, N);
    // preactivation is an empty (0,) tensor unless save_preactivation.
    "linear_act_forward(Tensor input, Tensor weight, Tensor? bias, str activation, bool save_preactivation)"
    " -> (Tensor, Tensor)",
    // linear_backward of grad_z = grad_output * act'(preactivation).
    "linear_act_backward(Tensor grad_output, Tensor input, Tensor weight, Tensor preactivation, str activation,"
    " bool[3] output_mask) -> (Tensor, Tensor, Tensor)",
    // A whole MLP: layer l computes z_l = a_{l-1} @ weights[l].T + biases[l] (a_{-1} = input),
    // a_l = act(z_l) for every layer but the last, whose z is the output (M, N_{L-1}).
    // hidden: every hidden layer's z_l and a_l in the layout of mlp_layout.h, or an empty (0,)
    // tensor unless save_hidden.
    "mlp_forward(Tensor input, Tensor[] weights, Tensor?[] biases, str activation, bool save_hidden)"
    " -> (Tensor, Tensor)",
    // (grad_input (M, K_0) or empty (0,) unless input_grad, grad_weights[l] (N_l, K_l),
    //  grad_biases[l] (N_l) where has_bias[l], else empty (0,)).
    "mlp_backward(Tensor grad_output, Tensor input, Tensor[] weights, Tensor hidden, str activation,"
    " bool[] has_bias, bool input_grad) -> (Tensor, Tensor[], Tensor[])",
};

}  // namespace pylibnn
