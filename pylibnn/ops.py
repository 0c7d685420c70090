"""The op layer: loads ``pylibnn._C`` (which registers ``torch.ops.pylibnn.*``) and gives
each op a fake (meta) kernel, so torch.compile and torch.export can trace through them.

Ops (schemas in csrc/pylibnn.cpp):
    linear_forward(input (M, K), weight (N, K), bias (N)?) -> (M, N)
    linear_backward(grad_output (M, N), input (M, K), weight (N, K), output_mask bool[3])
        -> (grad_input (M, K), grad_weight (N, K), grad_bias (N)); unrequested ones are empty
    linear_act_forward(input, weight, bias?, activation, save_preactivation)
        -> (act(input @ weight.T + bias) (M, N), preactivation (M, N) or empty)
    linear_act_backward(grad_output, input, weight, preactivation, activation, output_mask)
        -> linear_backward of grad_output * act'(preactivation)
    mlp_forward(input (M, K_0), weights [(N_l, K_l)], biases [(N_l) or None], activation, save_hidden)
        -> (output (M, N_{L-1}), hidden (mlp_hidden_shape) or empty)
    mlp_backward(grad_output, input, weights, hidden, activation, has_bias [bool], input_grad)
        -> (grad_input (M, K_0) or empty, [grad_weight_l], [grad_bias_l or empty])
Activations: ACTIVATIONS below; their formulas are in csrc/activation.h.
"""

import sys
from pathlib import Path

import torch


def check_torch_version(built_version, running_version, source_dir):
    """ImportError unless the running torch is the one ``_C`` was compiled against.

    A C++ extension links against one torch build's libraries and symbols; loaded beside
    another it fails with a linker message (an undefined symbol, a missing libc10_cuda.so)
    that names neither version. setup.py records the version in pylibnn/_build_config.py,
    which loads whatever torch is installed.
    """
    if built_version == running_version:
        return
    package_dir = Path(__file__).resolve().parent
    source = Path(source_dir)
    # An editable install runs from the source tree itself; a wheel from site-packages.
    editable = source in package_dir.parents
    target = f"-e {source}" if editable else (str(source) if source.is_dir() else "<pylibnn's source directory>")
    raise ImportError(
        f"pylibnn was built against torch {built_version}, but torch {running_version} is installed; "
        f"its compiled kernels (pylibnn._C) load only with the torch they were built against. Rebuild "
        f"pylibnn against the installed torch:\n"
        f"    {sys.executable} -m pip install --no-build-isolation --force-reinstall --no-deps {target}")


try:
    from . import _build_config
except ImportError as error:
    raise ImportError("pylibnn/_build_config.py is missing: this pylibnn was not built by its setup.py "
                      "(pip install --no-build-isolation .)") from error
check_torch_version(_build_config.TORCH_VERSION, torch.__version__, _build_config.SOURCE_DIR)

from . import _C  # noqa: E402  (only once the torch version is known to fit)

linear_forward = torch.ops.pylibnn.linear_forward
linear_backward = torch.ops.pylibnn.linear_backward
linear_act_forward = torch.ops.pylibnn.linear_act_forward
linear_act_backward = torch.ops.pylibnn.linear_act_backward
mlp_forward = torch.ops.pylibnn.mlp_forward
mlp_backward = torch.ops.pylibnn.mlp_backward

# The activation names the fused ops take ("none" is the plain layer).
ACTIVATIONS = ("none", "relu", "gelu", "gelu_tanh", "silu", "tanh", "sigmoid")


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
def _linear_forward_fake(input, weight, bias, op="pylibnn.linear_forward"):
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
def _linear_backward_fake(grad_output, input, weight, output_mask, op="pylibnn.linear_backward"):
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


def check_activation(op, activation):
    """ValueError naming ``op`` unless ``activation`` is one of ACTIVATIONS."""
    if activation not in ACTIVATIONS:
        names = ", ".join(f"'{name}'" for name in ACTIVATIONS[:-1]) + f" or '{ACTIVATIONS[-1]}'"
        raise ValueError(f"{op}: expected activation to be one of {names}, but got {activation!r}")


@torch.library.register_fake("pylibnn::linear_act_forward")
def _linear_act_forward_fake(input, weight, bias, activation, save_preactivation):
    op = "pylibnn.linear_act_forward"
    output = _linear_forward_fake(input, weight, bias, op=op)
    check_activation(op, activation)
    return output, input.new_empty(output.shape if save_preactivation else (0,))


