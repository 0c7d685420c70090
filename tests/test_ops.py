"""The op registry: the pylibnn.ops aliases of the six registered ops, the activation names and
the hidden layout read from C++, build_info and the CPU path switch. The ops' behaviour is
tested from the op database (tests/opdb.py, tests/test_opdb.py)."""

import pytest
import torch

import pylibnn
from pylibnn import ops
from conftest import BUILD_INFO


OP_NAMES = ["linear_forward", "linear_backward", "linear_act_forward", "linear_act_backward", "mlp_forward",
            "mlp_backward"]


def test_aliases_are_the_registered_ops():
    for name in OP_NAMES:
        assert getattr(ops, name) is getattr(torch.ops.pylibnn, name)


def test_every_op_has_a_kernel_for_each_key():
    # Registered from the one op list (csrc/ops/op_list.h) for every backend key.
    keys = ["CPU", "Meta", "Autograd", "SparseCPU", "QuantizedCPU", "NestedTensorCPU"]
    if BUILD_INFO["cuda"]:
        keys += ["CUDA", "SparseCUDA"]
    for name in OP_NAMES:
        for key in keys:
            assert torch._C._dispatch_has_kernel_for_dispatch_key(f"pylibnn::{name}", key), (name, key)


def test_activation_names_come_from_the_kernels():
    assert ops.ACTIVATIONS == ("none", "relu", "gelu", "gelu_tanh", "silu", "tanh", "sigmoid")
    for name in ops.ACTIVATIONS:
        ops.check_activation("caller", name)
    with pytest.raises(ValueError, match="caller: expected activation to be one of 'none', 'relu'"):
        ops.check_activation("caller", "elu")


def test_mlp_hidden_shape_is_the_kernels_layout():
    # Rows rounded up to 8; each hidden width to 16, once for z and once for act(z) (csrc/mlp_layout.h).
    assert ops.mlp_hidden_shape(11, [20, 5, 2], "sigmoid") == (16, 2 * (32 + 16))
    assert ops.mlp_hidden_shape(11, [20, 5, 2], "none") == (16, 32 + 16)
    assert ops.mlp_hidden_shape(0, [3], "relu") == (0, 0)


# ---------------------------------------------------------------------------------------
# build_info and the CPU path switch.

def test_build_info_keys_and_types():
    info = pylibnn.build_info()
    assert set(info) == {"cuda", "cuda_arch_list", "torch", "cpu_isa", "cpu_profile", "cpu_scratch",
                         "cpu_output_cache", "cuda_gemm", "cuda_available"}
    assert set(info["cpu_output_cache"]) == {"free_bytes", "free_blocks", "used_bytes", "limit_bytes", "hits", "maps"}
    assert isinstance(info["cuda"], bool) and isinstance(info["cuda_available"], bool)
    assert isinstance(info["cuda_arch_list"], str) and isinstance(info["torch"], str)
    assert info["cuda_available"] == (info["cuda"] and torch.cuda.is_available())
    if info["cuda"]:
        assert info["cuda_arch_list"], "a CUDA build must name its architectures"
    # Built against the torch it runs with (major.minor; the C++ ABI is not stable across them).
    assert info["torch"].split(".")[:2] == torch.__version__.split(".")[:2], (info["torch"], torch.__version__)
    isa = info["cpu_isa"]
    assert set(isa) == {"compiled", "supported", "selected", "bf16_supported", "bf16_selected"}
    assert all(isinstance(v, list) and all(isinstance(n, str) for n in v) for v in (isa["compiled"], isa["supported"]))
    assert isinstance(isa["selected"], str)
    assert "portable" in isa["compiled"] and set(isa["compiled"]) <= {"avx512", "avx2", "portable"}
    assert {"portable", "reference"} <= set(isa["supported"]) <= set(isa["compiled"]) | {"reference"}
    assert isa["selected"] in isa["supported"] and isa["selected"] == ops.get_cpu_isa()
    assert set(isa["bf16_supported"]) <= {"amx", "avx512bf16", "widened"} and isa["bf16_supported"][-1] == "widened"
    assert isa["bf16_selected"] in isa["bf16_supported"] and isa["bf16_selected"] == ops.get_cpu_bf16_kernel()
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
