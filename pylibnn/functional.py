"""``linear`` and ``LinearFunction``: F.linear's semantics on pylibnn's ops.

Shapes: input (*, K), weight (N, K), bias (N) or None -> output (*, N). The leading
dimensions of the input are flattened into M for the 2-D ops and restored afterwards.
"""

import math
from typing import List, Optional

import torch

from . import ops
from .activations import TORCH_ACTIVATIONS

# The overloads themselves, not the packets: saves resolving them on every call.
_linear_forward = ops.linear_forward.default
_linear_act_forward = ops.linear_act_forward.default


# The torch module each fused activation equals (pylibnn/activations.py): MLP's children,
# what unconvert puts after a fused layer, what ONNX export writes.
ACTIVATION_MODULES = {name: activation.module for name, activation in TORCH_ACTIVATIONS.items()}


def exporting_to_onnx():
    """True while ``torch.onnx.export`` runs. Its default (dynamo) capture runs the model on
    fake tensors, so callers ask only when the input is not a plain tensor: the eager fast
    path pays nothing for the question (see pylibnn/onnx_export.py)."""
    return torch.onnx.is_in_onnx_export()


def linear_in_torch(input, weight, bias, activation):
    """What ``linear(input, weight, bias, activation)`` equals, in torch's own ops (what the
    ONNX exporter records, and writes as Gemm / MatMul + Add and the activation's ops)."""
    output = torch.nn.functional.linear(input, weight, bias)
    return output if activation is None else ACTIVATION_MODULES[activation]()(output)


def activation_name(activation, where):
    """The op's name for an ``activation`` argument: None -> "none"; ValueError if unknown."""
    if activation is None:
        return "none"
    if not isinstance(activation, str) or activation not in ops.ACTIVATIONS or activation == "none":
        names = ", ".join(repr(a) for a in ops.ACTIVATIONS if a != "none")
        raise ValueError(f"{where}: expected activation to be None or one of {names}, but got {activation!r}")
    return activation


def _check_ranks(input, weight, bias=None):
    """What the 2-D ops cannot see: the types and ranks of F.linear's (*, K) form.

    The ops check everything else (sizes, dtypes, devices, layouts) with the same words on
    CPU and CUDA. Exception types follow F.linear: TypeError for a non-tensor, RuntimeError
    where F.linear raises too, NotImplementedError ("is not supported") where F.linear
    accepts an input that pylibnn does not (a 1-D weight, a nested input).
    """
    for name, value in (("input", input), ("weight", weight)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"pylibnn.linear: expected {name} to be a Tensor, but got {type(value).__name__}")
    if bias is not None and not isinstance(bias, torch.Tensor):
        raise TypeError(f"pylibnn.linear: expected bias to be a Tensor or None, but got {type(bias).__name__}")
    for name, value in (("input", input), ("weight", weight), ("bias", bias)):
        if value is not None and value.is_nested:
            # Checked before any shape is read: a nested tensor has no sizes.
            raise NotImplementedError(f"pylibnn.linear: nested {name} is not supported; "
                                      f"expected a dense (strided) tensor")
        if value is not None and value.layout != torch.strided:
            # Before reshape, which sparse layouts do not implement.
            raise NotImplementedError(f"pylibnn.linear: {name} with layout {value.layout} is not supported; "
                                      f"expected a dense (strided) tensor")
    if input.dim() < 1:
        raise RuntimeError(f"pylibnn.linear: expected input to have at least 1 dimension (*, K), "
                           f"but got a 0-D tensor")
    if weight.dim() == 1:
        raise NotImplementedError(f"pylibnn.linear: a 1-D weight (F.linear's vector form) is not supported; "
                                  f"expected weight to be 2-D (N, K), but got shape {list(weight.shape)}")
    if weight.dim() != 2:
        raise RuntimeError(f"pylibnn.linear: expected weight to be 2-D (N, K), but got a "
                           f"{weight.dim()}-D tensor of shape {list(weight.shape)}")


