"""``pylibnn.MLP``: a whole multilayer perceptron in one fused forward op and one backward op.

Small networks spend their time in per-layer overhead (a dispatch, an allocation, an
autograd node and a thread hand-off per Linear and per activation), not in arithmetic.
``MLP`` runs every layer in a single ``mlp_forward`` op and the whole backward in a single
``mlp_backward`` op; on the CPU, rows go through all layers in cache-sized tiles.
"""

import copy
import math
from typing import List, Optional

import torch
from torch import nn
from torch._C import _get_tracing_state
from torch.jit import is_scripting

from . import ops
from .activations import activation_of_module
from .functional import ACTIVATION_MODULES, activation_name, exporting_to_onnx, linear, linear_in_torch, rows_of

_mlp_forward = ops.mlp_forward.default


class MLP(nn.Module):
    """``sizes = [in, hidden..., out]``: Linear layers with ``activation`` between them
    (none after the last), computed by one fused op forward and one backward.

    Drop-in for the ``nn.Sequential`` of the same layers: the children are that Sequential's
    own modules under the same names (``nn.Linear`` at 0, 2, 4, ... and the activation
    modules between them; 0, 1, 2, ... when ``activation`` is None), so
    ``list(mlp.parameters())`` is w0, b0, w1, b1, ..., ``mlp[i]`` indexes like the
    Sequential, and the state_dicts of the two load into each other unchanged.
    Initialization is nn.Linear's. The child modules hold the parameters; ``forward`` does
    not call them.

    activation: None, "relu", "gelu", "gelu_tanh", "silu", "tanh" or "sigmoid".
    Input (*, in) -> output (*, out).

    Its repr names it ``pylibnn.MLP(...)``. ``torch.jit.script`` compiles it (the scripted
    module runs the same fused op).
    """

    # TorchScript compiles a module's properties; this one is eager-only (forward_for_script
    # gathers the layers itself).
    __jit_unused_properties__ = ["layers"]
    __jit_ignored_attributes__ = ["forward_layer_by_layer"]

    def __init__(self, sizes, activation="relu", bias=True, device=None, dtype=None):
        super().__init__()
        sizes = list(sizes)
        if len(sizes) < 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in sizes):
            raise ValueError(f"pylibnn.MLP: expected sizes to be a list of at least two non-negative ints "
                             f"[in, hidden..., out], but got {sizes!r}")
        self._activation = activation_name(activation, "pylibnn.MLP")
        self.sizes = sizes
        self.activation = activation
        self.bias = bool(bias)
        index = 0
        for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            self.add_module(str(index), nn.Linear(fan_in, fan_out, bias=bias, device=device, dtype=dtype))
            index += 1
            if activation is not None and layer < len(sizes) - 2:
                self.add_module(str(index), ACTIVATION_MODULES[activation]())
                index += 1

    @property
    def layers(self):
        """The nn.Linear children, in order."""
        return [m for m in self._modules.values() if isinstance(m, nn.Linear)]

    def forward(self, input):
        if is_scripting():
            # Compiled instead of the eager path below (see forward_for_script).
            return self.forward_for_script(input)
        if _get_tracing_state() is not None:  # torch.jit.is_tracing() without its Python frame
            # torch.jit.trace (and the ONNX exporter with dynamo=False, which traces) cannot
            # record mlp_forward: its tracer has no form for a Tensor?[] argument. A traced
            # MLP runs its layers one by one on pylibnn's single-layer ops instead.
            return self.forward_layer_by_layer(input)
        layers = self.layers
        # _parameters directly: nn.Module.__getattr__ costs about as much as the whole op
        # for the tutorial's network.
        weights = [layer._parameters["weight"] for layer in layers]
        biases = [layer._parameters["bias"] for layer in layers]
        if type(input) is torch.Tensor and input.dim() == 2:
            return _mlp_forward(input, weights, biases, self._activation, False)[0]
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"pylibnn.MLP: expected input to be a Tensor, but got {type(input).__name__}")
        if exporting_to_onnx():  # fake tensors: see pylibnn/onnx_export.py
            return self.forward_layer_by_layer(input, linear_in_torch)
        if input.dim() < 1:
            raise RuntimeError("pylibnn.MLP: expected input to have at least 1 dimension (*, in), but got a 0-D tensor")
        leading_shape = input.shape[:-1]
        # An explicit row count, not -1: reshape cannot infer it when in == 0.
        input_2d = input.reshape(math.prod(leading_shape), input.size(-1))
        output = _mlp_forward(input_2d, weights, biases, self._activation, False)[0]
        return output.reshape(*leading_shape, output.size(-1))

    def forward_layer_by_layer(self, input, layer_function=linear):
        """What ``forward`` computes, one ``layer_function(x, weight, bias, activation)`` per
        layer (``pylibnn.linear`` by default; the activation on every layer but the last)."""
        layers = self.layers
        output = input
        for index, layer in enumerate(layers):
            activation = self.activation if index < len(layers) - 1 else None
            output = layer_function(output, layer.weight, layer.bias, activation)
        return output

    def forward_for_script(self, input: torch.Tensor) -> torch.Tensor:
        """``forward`` as TorchScript compiles it: the same op on the same parameters, gathered
        in a form TorchScript can compile (it unrolls the loop over the children; ``hasattr``
        is decided per child at compile time: the nn.Linear layers have a weight, the
        activation modules none)."""
        weights: List[torch.Tensor] = []
        biases: List[Optional[torch.Tensor]] = []
        for module in self.children():
            if hasattr(module, "weight"):
                weights.append(module.weight)
                biases.append(module.bias)
        if input.dim() == 2:
            return torch.ops.pylibnn.mlp_forward(input, weights, biases, self._activation, False)[0]
        output_shape: List[int] = list(input.shape[:-1])
        input_2d = input.reshape(rows_of(input, "pylibnn.MLP"), input.size(-1))
        output = torch.ops.pylibnn.mlp_forward(input_2d, weights, biases, self._activation, False)[0]
        output_shape.append(output.size(-1))
        return output.reshape(output_shape)

    def _get_name(self):
        return "pylibnn.MLP"

    def __getitem__(self, index):
        return list(self._modules.values())[index]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def extra_repr(self):
        return f"sizes={self.sizes}, activation={self.activation!r}, bias={self.bias}"

    def to_sequential(self):
        """The pure-torch twin: an ``nn.Sequential`` of copies of these modules (same names,
        same state_dict), computing with torch's own kernels."""
        return nn.Sequential(*[copy.deepcopy(m) for m in self._modules.values()])

    @classmethod
    def from_sequential(cls, sequential):
        """An MLP computing what ``sequential`` computes, with a copy of its parameters.

        ``sequential`` must be nn.Linear layers chained by size, with the same activation
        module (nn.ReLU, nn.GELU, nn.SiLU, nn.Tanh or nn.Sigmoid) between every two of them
        and none after the last, or Linear layers alone; ValueError otherwise.
        """
        modules = list(sequential)
        linears = [m for m in modules if isinstance(m, nn.Linear)]

        def reject(why):
            raise ValueError(f"pylibnn.MLP.from_sequential: {why}")

        if not linears or not isinstance(modules[0], nn.Linear):
            reject("expected the first module to be an nn.Linear")
        activations = [m for m in modules if not isinstance(m, nn.Linear)]
        names = {activation_of_module(m) for m in activations}
        if None in names or len(names) > 1:
            reject(f"expected one kind of activation module (ReLU, GELU, SiLU, Tanh or Sigmoid), "
                   f"but got {[type(m).__name__ for m in activations]}")
        activation = names.pop() if names else None
        expected = len(linears) * 2 - 1 if activation else len(linears)
        layout_ok = len(modules) == expected and all(
            isinstance(m, nn.Linear) == (i % 2 == 0 or activation is None) for i, m in enumerate(modules))
        if not layout_ok:
            reject(f"expected Linear layers with one activation between every two and none after the last, "
                   f"but got {[type(m).__name__ for m in modules]}")
        has_bias = {layer.bias is not None for layer in linears}
        if len(has_bias) > 1:
            reject("expected every Linear to have a bias, or none to")
        sizes = [linears[0].in_features]
        for layer in linears:
            if layer.in_features != sizes[-1]:
                reject(f"Linear layers do not chain: in_features {layer.in_features} after a width of {sizes[-1]}")
            sizes.append(layer.out_features)
        # Built on meta (no initialization), then given copies of the Sequential's parameters.
        mlp = cls(sizes, activation=activation, bias=has_bias.pop(), device="meta", dtype=linears[0].weight.dtype)
        for mine, theirs in zip(mlp.layers, linears):
            for name, param in theirs.named_parameters(recurse=False):
                setattr(mine, name, nn.Parameter(param.detach().clone(), requires_grad=param.requires_grad))
        return mlp
