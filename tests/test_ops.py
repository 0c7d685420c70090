"""The op layer: torch.ops.pylibnn.* schemas and masks, the pylibnn.ops aliases, opcheck,
build_info and the CPU path switch."""

import itertools

import pytest
import torch

import pylibnn
from pylibnn import ops
from conftest import (BUILD_INFO, CUDA_BACKENDS, DEVICES, DTYPES, assert_close_to_reference, make_tensor,
                      reference_linear)


def test_aliases_are_the_registered_ops():
    assert ops.linear_forward is torch.ops.pylibnn.linear_forward
    assert ops.linear_backward is torch.ops.pylibnn.linear_backward


MASKS = list(itertools.product([False, True], repeat=3))
MASK_IDS = ["".join("TF"[not m] for m in mask) for mask in MASKS]
MASK_SHAPES = [pytest.param((7, 17, 5), id="direct"), pytest.param((50, 129, 2100), id="packed")]


def _test_backward_output_mask(device, dtype, shape, mask):
    M, K, N = shape
    x = make_tensor((M, K), dtype, device, 1)
    w = make_tensor((N, K), dtype, device, 2)
    b = make_tensor((N,), dtype, device, 3)
    gy = make_tensor((M, N), dtype, device, 4)
    expected = reference_linear(x, w, b, gy)
    grads = torch.ops.pylibnn.linear_backward(gy, x, w, list(mask))
    for requested, name, grad in zip(mask, ("grad_input", "grad_weight", "grad_bias"), grads):
        assert grad.dtype == dtype and grad.device.type == device
        if requested:
            assert grad.is_contiguous()
            assert_close_to_reference(grad, *expected[name], dtype, f"mask {mask} {name}")
        else:
            assert grad.shape == (0,), f"unrequested {name} has shape {tuple(grad.shape)}"


@pytest.mark.parametrize("mask", MASKS, ids=MASK_IDS)
@pytest.mark.parametrize("shape", MASK_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_output_mask_cpu(dtype, shape, mask):
    _test_backward_output_mask("cpu", dtype, shape, mask)


@pytest.mark.parametrize("device", CUDA_BACKENDS)
@pytest.mark.parametrize("mask", MASKS, ids=MASK_IDS)
@pytest.mark.parametrize("shape", MASK_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_output_mask_cuda(device, dtype, shape, mask):
    _test_backward_output_mask(device, dtype, shape, mask)


def sample_inputs(device, requires_grad=False):
    """(op name, args) samples for opcheck: forward with and without bias, backward masks."""
    samples = []
    for dtype, (M, K, N) in itertools.product((torch.float32, torch.float64), ((3, 4, 5), (20, 33, 17))):
        x = make_tensor((M, K), dtype, device, 1, requires_grad)
        w = make_tensor((N, K), dtype, device, 2, requires_grad)
        b = make_tensor((N,), dtype, device, 3, requires_grad)
        gy = make_tensor((M, N), dtype, device, 4, requires_grad)
        samples += [("linear_forward", (x, w, b)), ("linear_forward", (x, w, None)),
                    ("linear_backward", (gy, x, w, [True, True, True])),
                    ("linear_backward", (gy, x, w, [False, True, False]))]
    return samples


def _test_opcheck(device, requires_grad):
    # Every opcheck test: schema, autograd registration (both ops have a C++ Autograd
    # kernel), fake tensors, and AOT dispatch with static and dynamic shapes.
    for op_name, args in sample_inputs(device, requires_grad):
        torch.library.opcheck(getattr(torch.ops.pylibnn, op_name).default, args)


OPCHECK_GRAD = [pytest.param(False, id="no-grad"), pytest.param(True, id="requires-grad")]


@pytest.mark.parametrize("requires_grad", OPCHECK_GRAD)
def test_opcheck_cpu(requires_grad):
    _test_opcheck("cpu", requires_grad)


@pytest.mark.parametrize("device", CUDA_BACKENDS)
@pytest.mark.parametrize("requires_grad", OPCHECK_GRAD)
def test_opcheck_cuda(device, requires_grad):
    _test_opcheck(device, requires_grad)


# ---------------------------------------------------------------------------------------
# Bad inputs: tests/test_validation.py.

# ---------------------------------------------------------------------------------------
# build_info and the CPU path switch.

def test_build_info_keys_and_types():
    info = pylibnn.build_info()
    assert set(info) == {"cuda", "cuda_arch_list", "torch", "cpu_isa", "cuda_available"}
    assert isinstance(info["cuda"], bool) and isinstance(info["cuda_available"], bool)
    assert isinstance(info["cuda_arch_list"], str) and isinstance(info["torch"], str)
    assert info["cuda_available"] == (info["cuda"] and torch.cuda.is_available())
    if info["cuda"]:
        assert info["cuda_arch_list"], "a CUDA build must name its architectures"
    # Built against the torch it runs with (major.minor; the C++ ABI is not stable across them).
    assert info["torch"].split(".")[:2] == torch.__version__.split(".")[:2], (info["torch"], torch.__version__)
    isa = info["cpu_isa"]
    assert set(isa) == {"compiled", "supported", "selected"}
    assert all(isinstance(v, list) and all(isinstance(n, str) for n in v) for v in (isa["compiled"], isa["supported"]))
    assert isinstance(isa["selected"], str)
    assert "portable" in isa["compiled"] and set(isa["compiled"]) <= {"avx512", "avx2", "portable"}
    assert {"portable", "reference"} <= set(isa["supported"]) <= set(isa["compiled"]) | {"reference"}
    assert isa["selected"] in isa["supported"] and isa["selected"] == ops.get_cpu_isa()
    assert info is not pylibnn.build_info(), "each call returns a fresh dict"


def test_auto_selects_the_best_supported_path():
    ops.set_cpu_isa("auto")
    assert ops.get_cpu_isa() == BUILD_INFO["cpu_isa"]["supported"][0]
    assert pylibnn.build_info()["cpu_isa"]["selected"] == ops.get_cpu_isa()


def test_set_cpu_isa_changes_the_path(cpu_isa):
    assert ops.get_cpu_isa() == cpu_isa
    assert pylibnn.build_info()["cpu_isa"]["selected"] == cpu_isa


@pytest.mark.parametrize("name", ["sse9", "", "AVX2", "cuda"])
def test_set_cpu_isa_rejects_unknown_names(name):
    before = ops.get_cpu_isa()
    with pytest.raises(RuntimeError, match=r"pylibnn\.set_cpu_isa"):
        ops.set_cpu_isa(name)
    assert ops.get_cpu_isa() == before


@pytest.mark.parametrize("name", [n for n in ("avx512", "avx2") if n not in BUILD_INFO["cpu_isa"]["supported"]]
                         or [pytest.param("avx512", marks=pytest.mark.skip(reason="this CPU supports every compiled path"))])
def test_set_cpu_isa_rejects_unsupported_paths(name):
    with pytest.raises(RuntimeError, match=r"pylibnn\.set_cpu_isa"):
        ops.set_cpu_isa(name)
