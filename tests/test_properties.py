"""Property-based tests (hypothesis): random shapes, strides, dtypes, bias or none, and CPU
GEMM path, forward and all gradients against float64 F.linear.

Profiles (PYLIBNN_HYPOTHESIS_PROFILE): "ci" (the default) draws a fixed, derandomized set
of 60 examples per test, so CI is fast and every run tests the same cases; "dev" draws 1000
fresh ones per test for a local hunt (`PYLIBNN_HYPOTHESIS_PROFILE=dev pytest tests/test_properties.py`).
A failure prints the minimal example and the @reproduce_failure blob.
"""

import math
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pylibnn
from pylibnn import ops
from conftest import BUILD_INFO, DEVICES, assert_close_to_reference, reference_linear

settings.register_profile("ci", max_examples=60, derandomize=True, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=1000, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("PYLIBNN_HYPOTHESIS_PROFILE", "ci"))

# How an operand of logical shape (rows, cols) is laid out in memory.
LAYOUTS = ["contiguous", "transposed", "sliced", "offset", "expanded-rows", "expanded-cols", "scalar-expanded"]


def _laid_out(shape, layout, dtype, generator):
    """A tensor of `shape` (2-D) with the given memory layout and unit-normal values."""
    rows, cols = shape

    def randn(*s):
        return torch.randn(s, generator=generator, dtype=torch.float64).to(dtype)

    if layout == "transposed":
        return randn(cols, rows).t()
    if layout == "sliced":  # every other row and column
        return randn(2 * rows, 2 * cols)[::2, ::2]
    if layout == "offset":  # a window inside a larger storage
        return randn(rows + 3, cols + 5)[2:2 + rows, 3:3 + cols]
    if layout == "expanded-rows":  # stride 0 along rows
        return randn(1, cols).expand(rows, cols)
    if layout == "expanded-cols":
        return randn(rows, 1).expand(rows, cols)
    if layout == "scalar-expanded":
        return randn(1, 1).expand(rows, cols)
    return randn(rows, cols)


@st.composite
def linear_cases(draw):
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    leading = draw(st.lists(st.integers(0, 9), min_size=0, max_size=2))
    # Sizes: mostly small, sometimes past one register tile / the direct-path threshold.
    size = st.one_of(st.integers(0, 8), st.integers(9, 80))
    M_extra, K, N = draw(size), draw(size), draw(size)
    if len(leading) == 0:
        leading_shape = ()
    else:
        leading_shape = tuple(leading[:-1]) + (M_extra,)
    bias = draw(st.booleans())
    layouts = {name: draw(st.sampled_from(LAYOUTS)) for name in ("input", "weight")}
    bias_layout = draw(st.sampled_from(["contiguous", "strided", "expanded"]))
    isa = draw(st.sampled_from(BUILD_INFO["cpu_isa"]["supported"]))
    seed = draw(st.integers(0, 2**31 - 1))
    return dtype, leading_shape, K, N, bias, layouts, bias_layout, isa, seed


def _make(case):
    dtype, leading_shape, K, N, bias, layouts, bias_layout, _, seed = case
    g = torch.Generator().manual_seed(seed)
    M = math.prod(leading_shape)  # 1 for a 1-D input (leading_shape == ())
    x2 = _laid_out((M, K), layouts["input"], dtype, g)
    # (*, K) from the (M, K) view: a view where the leading dims allow it, else a copy.
    x = x2.reshape(*leading_shape, K) if leading_shape else x2[0]
    w = _laid_out((N, K), layouts["weight"], dtype, g)
    b = None
    if bias:
        if bias_layout == "strided":
            b = torch.randn(2 * N, generator=g, dtype=torch.float64).to(dtype)[::2]
        elif bias_layout == "expanded":
            b = torch.randn(1, generator=g, dtype=torch.float64).to(dtype).expand(N)
        else:
            b = torch.randn(N, generator=g, dtype=torch.float64).to(dtype)
    return x, w, b


@pytest.mark.parametrize("device", DEVICES)
@given(case=linear_cases())
def test_linear_matches_float64_reference(device, case):
    dtype, _, _, _, _, _, _, isa, seed = case
    x, w, b = _make(case)
    # .to(device) keeps the strides of a view (stride 0 included) only on the CPU; on CUDA the
    # operands arrive dense, which the CPU cases have already covered for layout.
    leaves = [t.detach().to(device).requires_grad_() for t in (x, w, b) if t is not None]
    gy_shape = (*x.shape[:-1], w.size(0))
    gy = torch.randn(gy_shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64).to(device, dtype)
    expected = reference_linear(*leaves[:2], leaves[2] if b is not None else None, gy)
    ops.set_cpu_isa(isa)
    try:
        y = pylibnn.linear(*leaves)
        grads = torch.autograd.grad(y, leaves, gy)
    finally:
        ops.set_cpu_isa("auto")
    actual = {"output": y, "grad_input": grads[0], "grad_weight": grads[1]}
    if b is not None:
        actual["grad_bias"] = grads[2]
    for name, (reference, magnitude, depth) in expected.items():
        assert_close_to_reference(actual[name], reference, magnitude, depth, dtype, f"{name} ({isa})")


@given(linear_cases(), st.lists(st.booleans(), min_size=3, max_size=3))
def test_backward_op_matches_reference_for_every_mask(case, mask):
    dtype, _, _, _, _, _, _, isa, seed = case
    x, w, b = _make(case)
    K, N = w.size(1), w.size(0)
    x2 = x.reshape(math.prod(x.shape[:-1]), K)
    gy = torch.randn((x2.size(0), N), generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64).to(dtype)
    expected = reference_linear(x2, w, torch.zeros(N, dtype=dtype), gy)
    ops.set_cpu_isa(isa)
    try:
        grads = ops.linear_backward(gy, x2, w, mask)
    finally:
        ops.set_cpu_isa("auto")
    for requested, name, grad in zip(mask, ("grad_input", "grad_weight", "grad_bias"), grads):
        if requested:
            assert_close_to_reference(grad, *expected[name], dtype, f"{name} ({isa}, mask {mask})")
        else:
            assert grad.shape == (0,)
