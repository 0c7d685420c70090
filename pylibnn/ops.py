"""The op registry: loads ``pylibnn._C`` (which registers ``torch.ops.pylibnn.*``) and gives
each op a fake kernel, so torch.compile and torch.export can trace through them.

Ops (schemas in csrc/ops/op_list.h; checks, shapes and dtype paths in csrc/ops/):
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
Activations: ACTIVATIONS below, read from csrc/activation.h, where their formulas are.
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

# The activation names the fused ops take ("none" is the plain layer): csrc/activation.h's list.
ACTIVATIONS = tuple(_C.activation_names())


def check_activation(op, activation):
    """ValueError naming ``op`` unless ``activation`` is one of ACTIVATIONS (the ops' own check)."""
    _C.check_activation(op, activation)


def mlp_hidden_shape(rows, widths, activation):
    """The shape of mlp_forward's ``hidden`` for ``rows`` inputs and layer widths ``widths``
    (csrc/mlp_layout.h, computed there)."""
    return _C.mlp_hidden_shape(rows, list(widths), activation)


# The fake kernels, for meta and fake tensors (torch.compile, torch.export): each calls the
# ops' own shared step (csrc/ops/op_layer.h) over a backend that computes nothing, so a traced
# call checks its arguments with the same code, exception types and words as the CPU and CUDA
# kernels, and gets outputs of the same shapes (symbolic ones under dynamic shapes).
@torch.library.register_fake("pylibnn::linear_forward")
def _linear_forward_fake(input, weight, bias):
    return _C.fake_linear_forward(input, weight, bias)


@torch.library.register_fake("pylibnn::linear_backward")
def _linear_backward_fake(grad_output, input, weight, output_mask):
    return _C.fake_linear_backward(grad_output, input, weight, list(output_mask))


@torch.library.register_fake("pylibnn::linear_act_forward")
def _linear_act_forward_fake(input, weight, bias, activation, save_preactivation):
    return _C.fake_linear_act_forward(input, weight, bias, activation, save_preactivation)


@torch.library.register_fake("pylibnn::linear_act_backward")
def _linear_act_backward_fake(grad_output, input, weight, preactivation, activation, output_mask):
    return _C.fake_linear_act_backward(grad_output, input, weight, preactivation, activation, list(output_mask))


@torch.library.register_fake("pylibnn::mlp_forward")
def _mlp_forward_fake(input, weights, biases, activation, save_hidden):
    return _C.fake_mlp_forward(input, list(weights), list(biases), activation, save_hidden)


@torch.library.register_fake("pylibnn::mlp_backward")
def _mlp_backward_fake(grad_output, input, weights, hidden, activation, has_bias, input_grad):
    return _C.fake_mlp_backward(grad_output, input, list(weights), hidden, activation, list(has_bias), input_grad)


def build_info():
    """What this build was compiled with.

    Returns a dict: ``cuda`` (CUDA kernels compiled in), ``cuda_arch_list``, ``torch``
    (the version built against), ``cpu_isa`` (``compiled``, ``supported`` and ``selected``
    CPU micro-kernel sets; ``bf16_supported`` and ``bf16_selected``, the bfloat16 kernels),
    ``cuda_gemm`` (the CUDA GEMM ``kernel`` and ``split_k``
    overrides in force, the ``kernels`` and the selection ``rule``), and ``cuda_available``
    (a GPU is visible now).
    """
    info = _C.build_info()
    info["cuda_available"] = bool(info["cuda"] and torch.cuda.is_available())
    return info


def set_cpu_isa(name):
    """Forces the CPU GEMM path ('auto', 'avx512', 'avx2', 'portable', 'reference')."""
    _C.set_cpu_isa(name)


def get_cpu_isa():
    return _C.get_cpu_isa()


def set_cpu_bf16_kernel(name):
    """Forces the CPU's bfloat16 GEMM kernel ('auto', 'amx', 'avx512bf16', 'widened'), for
    tests and benchmarks. It applies while the 'avx512' path is selected; other paths widen
    bfloat16 to float32 inside their packing. The environment variable PYLIBNN_CPU_BF16 sets
    it at start-up."""
    _C.set_cpu_bf16_kernel(name)


def get_cpu_bf16_kernel():
    return _C.get_cpu_bf16_kernel()


def set_cuda_gemm_kernel(name):
    """Forces the CUDA GEMM kernel ('auto', 'simt_basic', 'simt_warptile', 'tensor_core'),
    for tests and benchmarks; 'auto' restores the rule (build_info()['cuda_gemm']['rule']).
    The environment variable PYLIBNN_CUDA_GEMM sets it at start-up."""
    _C.set_cuda_gemm_kernel(name)


def set_cuda_split_k(splits):
    """Forces the CUDA GEMMs' split-K to `splits` slices (1: never split); 0 restores the rule.
    PYLIBNN_CUDA_SPLIT_K sets it at start-up."""
    _C.set_cuda_split_k(int(splits))
