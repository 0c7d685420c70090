"""How pylibnn's ops appear in an ONNX graph: as the standard ops of the torch code they equal.

``torch.onnx.export`` cannot run a custom kernel; it needs each op written in ONNX's own ops.
With pylibnn imported, a model holding pylibnn layers exports with either of torch's
exporters and no extra argument:

- the default exporter (``dynamo=True``) captures the model with torch.export, running its
  Python code on fake tensors; ``pylibnn.linear`` and ``pylibnn.MLP`` see that capture
  (``functional.exporting_to_onnx``) and record the torch code they equal (``F.linear`` and
  the activation), which the exporter writes as Gemm (or MatMul + Add) and Relu, Gelu,
  Sigmoid, Tanh, Sigmoid * x. (Registering ONNX translations for the ops themselves would
  mean either onnxscript at import or an entry in torch's global decomposition table, which
  fake tensors with dynamic shapes also read, replacing the ops' own fake kernels.)
- the TorchScript exporter (``dynamo=False``) traces the model with real tensors, recording
  the ops, and asks its symbolic registry (``torch.onnx.register_custom_op_symbolic``) for
  each node; the functions below hand each node to the symbolics of ``aten::linear`` and the
  activation's aten op for the opset being exported, so the graph is the one an
  ``nn.Linear`` model gives. (A traced MLP records one layer op per layer: see MLP.forward.)

Only the exporters read the symbolic registry: the dispatcher, torch.compile and
torch.export keep running pylibnn's kernels. The backward ops need none (ONNX graphs are
inference graphs). ``mlp_forward``'s padded ``save_hidden`` buffer, which the modules never
ask for, raises a clear error instead.
"""

import torch
from torch.onnx import register_custom_op_symbolic
from torch.onnx._internal.torchscript_exporter import registration, symbolic_helper
from torch.onnx._internal.torchscript_exporter._type_utils import JitScalarType

from . import ops
from .activations import TORCH_ACTIVATIONS

# The lowest opset whose aten symbolics we delegate to (torch's own start at 9); the
# exporter picks, for the opset being exported, the newest registration at or below it.
_SYMBOLIC_OPSET = 9

def _aten_symbolic(g, name, *args):
    """Writes aten op ``name`` on ``args`` as the TorchScript exporter would for this opset."""
    return registration.registry.get_function_group(name).get(g.opset)(g, *args)


def _activation_symbolic(g, op, activation, value):
    if activation == "none":
        return value
    if activation not in TORCH_ACTIVATIONS:
        ops.check_activation(op, activation)
    torch_activation = TORCH_ACTIVATIONS[activation]
    return _aten_symbolic(g, torch_activation.aten_op, value, *torch_activation.aten_args)


def _empty_like_symbolic(g, value):
    # The op's second output when it was not asked for: an empty tensor of the input's dtype.
    dtype = JitScalarType.from_value(value, JitScalarType.FLOAT).dtype()
    return g.op("Constant", value_t=torch.empty((0,), dtype=dtype))


def _linear_forward_symbolic(g, input, weight, bias):
    return _aten_symbolic(g, "aten::linear", input, weight, bias)


@symbolic_helper.parse_args("v", "v", "v", "s", "b")
def _linear_act_forward_symbolic(g, input, weight, bias, activation, save_preactivation):
    preactivation = _aten_symbolic(g, "aten::linear", input, weight, bias)
    output = _activation_symbolic(g, "pylibnn.linear_act_forward", activation, preactivation)
    return output, preactivation if save_preactivation else _empty_like_symbolic(g, input)


@symbolic_helper.parse_args("v", "v", "v", "s", "b")
def _mlp_forward_symbolic(g, input, weights, biases, activation, save_hidden):
    if save_hidden:
        raise NotImplementedError("pylibnn.mlp_forward: exporting save_hidden=True to ONNX is not supported (the "
                                  "padded buffer only feeds mlp_backward); pylibnn.MLP's forward does not ask for it")
    weights = symbolic_helper._unpack_list(weights)
    biases = symbolic_helper._unpack_list(biases)
    output = input
    for layer, (weight, bias) in enumerate(zip(weights, biases)):
        output = _aten_symbolic(g, "aten::linear", output, weight, bias)
        if layer < len(weights) - 1:
            output = _activation_symbolic(g, "pylibnn.mlp_forward", activation, output)
    return output, _empty_like_symbolic(g, input)


register_custom_op_symbolic("pylibnn::linear_forward", _linear_forward_symbolic, _SYMBOLIC_OPSET)
register_custom_op_symbolic("pylibnn::linear_act_forward", _linear_act_forward_symbolic, _SYMBOLIC_OPSET)
register_custom_op_symbolic("pylibnn::mlp_forward", _mlp_forward_symbolic, _SYMBOLIC_OPSET)
