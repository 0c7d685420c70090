"""The op layer: loads ``pylibnn._C`` (which registers ``torch.ops.pylibnn.*``) and gives
each op a fake (meta) kernel, so torch.compile and torch.export can trace through them.

Ops (schemas in csrc/pylibnn.cpp):
    linear_forward(input (M, K), weight (N, K), bias (N)?) -> (M, N)
    linear_backward(grad_output (M, N), input (M, K), weight (N, K), output_mask bool[3])
        -> (grad_input (M, K), grad_weight (N, K), grad_bias (N)); unrequested ones are empty
"""

import torch

from . import _C

linear_forward = torch.ops.pylibnn.linear_forward
linear_backward = torch.ops.pylibnn.linear_backward


@torch.library.register_fake("pylibnn::linear_forward")
def _linear_forward_fake(input, weight, bias):
    torch._check(input.dim() == 2 and weight.dim() == 2,
                 lambda: f"pylibnn.linear_forward: expected 2-D input and weight, got {input.dim()}-D and {weight.dim()}-D")
    torch._check(input.size(1) == weight.size(1),
                 lambda: f"pylibnn.linear_forward: input.size(1) ({input.size(1)}) != weight.size(1) ({weight.size(1)})")
    return input.new_empty((input.size(0), weight.size(0)))


@torch.library.register_fake("pylibnn::linear_backward")
def _linear_backward_fake(grad_output, input, weight, output_mask):
    M, K = input.shape
    N = weight.size(0)
    grad_input = grad_output.new_empty((M, K) if output_mask[0] else (0,))
    grad_weight = grad_output.new_empty((N, K) if output_mask[1] else (0,))
    grad_bias = grad_output.new_empty((N,) if output_mask[2] else (0,))
    return grad_input, grad_weight, grad_bias


def build_info():
    """What this build was compiled with.

    Returns a dict: ``cuda`` (CUDA kernels compiled in), ``cuda_arch_list``, ``torch``
    (the version built against), ``cpu_isa`` (``compiled``, ``supported`` and ``selected``
    CPU micro-kernel sets), and ``cuda_available`` (a GPU is visible now).
    """
    info = _C.build_info()
    info["cuda_available"] = bool(info["cuda"] and torch.cuda.is_available())
    return info


def set_cpu_isa(name):
    """Forces the CPU GEMM path ('auto', 'avx512', 'avx2', 'portable', 'reference')."""
    _C.set_cpu_isa(name)


def get_cpu_isa():
    return _C.get_cpu_isa()
