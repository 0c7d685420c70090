"""Autocast: inside torch.autocast, pylibnn.linear and pylibnn.Linear cast as F.linear does
(csrc/autocast.cpp), with the same output dtype, values within one rounding of F.linear's,
and gradients in the parameters' own dtypes. The ops' bfloat16 / float16 values and gradients
themselves are tested from the op database (tests/opdb.py).
"""

import math

import pytest
import torch
import torch.nn.functional as F

import pylibnn
from conftest import GPU_CUDA, make_tensor

LOW_DTYPES = [pytest.param(torch.bfloat16, id="bf16"), pytest.param(torch.float16, id="f16")]



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
