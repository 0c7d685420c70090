"""Forward and all three gradients of pylibnn.linear against float64 F.linear.

Covers the issue's shape matrix, input ranks 1-D to 4-D, non-contiguous operands, and every
CPU GEMM path on shapes that hit each remainder of the register and cache blocks.
Each case computes its float64 reference once (conftest.reference_linear) and checks every
result with conftest.assert_close_to_reference.
"""

import itertools

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
    for name, (reference, magnitude, depth) in expected.items():
        assert_close_to_reference(actual[name], reference, magnitude, depth, dtype, f"{label} {name}")


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
# 1. The shape matrix: M x K x N, bias and no bias, float32 and float64.

SHAPE_MATRIX = list(itertools.product([0, 1, 2, 3, 7, 64, 257], [0, 1, 3, 17, 128, 300], [1, 2, 5, 33, 130]))
SHAPE_IDS = [f"M{m}-K{k}-N{n}" for m, k, n in SHAPE_MATRIX]
BIAS = [pytest.param(True, id="bias"), pytest.param(False, id="nobias")]


@pytest.mark.parametrize("bias", BIAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,K,N", SHAPE_MATRIX, ids=SHAPE_IDS)
def test_shape_matrix_cpu(M, K, N, dtype, bias):
    _test_linear_case("cpu", (M, K), N, dtype, bias)


@pytest.mark.parametrize("device", CUDA_BACKENDS)
@pytest.mark.parametrize("bias", BIAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,K,N", SHAPE_MATRIX, ids=SHAPE_IDS)
def test_shape_matrix_cuda(device, M, K, N, dtype, bias):
    _test_linear_case(device, (M, K), N, dtype, bias)


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
# 2b. Non-contiguous operands. Each layout builds a view with the given shape whose memory
# is laid out differently; the values come from the seeded generator, so the reference
# (which upcasts the values, not the layout) is unaffected.

def _layout(kind, shape, dtype, device, seed):
    if kind == "contiguous":
        t = make_tensor(shape, dtype, device, seed)
    elif kind == "transposed":  # column-major: t() of the reversed shape
        t = make_tensor(shape[::-1], dtype, device, seed).t()
    elif kind == "step":  # every other element along the last dimension
        t = make_tensor((*shape[:-1], 2 * shape[-1]), dtype, device, seed)[..., ::2]
    elif kind == "row-step":  # every third row, a column slice: both strides odd
        t = make_tensor((3 * shape[0], *shape[1:-1], shape[-1] + 2), dtype, device, seed)[::3, ..., 1:-1]
    elif kind == "expanded":  # stride 0 along the first dimension
        t = make_tensor((1, *shape[1:]), dtype, device, seed).expand(shape)
    elif kind == "offset":  # a view that starts inside its storage
        t = make_tensor(tuple(s + 3 for s in shape), dtype, device, seed)[tuple(slice(3, None) for _ in shape)]
    else:
        raise ValueError(kind)
    assert tuple(t.shape) == tuple(shape)
    if kind != "contiguous" and t.numel() > 1:
        assert not t.is_contiguous() or t.storage_offset() > 0, kind
    return t


LAYOUT_CASES = [(operand, kind)
                for operand in ("input", "weight", "grad_output")
                for kind in ("transposed", "step", "row-step", "expanded", "offset")]
LAYOUT_CASES += [("bias", kind) for kind in ("step", "expanded", "offset")]
LAYOUT_CASES += [("all", kind) for kind in ("transposed", "step", "expanded", "offset")]
LAYOUT_SHAPES = [pytest.param((7, 17, 5), id="direct-7x17x5"), pytest.param((37, 129, 45), id="packed-37x129x45")]


def _noncontiguous_operands(device, dtype, M, K, N, operand, kind):
    seed = seed_for(M, K, N, len(operand), len(kind))
    shapes = {"input": (M, K), "weight": (N, K), "bias": (N,), "grad_output": (M, N)}
    def kind_for(name):
        if operand not in (name, "all"):
            return "contiguous"
        return "step" if (name == "bias" and kind == "transposed") else kind  # a 1-D bias has no transpose

    return {name: _layout(kind_for(name), shape, dtype, device, seed + i) for i, (name, shape) in enumerate(shapes.items())}


def _test_noncontiguous(device, dtype, shape, operand, kind):
    t = _noncontiguous_operands(device, dtype, *shape, operand, kind)
    x, w, b, gy = t["input"], t["weight"], t["bias"], t["grad_output"]
    expected = reference_linear(x, w, b, gy)
    label = f"{operand} {kind}"

    # The ops, given the strided views directly.
    output = torch.ops.pylibnn.linear_forward(x, w, b)
    assert output.is_contiguous()
    grads = torch.ops.pylibnn.linear_backward(gy, x, w, [True, True, True])
    _check(dict(zip(expected, (output, *grads))), expected, dtype, f"ops, {label}")
    # And through autograd (the views are leaves of their own).
    leaves = {name: v.detach() for name, v in t.items()}
    _check(_run_linear(leaves["input"], leaves["weight"], leaves["bias"], leaves["grad_output"]),
           expected, dtype, f"linear, {label}")


@pytest.mark.parametrize("shape", LAYOUT_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("operand,kind", LAYOUT_CASES, ids=[f"{o}-{k}" for o, k in LAYOUT_CASES])
def test_noncontiguous_cpu(operand, kind, dtype, shape):
    _test_noncontiguous("cpu", dtype, shape, operand, kind)


@pytest.mark.parametrize("device", CUDA_BACKENDS)
@pytest.mark.parametrize("shape", LAYOUT_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("operand,kind", LAYOUT_CASES, ids=[f"{o}-{k}" for o, k in LAYOUT_CASES])
def test_noncontiguous_cuda(device, operand, kind, dtype, shape):
    _test_noncontiguous(device, dtype, shape, operand, kind)


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


# ---------------------------------------------------------------------------------------
# 3. Every CPU path (cpu_isa fixture) on edge shapes. Products above 4096 multiply-adds take
# the packed engine: tiles avx512 12x32 / 12x16, avx2 6x16 / 6x8, portable 4x8 (f32 / f64);
# kc is 128-512 on K, mc 128-504 on M, nc 4096 on N. grad_weight runs the engine with A =
# grad_output^T (N rows) and B = input (K columns), so N also walks the row blocks and K the
# column blocks there.

EDGE_SHAPES = (
    # M = 1..33 against N = 33..1: every remainder of MR (12, 6, 4) and of NR (32, 16, 8),
    # K = 129 is one element past avx512's kc = 128.
    [(m, 129, 34 - m) for m in range(1, 34)]
    + [(13, 333, n) for n in (63, 64, 65, 95, 97)]         # several NR panels plus a remainder
    + [(37, k, 131) for k in (1, 2, 7, 127, 128, 129, 255, 256, 257, 300, 511, 512, 513, 600)]  # kc blocks
    + [(1, 5000, 1),                                       # M = N = 1
       (1, 300, 4100), (5, 7, 4100),                       # N > nc: two jc passes; grad_weight: N row blocks
       (5, 4100, 7),                                       # K > nc: grad_weight's jc passes (row sums once)
       (600, 129, 1), (520, 129, 40),                      # M > mc: several row blocks
       (1, 64, 1000), (2, 64, 1000), (3, 128, 1000), (8, 64, 1000), (17, 64, 1000), (64, 64, 1000)]  # thin M
)
EDGE_IDS = [f"M{m}-K{k}-N{n}" for m, k, n in EDGE_SHAPES]


@pytest.mark.parametrize("bias", BIAS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,K,N", EDGE_SHAPES, ids=EDGE_IDS)
def test_cpu_paths_edge_shapes(cpu_isa, M, K, N, dtype, bias):
    assert M * K * N > 4096, "edge shapes must be large enough for the packed engine"
    _test_linear_case("cpu", (M, K), N, dtype, bias, label=f"isa={cpu_isa} M={M} K={K} N={N}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_paths_agree_bitwise_across_thread_counts(cpu_isa, dtype):
    # DESIGN: each output tile and each grad_bias row is summed in a fixed order by one task,
    # so the thread count changes the schedule, never the bits.
    x = make_tensor((70, 300), dtype, "cpu", 1)
    w = make_tensor((2100, 300), dtype, "cpu", 2)
    b = make_tensor((2100,), dtype, "cpu", 3)
    gy = make_tensor((70, 2100), dtype, "cpu", 4)
    saved_threads = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3, 1):
            torch.set_num_threads(threads)
            results.append((torch.ops.pylibnn.linear_forward(x, w, b),
                            *torch.ops.pylibnn.linear_backward(gy, x, w, [True, True, True]),
                            torch.ops.pylibnn.linear_backward(gy, x, w, [False, False, True])[2]))
    finally:
        torch.set_num_threads(saved_threads)
    for run in results[1:]:
        for name, first, again in zip(("output", "grad_input", "grad_weight", "grad_bias", "grad_bias alone"),
                                      results[0], run):
            assert torch.equal(first, again), f"{name} differs between thread counts"
