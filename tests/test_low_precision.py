"""bfloat16 / float16 through pylibnn, and autocast.

Both backends compute these dtypes with their float32 kernels (inputs widened, products
accumulated in float32, each result rounded once), so each element is checked against the
float64 reference with the bound of that computation:
    |actual - ref| <= eps(dtype) / 2 * (|ref| + e32) + e32 + (half the dtype's subnormal spacing)
    e32 = ERROR_FACTOR * eps(float32) * sqrt(depth) * magnitude      (the float32 accumulation)
"""

import math

import pytest
import torch
import torch.nn.functional as F

import pylibnn
from conftest import DEVICES, GPU_CUDA, make_tensor, reference_linear, seed_for

LOW_DTYPES = [pytest.param(torch.bfloat16, id="bf16"), pytest.param(torch.float16, id="f16")]
FLOAT32_ERROR_FACTOR = 2.0

SHAPES = [  # (input shape, N)
    ((1, 1), 1),
    ((4, 3), 2),
    ((7, 300), 33),       # packed / dot paths of the float32 engine
    ((2, 65, 128), 130),  # 3-D input
    ((0, 17), 5),         # empty batch
    ((6, 0), 4),          # K == 0
]


def assert_low_precision_close(actual, reference, magnitude, depth, dtype, what):
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype}, expected {dtype}"
    assert actual.shape == reference.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(reference.shape)}"
    info = torch.finfo(dtype)
    e32 = FLOAT32_ERROR_FACTOR * torch.finfo(torch.float32).eps * math.sqrt(max(depth, 1)) * magnitude
    subnormal_half_spacing = info.smallest_normal * info.eps / 2
    bound = info.eps / 2 * (reference.abs() + e32) + e32 + subnormal_half_spacing
    error = (actual.detach().to("cpu", torch.float64) - reference).abs()
    assert (error <= bound).all(), (
        f"{what}: largest error/bound {(error / bound).max().item():.3g} "
        f"(largest error {error.max().item():.3e})")


def _test_low_precision_matches_reference(device, dtype, input_shape, N, with_bias):
    K = input_shape[-1]
    seed = seed_for(*input_shape, N, with_bias)
    x = make_tensor(input_shape, dtype, device, seed, requires_grad=True)
    w = make_tensor((N, K), dtype, device, seed + 1, requires_grad=True)
    b = make_tensor((N,), dtype, device, seed + 2, requires_grad=True) if with_bias else None
    g = make_tensor((*input_shape[:-1], N), dtype, device, seed + 3)
    y = pylibnn.linear(x, w, b)
    inputs = (x, w) if b is None else (x, w, b)
    grads = torch.autograd.grad(y, inputs, g, allow_unused=True)
    expected = reference_linear(x, w, b, g)
    names = ["grad_input", "grad_weight", "grad_bias"][:len(inputs)]
    for name, actual in zip(["output"] + names, (y,) + grads):
        if actual is None:  # autograd saw no path (M == 0 or K == 0): the reference is zero
            assert expected[name][0].abs().max().item() == 0 if expected[name][0].numel() else True
            continue
        assert_low_precision_close(actual, *expected[name], dtype, f"{dtype} {name}")


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("input_shape,N", SHAPES, ids=[f"{s}->{n}" for s, n in SHAPES])
@pytest.mark.parametrize("dtype", LOW_DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_low_precision_matches_reference(device, dtype, input_shape, N, with_bias):
    _test_low_precision_matches_reference(device, dtype, input_shape, N, with_bias)


@pytest.mark.parametrize("dtype", LOW_DTYPES)
@pytest.mark.parametrize("device", DEVICES)
def test_low_precision_strided_operands(device, dtype):
    # Transposed input, sliced weight, expanded bias: the widening copies keep the values.
    x = make_tensor((40, 9), dtype, device, 1).t()
    w = make_tensor((12, 80), dtype, device, 2)[:, ::2]
    b = make_tensor((1,), dtype, device, 3).expand(12)
    y = pylibnn.linear(x, w, b)
    expected = reference_linear(x, w, b, torch.zeros(9, 12, dtype=dtype, device=device))["output"]
    assert_low_precision_close(y, *expected, dtype, "strided output")


def _test_autocast_matches_f_linear(device, dtype, input_dtype):
    x = make_tensor((5, 24), input_dtype, device, 11, requires_grad=True)
    layer = pylibnn.Linear(24, 7, device=device, dtype=input_dtype)
    reference = torch.nn.Linear(24, 7, device=device, dtype=input_dtype)
    reference.load_state_dict(layer.state_dict())
    with torch.autocast(device, dtype=dtype):
        y = layer(x)
        y_functional = pylibnn.linear(x, layer.weight, layer.bias)
        r = reference(x)
    # Same casting as F.linear: same output dtype, and the same values up to summation
    # order: one rounding step of the output dtype plus the accumulation's own error.
    assert y.dtype == r.dtype == y_functional.dtype
    with torch.no_grad():
        magnitude = F.linear(x.double().abs(), layer.weight.double().abs(), layer.bias.double().abs())
        accumulation_dtype = torch.float64 if r.dtype == torch.float64 else torch.float32
        tolerance = (torch.finfo(r.dtype).eps * r.double().abs()
                     + 4 * torch.finfo(accumulation_dtype).eps * math.sqrt(24) * magnitude)
        assert ((y.double() - r.double()).abs() <= tolerance).all()
    # Gradients come back in the parameters' own dtype, like nn.Linear's.
    y.float().sum().backward()
    r.float().sum().backward()
    for ours, theirs in zip(layer.parameters(), reference.parameters()):
        assert ours.grad.dtype == theirs.grad.dtype == input_dtype
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=2 * torch.finfo(dtype).eps, atol=1e-6)


@pytest.mark.parametrize("input_dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_autocast_cpu_bfloat16(input_dtype):
    _test_autocast_matches_f_linear("cpu", torch.bfloat16, input_dtype)


@pytest.mark.parametrize("dtype", LOW_DTYPES)
@pytest.mark.parametrize("input_dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
# Autocast's CUDA rules apply to CUDA tensors only: a real GPU, never the emulator's CPU tensors.
@pytest.mark.parametrize("device", [GPU_CUDA])
def test_autocast_cuda(device, dtype, input_dtype):
    _test_autocast_matches_f_linear(device, dtype, input_dtype)


def test_autocast_off_leaves_dtype():
    x = make_tensor((3, 4), torch.float32, "cpu", 5)
    w = make_tensor((2, 4), torch.float32, "cpu", 6)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
        assert pylibnn.linear(x, w).dtype == torch.float32
    assert F.linear(x, w).dtype == pylibnn.linear(x, w).dtype
