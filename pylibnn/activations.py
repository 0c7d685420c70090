"""The torch meaning of each activation the fused ops take (their kernels' formulas are in
csrc/activation.h, whose list pylibnn.ops.ACTIVATIONS reads): the torch module it equals
(MLP's children, what unconvert puts after a fused layer, the torch code the ONNX exporter
records) and the aten op the TorchScript ONNX exporter writes for it.
"""

import dataclasses
from typing import Callable, Optional

from torch import nn

from . import ops


@dataclasses.dataclass(frozen=True)
class TorchActivation:
    module: Callable[[], nn.Module]   # a fresh torch module computing the activation
    aten_op: str                      # the aten op whose ONNX symbolic writes it
    aten_args: tuple = ()             # its arguments after the input


TORCH_ACTIVATIONS = {
    "relu": TorchActivation(nn.ReLU, "aten::relu"),
    "gelu": TorchActivation(nn.GELU, "aten::gelu", ("none",)),
    "gelu_tanh": TorchActivation(lambda: nn.GELU(approximate="tanh"), "aten::gelu", ("tanh",)),
    "silu": TorchActivation(nn.SiLU, "aten::silu"),
    "tanh": TorchActivation(nn.Tanh, "aten::tanh"),
    "sigmoid": TorchActivation(nn.Sigmoid, "aten::sigmoid"),
}

# Every activation of the kernels has its torch meaning here ("none" is the plain layer).
if set(TORCH_ACTIVATIONS) != set(ops.ACTIVATIONS) - {"none"}:
    raise ImportError(f"pylibnn/activations.py maps {sorted(TORCH_ACTIVATIONS)}, but the kernels take "
                      f"{sorted(set(ops.ACTIVATIONS) - {'none'})}")


def activation_of_module(module: nn.Module) -> Optional[str]:
    """The activation name a torch module computes, or None when it is none of them (an
    in-place ReLU or SiLU included: its extra_repr differs)."""
    for name, torch_activation in TORCH_ACTIVATIONS.items():
        candidate = torch_activation.module()
        if type(candidate) is type(module) and candidate.extra_repr() == module.extra_repr():
            return name
    return None