class LinearFunction(torch.autograd.Function):
    """y = input @ weight.T + bias on pylibnn's kernels, with its backward on them too.

    ``LinearFunction.apply(input, weight, bias)`` accepts what ``pylibnn.linear`` accepts.
    Only the tensors the requested gradients need are saved: the weight for grad_input,
    the input for grad_weight, neither for grad_bias.

    The backward is differentiable (double backward, ``create_graph=True``): it calls the
    ``linear_backward`` op, whose own autograd (csrc/linear_autograd.cpp) is written with
    the same two ops, so the formula for every order lives in one place.
    """

    @staticmethod
    def forward(ctx, input, weight, bias=None):
        _check_ranks(input, weight, bias)
        leading_shape = input.shape[:-1]
        # An explicit row count, not -1: reshape cannot infer it when K == 0.
        input_2d = input.reshape(math.prod(leading_shape), input.size(-1))
        output = ops.linear_forward(input_2d, weight, bias)

        needs_input_grad, needs_weight_grad = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        # The input itself, not input_2d: a tensor made inside forward has no history, so a
        # double backward could not reach the input through it. backward reshapes again.
        ctx.save_for_backward(input if needs_weight_grad else None,
                              weight if needs_input_grad else None)
        ctx.input_shape = input.shape
        ctx.input_2d_shape = input_2d.shape
        ctx.weight_shape = weight.shape
        return output.reshape(*leading_shape, weight.size(0))

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        output_mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1],
                       len(ctx.needs_input_grad) > 2 and ctx.needs_input_grad[2]]
        if not any(output_mask):
            return None, None, None
        grad_output_2d = grad_output.reshape(ctx.input_2d_shape[0], ctx.weight_shape[0])
        # The backward op takes input and weight for their shapes even when a gradient does
        # not read them; an unsaved one travels as a stride-0 view that owns no memory.
        if input is None:
            input_2d = grad_output_2d.new_zeros(()).expand(ctx.input_2d_shape)
        else:
            input_2d = input.reshape(ctx.input_2d_shape)
        if weight is None:
            weight = grad_output_2d.new_zeros(()).expand(ctx.weight_shape)
        grad_input, grad_weight, grad_bias = ops.linear_backward(grad_output_2d, input_2d, weight, output_mask)
        return (grad_input.reshape(ctx.input_shape) if output_mask[0] else None,
                grad_weight if output_mask[1] else None,
                grad_bias if output_mask[2] else None)


def linear(input, weight, bias=None, activation=None):
    """``torch.nn.functional.linear`` on pylibnn's kernels: input (*, K), weight (N, K), bias (N).

    ``activation`` (None, "relu", "gelu", "gelu_tanh", "silu", "tanh" or "sigmoid") is
    applied in the GEMM's epilogue, and its derivative while the backward reads
    grad_output: ``linear(x, W, b, "gelu")`` equals ``F.gelu(F.linear(x, W, b))``
    ("gelu_tanh" is ``F.gelu(..., approximate="tanh")``) in one op.

    Differentiable through the ops' own (C++) autograd, to any order.
    """
    if activation is not None:
        act = activation_name(activation, "pylibnn.linear")
        _check_ranks(input, weight, bias)
        if type(input) is not torch.Tensor and exporting_to_onnx():
            return linear_in_torch(input, weight, bias, activation)
        if input.dim() == 2:  # no reshapes (nor Reshape nodes in a traced or exported graph)
            return _linear_act_forward(input, weight, bias, act, False)[0]
        leading_shape = input.shape[:-1]
        input_2d = input.reshape(math.prod(leading_shape), input.size(-1))
        output = _linear_act_forward(input_2d, weight, bias, act, False)[0]
        return output.reshape(*leading_shape, weight.size(0))
    if type(input) is torch.Tensor and input.dim() == 2:
        try:
            return _linear_forward(input, weight, bias)  # the op checks everything else
        except RuntimeError as error:
            failure = error
        # A non-tensor weight or bias gets the dispatcher's RuntimeError; F.linear raises
        # TypeError. Checking after the failure costs nothing on the path that succeeds, and
        # outside the except block the traceback shows one error, not two.
        try:
            _check_ranks(input, weight, bias)
            raise failure
        finally:
            failure = None  # no frame -> traceback -> frame cycle left behind
    _check_ranks(input, weight, bias)
    if type(input) is not torch.Tensor and exporting_to_onnx():
        return linear_in_torch(input, weight, bias, None)
    leading_shape = input.shape[:-1]
    # An explicit row count, not -1: reshape cannot infer it when K == 0.
    output = _linear_forward(input.reshape(math.prod(leading_shape), input.size(-1)), weight, bias)
    return output.reshape(*leading_shape, weight.size(0))


def rows_of(input: torch.Tensor, where: str) -> int:
    """The M of a (*, K) input: the product of its leading sizes (TorchScript-compatible)."""
    if input.dim() < 1:
        raise RuntimeError(f"{where}: expected input to have at least 1 dimension (*, K), but got a 0-D tensor")
    rows = 1
    for size in input.shape[:-1]:
        rows *= size
    return rows


def linear_for_script(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                      activation: str) -> torch.Tensor:
    """``linear`` as TorchScript compiles it (``activation`` is the op's name, "none" for None).

    ``linear`` itself is shaped for eager speed (a try/except around the op, math.prod),
    which TorchScript cannot compile; this is the same computation on the same ops. Types
    are TorchScript's to check; the ops check everything else.
    """
    if input.dim() == 2:  # no reshapes: the common case, and the simplest graph to export
        return _linear_2d_for_script(input, weight, bias, activation)
    output_shape: List[int] = list(input.shape[:-1])
    output_shape.append(weight.size(0))
    input_2d = input.reshape(rows_of(input, "pylibnn.linear"), input.size(-1))
    return _linear_2d_for_script(input_2d, weight, bias, activation).reshape(output_shape)


def _linear_2d_for_script(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                          activation: str) -> torch.Tensor:
    if activation == "none":
        return torch.ops.pylibnn.linear_forward(input, weight, bias)
    return torch.ops.pylibnn.linear_act_forward(input, weight, bias, activation, False)[0]