@torch.library.register_fake("pylibnn::linear_act_backward")
def _linear_act_backward_fake(grad_output, input, weight, preactivation, activation, output_mask):
    op = "pylibnn.linear_act_backward"
    grads = _linear_backward_fake(grad_output, input, weight, output_mask, op=op)
    _check_kind(op, "preactivation", preactivation)
    _check_like(op, grad_output, "grad_output", preactivation, "preactivation")
    torch._check(preactivation.shape == grad_output.shape,
                 lambda: f"{op}: expected preactivation of shape {list(grad_output.shape)} (the shape of "
                         f"grad_output), but got {list(preactivation.shape)}")
    check_activation(op, activation)
    return grads


def mlp_hidden_shape(rows, widths, activation):
    """The shape of mlp_forward's ``hidden`` (csrc/mlp_layout.h): rows rounded up to 8, and
    each hidden layer's width rounded up to 16, once for z and once for act(z)."""
    bands = sum((n + 15) // 16 * 16 for n in widths[:-1])
    return ((rows + 7) // 8 * 8, bands if activation == "none" else 2 * bands)


def _check_mlp_layers(op, input, weights):
    torch._check(len(weights) > 0, lambda: f"{op}: expected at least one weight, but got an empty list")
    fan_in = input.size(1)
    for l, w in enumerate(weights):
        name = f"weights[{l}]"
        _check_kind(op, name, w)
        _check_rank(op, name, w, 2, "(N_l, K_l)")
        _check_like(op, input, "input", w, name)
        torch._check(w.size(1) == fan_in,
                     lambda: f"{op}: expected {name}.size(1) to equal "
                             f"{'input.size(1)' if l == 0 else 'the previous layer width'} ({fan_in}), "
                             f"but got {name} of shape {list(w.shape)}")
        fan_in = w.size(0)
    return [w.size(0) for w in weights]


@torch.library.register_fake("pylibnn::mlp_forward")
def _mlp_forward_fake(input, weights, biases, activation, save_hidden):
    op = "pylibnn.mlp_forward"
    _check_kind(op, "input", input)
    _check_rank(op, "input", input, 2, "(M, K)")
    widths = _check_mlp_layers(op, input, weights)
    torch._check(len(biases) == len(weights),
                 lambda: f"{op}: expected one bias entry (a tensor or None) per weight ({len(weights)}), "
                         f"but got {len(biases)}")
    for l, b in enumerate(biases):
        if b is not None:
            _check_kind(op, f"biases[{l}]", b)
            _check_like(op, input, "input", b, f"biases[{l}]")
            torch._check(b.dim() == 1 and b.size(0) == widths[l],
                         lambda: f"{op}: expected biases[{l}] of shape [{widths[l]}], but got {list(b.shape)}")
    check_activation(op, activation)
    output = input.new_empty((input.size(0), widths[-1]))
    hidden = input.new_empty(mlp_hidden_shape(input.size(0), widths, activation) if save_hidden else (0,))
    return output, hidden


@torch.library.register_fake("pylibnn::mlp_backward")
def _mlp_backward_fake(grad_output, input, weights, hidden, activation, has_bias, input_grad):
    op = "pylibnn.mlp_backward"
    check_activation(op, activation)
    for name, t in (("grad_output", grad_output), ("input", input), ("hidden", hidden)):
        _check_kind(op, name, t)
    _check_rank(op, "input", input, 2, "(M, K)")
    _check_rank(op, "grad_output", grad_output, 2, "(M, N)")
    _check_like(op, input, "input", grad_output, "grad_output")
    _check_like(op, input, "input", hidden, "hidden")
    widths = _check_mlp_layers(op, input, weights)
    torch._check(len(has_bias) == len(weights),
                 lambda: f"{op}: expected one has_bias entry per weight ({len(weights)}), but got {len(has_bias)}")
    M = input.size(0)
    torch._check(grad_output.size(0) == M and grad_output.size(1) == widths[-1],
                 lambda: f"{op}: expected grad_output of shape [{M}, {widths[-1]}], but got {list(grad_output.shape)}")
    expected = mlp_hidden_shape(M, widths, activation)
    torch._check(hidden.dim() == 2 and hidden.size(0) == expected[0] and hidden.size(1) == expected[1],
                 lambda: f"{op}: expected hidden to be the contiguous {list(expected)} tensor saved by "
                         f"mlp_forward for these shapes, but got shape {list(hidden.shape)}")
    grad_input = input.new_empty((M, input.size(1)) if input_grad else (0,))
    grad_weights = [w.new_empty(w.shape) for w in weights]
    grad_biases = [input.new_empty((n,) if has else (0,)) for n, has in zip(widths, has_bias)]
    return grad_input, grad_weights, grad_biases


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
