"""Forward and all three gradients of pylibnn.linear against float64 F.linear.

Covers the issue's shape matrix, input ranks 1-D to 4-D, non-contiguous operands, and every
CPU GEMM path on shapes that hit each remainder of the register and cache blocks.
Each case computes its float64 reference once (conftest.reference_linear) and checks every
result with the op database's tolerance rule.
"""

import pytest
import torch

import pylibnn
from conftest import CUDA_BACKENDS, DTYPES, assert_close_to_reference, make_tensor, reference_linear, seed_for


def _run_linear(input, weight, bias, grad_output):
    """pylibnn.linear forward + backward; returns name -> tensor like reference_linear's keys."""
    leaves = [t for t in (input, weight, bias) if t is not None]
    for t in leaves:
        t.requires_grad_(True)
    output = pylibnn.linear(input, weight, bias)
    grads = torch.autograd.grad(output, leaves, grad_output)
    result = {"output": output, "grad_input": grads[0], "grad_weight": grads[1]}
    if bias is not None:
        result["grad_bias"] = grads[2]
    return result


def _check(actual, expected, dtype, label):
    assert actual.keys() == expected.keys()
    for name, (reference, bound) in expected.items():
        assert_close_to_reference(actual[name], reference, bound, dtype, f"{label} {name}")


def _test_linear_case(device, input_shape, N, dtype, bias, label=""):
    K = input_shape[-1]
    seed = seed_for(*input_shape, N, bias)
    x = make_tensor(input_shape, dtype, device, seed)
    w = make_tensor((N, K), dtype, device, seed + 1)
    b = make_tensor((N,), dtype, device, seed + 2) if bias else None
    gy = make_tensor((*input_shape[:-1], N), dtype, device, seed + 3)
    expected = reference_linear(x, w, b, gy)
    actual = _run_linear(x, w, b, gy)
    assert actual["output"].device.type == torch.device(device).type
    _check(actual, expected, dtype, label or f"input {tuple(input_shape)}, N={N}")


# ---------------------------------------------------------------------------------------
# 2a. Input ranks: (*, K) with 0 to 3 leading dimensions, some empty; small products take
# the direct loop, larger ones the packed engine.

RANK_CASES = [
    ((17,), 33), ((300,), 130),                      # 1-D
    ((7, 17), 33),                                   # 2-D
    ((2, 3, 17), 33), ((2, 5, 129), 40),             # 3-D
    ((2, 3, 4, 17), 5), ((2, 3, 5, 129), 40),        # 4-D
    ((0, 3, 17), 5), ((2, 0, 17), 5), ((2, 3, 0), 5),  # empty leading dims, K = 0
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("input_shape,N", RANK_CASES, ids=[f"{len(s)}d-{'x'.join(map(str, s))}-N{n}" for s, n in RANK_CASES])
def test_input_ranks_cpu(input_shape, N, dtype):
    _test_linear_case("cpu", input_shape, N, dtype, bias=True)


@pytest.mark.parametrize("device", CUDA_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("input_shape,N", RANK_CASES, ids=[f"{len(s)}d-{'x'.join(map(str, s))}-N{n}" for s, n in RANK_CASES])
def test_input_ranks_cuda(device, input_shape, N, dtype):
    _test_linear_case(device, input_shape, N, dtype, bias=True)


# ---------------------------------------------------------------------------------------
# 2b. A non-contiguous 3-D input.

def _test_noncontiguous_3d_input(device, dtype):
    # (M, B, K) viewed from a (B, M, K) tensor: reshape to 2-D must copy or keep strides right.
    x = make_tensor((3, 37, 129), dtype, device, 11).transpose(0, 1)
    w = make_tensor((45, 129), dtype, device, 12)
    b = make_tensor((45,), dtype, device, 13)
    gy = make_tensor((3, 37, 45), dtype, device, 14).transpose(0, 1)
    _check(_run_linear(x.detach(), w, b, gy), reference_linear(x, w, b, gy), dtype, "3-D transposed input")


@pytest.mark.parametrize("dtype", DTYPES)
def test_noncontiguous_3d_input_cpu(dtype):
    _test_noncontiguous_3d_input("cpu", dtype)


@pytest.mark.parametrize("device", CUDA_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_noncontiguous_3d_input_cuda(device, dtype):
    _test_noncontiguous_3d_input(device, dtype)
