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


_SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _check_kind(op, name, t):
    # The checks of csrc/linear_checks.cpp, for meta and fake tensors (torch.compile,
    # torch.export, device="meta"): same exception types, same words.
    torch._check_not_implemented(not t.is_nested and t.layout == torch.strided,
                                 lambda: f"{op}: {name} with layout {t.layout} is not supported; "
                                         f"expected a dense (strided) tensor")
    torch._check_not_implemented(t.dtype in _SUPPORTED_DTYPES,
                                 lambda: f"{op}: {name} of dtype {t.dtype} is not supported; "
                                         f"expected float32, float64, bfloat16 or float16")


def _check_rank(op, name, t, dim, shape):
    torch._check(t.dim() == dim, lambda: f"{op}: expected {name} to be {dim}-D {shape}, but got a "
                                         f"{t.dim()}-D tensor of shape {list(t.shape)}")


def _check_like(op, reference, reference_name, t, name):
    # F.linear lets a meta tensor meet a real one (the result is meta); pylibnn does not.
    torch._check_not_implemented(t.device == reference.device or "meta" not in (t.device.type, reference.device.type),
                                 lambda: f"{op}: mixing meta and {reference.device if t.is_meta else t.device} "
                                         f"tensors ({name} on {t.device}, {reference_name} on {reference.device}) "
                                         f"is not supported; expected all on one device")
    torch._check(t.device == reference.device,
                 lambda: f"{op}: expected {name} to be on the device of {reference_name} "
                         f"({reference.device}), but got {t.device}")
    torch._check(t.dtype == reference.dtype,
                 lambda: f"{op}: expected {name} to have the dtype of {reference_name} "
                         f"({reference.dtype}), but got {t.dtype}")


def _check_k(op, input, weight):
    torch._check(input.size(1) == weight.size(1),
                 lambda: f"{op}: expected input.size(1) to equal weight.size(1) (K = {weight.size(1)}), "
                         f"but got input of shape {list(input.shape)} and weight of shape {list(weight.shape)}")


@torch.library.register_fake("pylibnn::linear_forward")
def _linear_forward_fake(input, weight, bias):
    op = "pylibnn.linear_forward"
    for name, t in (("input", input), ("weight", weight), ("bias", bias)):
        if t is not None:
            _check_kind(op, name, t)
    _check_rank(op, "input", input, 2, "(M, K)")
    torch._check_not_implemented(weight.dim() != 1, lambda: f"{op}: a 1-D weight (F.linear's vector form) is not "
                                                            f"supported; expected weight to be 2-D (N, K)")
    _check_rank(op, "weight", weight, 2, "(N, K)")
    _check_like(op, input, "input", weight, "weight")
    if bias is not None:
        _check_like(op, input, "input", bias, "bias")
    _check_k(op, input, weight)
    if bias is not None:
        torch._check(bias.dim() == 1 and bias.size(0) == weight.size(0),
                     lambda: f"{op}: expected bias of shape [{weight.size(0)}] (N = weight.size(0)), "
                             f"but got {list(bias.shape)}")
    return input.new_empty((input.size(0), weight.size(0)))


@torch.library.register_fake("pylibnn::linear_backward")
def _linear_backward_fake(grad_output, input, weight, output_mask):
    op = "pylibnn.linear_backward"
    for name, t in (("grad_output", grad_output), ("input", input), ("weight", weight)):
        _check_kind(op, name, t)
    for name, t, shape in (("grad_output", grad_output, "(M, N)"), ("input", input, "(M, K)"),
                           ("weight", weight, "(N, K)")):
        _check_rank(op, name, t, 2, shape)
    _check_like(op, grad_output, "grad_output", input, "input")
    _check_like(op, grad_output, "grad_output", weight, "weight")
    _check_k(op, input, weight)
    M, K = input.shape
    N = weight.size(0)
    torch._check(grad_output.size(0) == M and grad_output.size(1) == N,
                 lambda: f"{op}: expected grad_output of shape [{M}, {N}] (M = input.size(0), "
                         f"N = weight.size(0)), but got {list(grad_output.shape)}")
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
