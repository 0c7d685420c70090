"""The op database: one entry per pylibnn op pair, the way PyTorch's
common_methods_invocations.py drives its OpInfo tests (tests/test_opdb.py runs them).

Entries (the six ops, as three forward/backward pairs):
    linear       linear_forward + linear_backward            one layer, no activation
    linear_act   linear_act_forward + linear_act_backward    one layer, every activation
    mlp          mlp_forward + mlp_backward                  a network, every activation

Each OpInfo gives:
    sample_specs        shapes (zero sizes included), memory layouts (views: transposed,
                        strided, offset, stride-0), bias or none, activations
    run(sample)         the forward op on a sample (its backward op runs through autograd)
    reference(...)      the float64 torch computation, gradients included
    bounds(...)         one tolerance rule for every entry and dtype (below)
    error_inputs        every argument error of its two ops: expected exception type and a
                        message fragment (the same on cpu, meta and fake tensors)
    dtypes              the dtypes it supports

Tolerance (one rule, from the rounding-error bound of a dot product). A network of L layers
(L = 1 for linear and linear_act) is run a second time in float64 on magnitudes: |x|, |W|,
|b|, each activation replaced by its Lipschitz gain; its backward on |grad_output| gives
each gradient's magnitude. An element whose magnitude is `m` is checked with
    |actual - ref| <= F * eps * sqrt(depth) * L * m * (1 + curvature) + ACT_ULPS * eps * |ref|
  depth      the longest chain of sums behind the element: K (output of one layer),
             N (grad_input of one layer), M (grad_weight, grad_bias of one layer); for a
             network, sum of K_l for the output and M + sum of N_l for gradients
  F          2 for float32 (largest ratio seen ~1), 4 for float64 (the float64 reference
             rounds as much as the result: the two errors add); see conftest
  curvature  the error of a pre-activation z passed through act'': sup|act''| * F * sqrt(depth)
             * max|z magnitude| (relative to eps); 0 without activation
  ACT_ULPS   8 ulps of the activation's own evaluation (SLEEF / the fast float32 exp, tanh,
             erf and a few roundings), only where an activation ran
bfloat16 / float16 are computed in float32 and rounded once:
    |actual - ref| <= eps16/2 * (|ref| + e32) + e32 + half the subnormal spacing
with e32 the float32 bound above; where a backward reads a pre-activation or hidden tensor
saved in the low dtype, its rounding (eps16/2 of the magnitude, through the curvature) adds
eps16/2 * m * (1 + sup|act''| * max|z magnitude|).
What this still catches: a dropped or repeated term, a wrong bias or stride, a float16 or
bfloat16 accumulator, an activation or derivative wrong by more than a few ulps.

Adding an activation: its entry in ACTIVATION_REFERENCES (torch reference, sup|act'|,
sup|act''|); the generic tests then cover it on every backend.
"""

import dataclasses
import itertools
import math
import warnings
from typing import Callable

import torch
import torch.nn.functional as F

from pylibnn import ops

EPS = {dtype: torch.finfo(dtype).eps for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16)}
ERROR_FACTOR = {torch.float32: 2.0, torch.float64: 4.0}
ACT_ULPS = 8
LOW_PRECISION = (torch.bfloat16, torch.float16)


@dataclasses.dataclass(frozen=True)
class ActivationReference:
    torch_fn: Callable
    lipschitz: float   # sup |act'| over the reals
    curvature: float   # sup |act''| (relu'' is 0 away from the kink)


# The torch meaning of every activation name the ops take (csrc/activation.h's list).
ACTIVATION_REFERENCES = {
    "none": ActivationReference(lambda z: z, 1.0, 0.0),
    "relu": ActivationReference(F.relu, 1.0, 0.0),
    "gelu": ActivationReference(F.gelu, 1.13, 0.8),
    "gelu_tanh": ActivationReference(lambda z: F.gelu(z, approximate="tanh"), 1.13, 0.8),
    "silu": ActivationReference(F.silu, 1.1, 0.5),
    "tanh": ActivationReference(torch.tanh, 1.0, 0.77),
    "sigmoid": ActivationReference(torch.sigmoid, 0.25, 0.1),
}


# ---------------------------------------------------------------------------------------
# Samples.

@dataclasses.dataclass(frozen=True)
class SampleSpec:
    """A sample's shape: M rows through layers of widths sizes[0] -> sizes[1] -> ... ."""
    name: str
    M: int
    sizes: tuple          # (K_0, N_0, ..., N_{L-1})
    activation: str = "none"
    bias: bool = True
    layout: str = "contiguous"   # how the operands sit in memory (LAYOUTS)


# Memory layouts of the operands, each read in place by the kernels.
LAYOUTS = ("contiguous", "transposed", "strided", "offset", "expanded")


@dataclasses.dataclass
class Sample:
    spec: SampleSpec
    input: torch.Tensor
    weights: list
    biases: list
    grad_output: torch.Tensor

    @property
    def activation(self):
        return self.spec.activation

    def leaves(self):
        """The differentiable arguments, in the order of the gradients."""
        return [self.input] + list(self.weights) + [b for b in self.biases if b is not None]

    def gradient_names(self):
        names = ["grad_input"] + [f"grad_weight[{l}]" for l in range(len(self.weights))]
        return names + [f"grad_bias[{l}]" for l, b in enumerate(self.biases) if b is not None]


def _randn(shape, generator, dtype, device):
    return torch.randn(shape, generator=generator, dtype=torch.float64).to(device=device, dtype=dtype)


def _leaf(shape, generator, dtype, device, requires_grad):
    return _randn(shape, generator, dtype, device).requires_grad_(requires_grad)


def _laid_out(rows, cols, layout, generator, dtype, device, requires_grad):
    """A (rows, cols) tensor of unit-normal values stored as `layout` says: a view of a leaf
    (whose gradient autograd.grad gives for the view itself)."""
    if layout == "transposed":
        return _leaf((cols, rows), generator, dtype, device, requires_grad).t()
    if layout == "strided":   # every other row and column of a larger tensor
        return _leaf((2 * rows, 2 * cols), generator, dtype, device, requires_grad)[::2, ::2]
    if layout == "offset":    # a window inside a larger storage
        return _leaf((rows + 3, cols + 5), generator, dtype, device, requires_grad)[2:2 + rows, 3:3 + cols]
    if layout == "expanded":  # stride 0 along the rows
        return _leaf((1, cols), generator, dtype, device, requires_grad).expand(rows, cols)
    return _leaf((rows, cols), generator, dtype, device, requires_grad)


def seed_of(spec):
    return sum((i + 1) * ord(c) for i, c in enumerate(spec.name + spec.activation + spec.layout)) % (2**31)


def make_sample(spec, device, dtype, requires_grad=False):
    """The tensors of `spec` on `device` in `dtype` (the same values on every device). The
    input and weights take the layout; biases and grad_output are contiguous, except
    that "expanded" gives the bias a stride 0 as well."""
    generator = torch.Generator().manual_seed(seed_of(spec))
    sizes = spec.sizes
    x = _laid_out(spec.M, sizes[0], spec.layout, generator, dtype, device, requires_grad)
    weights, biases = [], []
    for l in range(len(sizes) - 1):
        weights.append(_laid_out(sizes[l + 1], sizes[l], spec.layout, generator, dtype, device, requires_grad))
        if not spec.bias:
            biases.append(None)
        elif spec.layout == "expanded":
            biases.append(_leaf((1,), generator, dtype, device, requires_grad).expand(sizes[l + 1]))
        else:
            biases.append(_leaf((sizes[l + 1],), generator, dtype, device, requires_grad))
    grad_output = _randn((spec.M, sizes[-1]), generator, dtype, device)
    return Sample(spec, x, weights, biases, grad_output)


# ---------------------------------------------------------------------------------------
# The float64 reference and the tolerance rule.

def _layer_activations(info, sample):
    L = len(sample.weights)
    if info.name == "mlp":
        return [sample.activation] * (L - 1) + ["none"]
    return [sample.activation]


def _network(x, weights, biases, activations, act_fn):
    a = x
    zs = []
    for w, b, act in zip(weights, biases, activations):
        z = F.linear(a, w, b)
        zs.append(z)
        a = act_fn(act)(z)
    return a, zs


def reference(info, sample):
    """float64 outputs and gradients on the CPU, with their magnitudes and depths:
    a dict name -> (reference, bound for each dtype: a function dtype -> bound tensor)."""
    def f64(t):
        return None if t is None else t.detach().to("cpu", torch.float64).requires_grad_()

    x, ws, bs = f64(sample.input), [f64(w) for w in sample.weights], [f64(b) for b in sample.biases]
    gy = sample.grad_output.detach().to("cpu", torch.float64)
    acts = _layer_activations(info, sample)
    leaves = [x] + ws + [b for b in bs if b is not None]
    y, _ = _network(x, ws, bs, acts, lambda act: ACTIVATION_REFERENCES[act].torch_fn)
    grads = _grads(y, leaves, gy)

    # The same network on magnitudes.
    xa, wa = x.detach().abs().requires_grad_(), [w.detach().abs().requires_grad_() for w in ws]
    ba = [None if b is None else b.detach().abs().requires_grad_() for b in bs]
    ya, za = _network(xa, wa, ba, acts, lambda act: (lambda z, g=ACTIVATION_REFERENCES[act].lipschitz: z * g))
    mag_leaves = [xa] + wa + [b for b in ba if b is not None]
    mag_grads = _grads(ya, mag_leaves, gy.abs())

    M, sizes, L = sample.spec.M, sample.spec.sizes, len(ws)
    forward_depth = sum(sizes[:-1])
    z_largest = max((z.detach().abs().max().item() for z in za if z.numel()), default=0.0)
    curvature = max(ACTIVATION_REFERENCES[act].curvature for act in acts)
    activated = any(act != "none" for act in acts)

    def depth_of(name):
        if name == "output":
            return forward_depth
        if L == 1:
            return sizes[1] if name == "grad_input" else M
        return M + sum(sizes[1:])

    result = {}
    names = ["output"] + sample.gradient_names()
    for name, ref, mag in zip(names, [y] + grads, [ya] + mag_grads):
        result[name] = (ref.detach(), _bound_rule(mag.detach(), ref.detach(), depth_of(name), L,
                                                  0.0 if name == "output" else curvature, z_largest,
                                                  activated and name == "output",
                                                  saved_low_precision=name != "output" and (activated or L > 1)))
    return result


def _grads(y, leaves, gy):
    grads = torch.autograd.grad(y, leaves, gy, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(leaves, grads)]


def _bound_rule(magnitude, ref, depth, layers, curvature, z_largest, activated, saved_low_precision):
    def bound(dtype):
        compute = torch.float64 if dtype == torch.float64 else torch.float32
        curv = curvature * ERROR_FACTOR[compute] * math.sqrt(max(depth, 1)) * z_largest
        e = ERROR_FACTOR[compute] * EPS[compute] * math.sqrt(max(depth, 1)) * layers * magnitude * (1 + curv)
        if activated:
            e = e + ACT_ULPS * EPS[compute] * ref.abs()
        if dtype not in LOW_PRECISION:
            return e
        info = torch.finfo(dtype)
        low = info.eps / 2 * (ref.abs() + e) + e + info.smallest_normal * info.eps / 2
        if saved_low_precision:
            low = low + info.eps / 2 * layers * magnitude * (1 + curvature * z_largest)
        return low
    return bound


def assert_close(actual, expected, bound, dtype, what):
    """`actual` against the float64 `expected` within bound(dtype), element by element."""
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype}, expected {dtype}"
    assert tuple(actual.shape) == tuple(expected.shape), \
        f"{what}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
    actual64 = actual.detach().to("cpu", torch.float64)
    assert torch.isfinite(actual64).all(), f"{what}: non-finite values"
    error = (actual64 - expected).abs()
    limit = bound(dtype)
    bad = error > limit
    if bad.any():
        index = tuple(int(i) for i in bad.nonzero()[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {error.numel()} elements outside the bound; first at {index}: "
            f"got {actual64[index].item()!r}, expected {expected[index].item()!r}, error {error[index].item():.3e} > "
            f"bound {limit[index].item():.3e} (largest error/bound {(error / limit.clamp_min(1e-300)).max().item():.3g})")


# ---------------------------------------------------------------------------------------
# Error inputs.

@dataclasses.dataclass(frozen=True)
class ErrorInput:
    """A call of one op that must fail with `error` and a message matching `match` (after
    the op's name). meta: whether the case also exists on meta and fake tensors (sparse,
    quantized and nested tensors have no meta form)."""
    name: str
    op: str
    make_args: Callable   # device -> the op's arguments
    error: type
    match: str
    meta: bool = True


def zeros(*shape, dtype=torch.float32, device="cpu"):
    return torch.zeros(shape, dtype=dtype, device=device)


def quantized(*shape):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.quantize_per_tensor(torch.zeros(shape), 1.0, 0, torch.quint8)


def nested():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.nested.nested_tensor([torch.zeros(2, 4), torch.zeros(3, 4)])


# Short names for the expected exception types of the error tables below.
NS, RE, VE = NotImplementedError, RuntimeError, ValueError  # "not supported", F.linear's own, bad activation


def _kind_errors(op, call):
    """The argument errors common to every op on its input and weight: ranks, dtypes,
    layouts. call(x, w) -> the op's arguments around input x and weight w."""
    def case(name, make, error, match, meta=True):
        return ErrorInput(name, op, lambda d, make=make: call(*make(d)), error, match, meta)

    cases = [
        case("weight-3d", lambda d: (zeros(3, 4, device=d), zeros(2, 5, 4, device=d)), RE, r"weight.*2-D.*3-D.*\[2, 5, 4\]"),
        case("int64", lambda d: (zeros(3, 4, dtype=torch.int64, device=d), zeros(5, 4, dtype=torch.int64, device=d)), NS,
             r"input of dtype Long.*not supported"),
        case("bool", lambda d: (zeros(3, 4, dtype=torch.bool, device=d), zeros(5, 4, dtype=torch.bool, device=d)), NS,
             r"input of dtype Bool"),
        case("complex", lambda d: (zeros(3, 4, dtype=torch.cfloat, device=d), zeros(5, 4, dtype=torch.cfloat, device=d)), NS,
             r"ComplexFloat.*not supported"),
        case("float8", lambda d: (zeros(3, 4, device=d).to(torch.float8_e4m3fn), zeros(5, 4, device=d).to(torch.float8_e4m3fn)),
             NS, r"input of dtype Float8_e4m3fn is not supported"),
        case("mixed-f64-f32", lambda d: (zeros(3, 4, dtype=torch.double, device=d), zeros(5, 4, device=d)), RE,
             r"weight.*to have the dtype of input \(Double\).*Float"),
        case("mixed-f16-bf16", lambda d: (zeros(3, 4, dtype=torch.half, device=d), zeros(5, 4, dtype=torch.bfloat16, device=d)),
             RE, r"weight.*to have the dtype of input \(Half\).*BFloat16"),
        case("int-weight", lambda d: (zeros(3, 4, device=d), zeros(5, 4, dtype=torch.int64, device=d)), NS,
             r"weight.* of dtype Long"),
        case("meta-and-cpu", lambda d: (zeros(3, 4, device="meta"), zeros(5, 4)), NS, r"mixing meta and cpu.*not supported",
             meta=False),
        case("sparse-coo-input", lambda d: (zeros(3, 4).to_sparse(), zeros(5, 4)), NS,
             r"input with layout \S*[Ss]parse(_coo)?\b.*not supported", meta=False),
        case("sparse-csr-weight", lambda d: (zeros(3, 4), zeros(5, 4).to_sparse_csr()), NS,
             r"weight.* with layout \S*[Ss]parse_?[Cc]sr", meta=False),
        case("quantized-input", lambda d: (quantized(3, 4), zeros(5, 4)), NS, r"quantized input.*not supported", meta=False),
        case("nested-input", lambda d: (nested(), zeros(5, 4)), NS, r"nested input.*not supported", meta=False),
    ]
    return cases


def _linear_forward_errors(op, extra=()):
    def call(x, w, b=None):
        return (x, w, b, *extra)

    def case(name, make, error, match, meta=True):
        return ErrorInput(name, op, lambda d, make=make: call(*make(d)), error, match, meta)

    return _kind_errors(op, call) + [
        case("weight-0d", lambda d: (zeros(3, 4, device=d), torch.tensor(1.0, device=d)), RE, r"weight.*2-D.*0-D"),
        case("weight-1d", lambda d: (zeros(3, 4, device=d), zeros(4, device=d)), NS, r"1-D weight.*not supported"),
        case("input-3d", lambda d: (zeros(2, 3, 4, device=d), zeros(5, 4, device=d)), RE, r"input to be 2-D"),
        case("wrong-K", lambda d: (zeros(3, 4, device=d), zeros(5, 6, device=d)), RE,
             r"input.size\(1\).*K = 6.*\[3, 4\].*\[5, 6\]"),
        case("wrong-K-empty", lambda d: (zeros(0, 4, device=d), zeros(5, 3, device=d)), RE, r"K = 3"),
        case("bias-size", lambda d: (zeros(3, 4, device=d), zeros(5, 4, device=d), zeros(4, device=d)), RE,
             r"bias of shape \[5\].*got \[4\]"),
        case("bias-2d-column", lambda d: (zeros(3, 4, device=d), zeros(5, 4, device=d), zeros(5, 1, device=d)), RE,
             r"bias of shape \[5\].*\[5, 1\]"),
        case("bias-2d-row", lambda d: (zeros(3, 4, device=d), zeros(5, 4, device=d), zeros(1, 5, device=d)), NS,
             r"bias of shape \[1, 5\].*not supported"),
        case("bias-0d", lambda d: (zeros(3, 4, device=d), zeros(5, 4, device=d), torch.tensor(1.0, device=d)), NS,
             r"bias.*not supported"),
        case("bias-dtype", lambda d: (zeros(3, 4, device=d), zeros(5, 4, device=d), zeros(5, dtype=torch.double, device=d)), RE,
             r"bias.*dtype of input"),
        case("bias-f32-for-f16", lambda d: (zeros(3, 4, dtype=torch.half, device=d), zeros(5, 4, dtype=torch.half, device=d),
                                            zeros(5, device=d)), RE, r"bias to have the dtype of input \(Half\).*Float"),
        case("sparse-bias", lambda d: (zeros(3, 4), zeros(5, 4), zeros(5).to_sparse()), NS, r"bias with layout \S*[Ss]parse",
             meta=False),
        case("cpu-and-meta-bias", lambda d: (zeros(3, 4), zeros(5, 4), zeros(5, device="meta")), NS, r"mixing meta and cpu",
             meta=False),
    ]


def _linear_backward_errors(op, preactivation=None, extra=()):
    """linear_backward's checks (linear_act_backward: with a preactivation like grad_output)."""
    def call(gy, x, w, mask=(True, True, True)):
        pre = () if preactivation is None else (preactivation(gy),)
        return (gy, x, w, *pre, *extra, list(mask))

    def case(name, make, error, match, meta=True):
        return ErrorInput(name, op, lambda d, make=make: call(*make(d)), error, match, meta)

    return [
        case("grad-output-shape", lambda d: (zeros(3, 6, device=d), zeros(3, 4, device=d), zeros(5, 4, device=d)), RE,
             r"grad_output of shape \[3, 5\].*\[3, 6\]"),
        case("grad-output-rows", lambda d: (zeros(2, 5, device=d), zeros(3, 4, device=d), zeros(5, 4, device=d)), RE,
             r"grad_output of shape \[3, 5\].*\[2, 5\]"),
        case("grad-output-1d", lambda d: (zeros(5, device=d), zeros(3, 4, device=d), zeros(5, 4, device=d)), RE,
             r"grad_output to be 2-D"),
        case("input-3d", lambda d: (zeros(3, 5, device=d), zeros(1, 3, 4, device=d), zeros(5, 4, device=d)), RE,
             r"input to be 2-D"),
        case("weight-1d", lambda d: (zeros(3, 5, device=d), zeros(3, 4, device=d), zeros(4, device=d)), RE, r"weight to be 2-D"),
        case("wrong-K", lambda d: (zeros(3, 5, device=d), zeros(3, 4, device=d), zeros(5, 3, device=d)), RE, r"K = 3"),
        case("mixed-dtype", lambda d: (zeros(3, 5, dtype=torch.double, device=d), zeros(3, 4, device=d), zeros(5, 4, device=d)),
             RE, r"input to have the dtype of grad_output"),
        case("weight-dtype", lambda d: (zeros(3, 5, device=d), zeros(3, 4, device=d), zeros(5, 4, dtype=torch.half, device=d)),
             RE, r"weight to have the dtype of grad_output \(Float\), but got Half"),
        case("int-grad-output", lambda d: (zeros(3, 5, dtype=torch.int32, device=d), zeros(3, 4, dtype=torch.int32, device=d),
                                           zeros(5, 4, dtype=torch.int32, device=d)), NS,
             r"grad_output of dtype Int is not supported"),
        case("complex", lambda d: (zeros(3, 5, dtype=torch.cfloat, device=d), zeros(3, 4, dtype=torch.cfloat, device=d),
                                   zeros(5, 4, dtype=torch.cfloat, device=d)), NS, r"ComplexFloat is not supported"),
        case("sparse-grad-output", lambda d: (zeros(3, 5).to_sparse(), zeros(3, 4), zeros(5, 4)), NS,
             r"grad_output with layout \S*[Ss]parse", meta=False),
        case("quantized-input", lambda d: (zeros(3, 5), quantized(3, 4), zeros(5, 4)), NS, r"quantized input", meta=False),
        case("meta-and-cpu", lambda d: (zeros(3, 5, device="meta"), zeros(3, 4), zeros(5, 4)), NS, r"mixing meta and cpu",
             meta=False),
    ]


def _linear_act_errors():
    forward = _linear_forward_errors("linear_act_forward", extra=("relu", False))
    backward = _linear_backward_errors("linear_act_backward", preactivation=lambda gy: torch.zeros_like(gy),
                                       extra=("relu",))
    x = lambda d: zeros(2, 3, device=d)  # noqa: E731
    w = lambda d: zeros(4, 3, device=d)  # noqa: E731
    gy = lambda d: zeros(2, 4, device=d)  # noqa: E731
    mask = [True, True, True]
    return forward + backward + [
        ErrorInput("activation-name", "linear_act_forward", lambda d: (x(d), w(d), None, "elu", False), VE,
                   r"expected activation to be one of 'none', 'relu', .* or 'sigmoid', but got 'elu'"),
        ErrorInput("activation-case", "linear_act_forward", lambda d: (x(d), w(d), None, "Relu", False), VE,
                   r"but got 'Relu'"),
        ErrorInput("activation-empty", "linear_act_backward", lambda d: (gy(d), x(d), w(d), gy(d), "", mask), VE,
                   r"expected activation to be one of"),
        ErrorInput("preactivation-shape", "linear_act_backward",
                   lambda d: (gy(d), x(d), w(d), zeros(4, 2, device=d), "relu", mask), RE,
                   r"expected preactivation of shape \[2, 4\] \(the shape of grad_output\), but got \[4, 2\]"),
        ErrorInput("preactivation-dtype", "linear_act_backward",
                   lambda d: (gy(d), x(d), w(d), zeros(2, 4, dtype=torch.double, device=d), "relu", mask), RE,
                   r"expected preactivation to have the dtype of grad_output"),
        ErrorInput("preactivation-int", "linear_act_backward",
                   lambda d: (gy(d), x(d), w(d), zeros(2, 4, dtype=torch.int64, device=d), "relu", mask), NS,
                   r"preactivation of dtype Long is not supported"),
    ]


def _mlp_errors():
    x = lambda d: zeros(4, 3, device=d)  # noqa: E731
    ws = lambda d: [zeros(5, 3, device=d), zeros(2, 5, device=d)]  # noqa: E731
    nob = [None, None]

    def fwd(name, make, error, match, meta=True):
        return ErrorInput(name, "mlp_forward", make, error, match, meta)

    def hidden(d, act="relu", M=4):
        rows, cols = ops.mlp_hidden_shape(M, [5, 2], act)
        return zeros(rows, cols, device=d)

    def bwd(name, make, error, match, meta=True):
        return ErrorInput(name, "mlp_backward", make, error, match, meta)

    gy = lambda d: zeros(4, 2, device=d)  # noqa: E731
    return [
        fwd("no-weights", lambda d: (x(d), [], [], "relu", False), RE, r"expected at least one weight"),
        fwd("chain", lambda d: (x(d), [zeros(5, 3, device=d), zeros(2, 4, device=d)], nob, "relu", False), RE,
            r"expected weights\[1\].size\(1\) to equal the previous layer's width \(5\)"),
        fwd("first-width", lambda d: (zeros(4, 2, device=d), ws(d), nob, "relu", False), RE,
            r"expected weights\[0\].size\(1\) to equal input.size\(1\) \(2\)"),
        fwd("bias-count", lambda d: (x(d), ws(d), [None], "relu", False), RE, r"expected one bias entry"),
        fwd("bias-shape", lambda d: (x(d), ws(d), [None, zeros(5, device=d)], "relu", False), RE,
            r"expected biases\[1\] of shape \[2\]"),
        fwd("weight-dtype", lambda d: (x(d), [zeros(5, 3, device=d), zeros(2, 5, dtype=torch.double, device=d)], nob, "relu",
                                       False), RE, r"expected weights\[1\] to have the dtype"),
        fwd("weight-int", lambda d: (x(d), [zeros(5, 3, dtype=torch.int64, device=d), zeros(2, 5, device=d)], nob, "relu",
                                     False), NS, r"weights\[0\] of dtype Long is not supported"),
        fwd("weight-1d", lambda d: (x(d), [zeros(5, 3, device=d), zeros(5, device=d)], nob, "relu", False), RE,
            r"expected weights\[1\] to be 2-D"),
        fwd("input-3d", lambda d: (zeros(1, 4, 3, device=d), ws(d), nob, "relu", False), RE, r"expected input to be 2-D"),
        fwd("input-int", lambda d: (zeros(4, 3, dtype=torch.int32, device=d), ws(d), nob, "relu", False), NS,
            r"input of dtype Int is not supported"),
        fwd("activation", lambda d: (x(d), ws(d), nob, "swish", False), VE, r"expected activation to be one of"),
        fwd("sparse-input", lambda d: (zeros(4, 3).to_sparse(), ws("cpu"), nob, "relu", False), NS,
            r"input with layout \S*[Ss]parse", meta=False),
        fwd("nested-input", lambda d: (nested(), [zeros(5, 4), zeros(2, 5)], nob, "relu", False), NS,
            r"nested input.*not supported", meta=False),
        fwd("meta-and-cpu", lambda d: (zeros(4, 3, device="meta"), ws("cpu"), nob, "relu", False), NS,
            r"mixing meta and cpu", meta=False),
        bwd("hidden-width", lambda d: (gy(d), x(d), ws(d), hidden(d)[:, :-1], "relu", [False, False], True), RE,
            r"expected hidden to be the contiguous \[8, 32\] tensor saved by mlp_forward"),
        bwd("hidden-of-none", lambda d: (gy(d), x(d), ws(d), hidden(d), "none", [False, False], True), RE,
            r"expected hidden to be the contiguous \[8, 16\] tensor"),
        bwd("hidden-not-contiguous", lambda d: (gy(d), x(d), ws(d), zeros(32, 8, device=d).t(), "relu", [False, False],
                                                True), RE, r"\(not contiguous\)"),
        bwd("grad-output-shape", lambda d: (gy(d).t(), x(d), ws(d), hidden(d), "relu", [False, False], True), RE,
            r"expected grad_output of shape \[4, 2\]"),
        bwd("has-bias-count", lambda d: (gy(d), x(d), ws(d), hidden(d), "relu", [False], True), RE,
            r"expected one has_bias entry"),
        bwd("activation", lambda d: (gy(d), x(d), ws(d), hidden(d), "Tanh", [False, False], True), VE,
            r"expected activation to be one of"),
        bwd("hidden-dtype", lambda d: (gy(d), x(d), ws(d), hidden(d).double(), "relu", [False, False], True), RE,
            r"expected hidden to have the dtype of input"),
        bwd("grad-output-int", lambda d: (gy(d).int(), x(d), ws(d), hidden(d), "relu", [False, False], True), NS,
            r"grad_output of dtype Int is not supported"),
        bwd("sparse-grad-output", lambda d: (gy("cpu").to_sparse(), x("cpu"), ws("cpu"), hidden("cpu"), "relu",
                                             [False, False], True), NS, r"grad_output with layout \S*[Ss]parse",
            meta=False),
    ]


# ---------------------------------------------------------------------------------------
# The entries.

@dataclasses.dataclass(frozen=True)
class OpInfo:
    name: str
    forward_op: str
    backward_op: str
    sample_specs: tuple
    error_inputs: tuple
    dtypes: tuple = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
    # Small float64 samples for gradcheck / gradgradcheck and opcheck.
    gradcheck_specs: tuple = ()
    # The slow cases whose sizes or indices pass 2^31 (int64 index arithmetic).
    large_specs: tuple = ()
    # More shapes, float32 and float64: a matrix of sizes (on one CPU path and the CUDA
    # backends), the remainders of every register and cache block (on every CPU path), and
    # a product large enough to split over threads (determinism across thread counts).
    matrix_specs: tuple = ()
    edge_specs: tuple = ()
    thread_specs: tuple = ()
    # Whether the CPU result is the same bits for every thread count (else only for each
    # thread count: the fused MLP sums its weight gradients per part, and the parts follow
    # the thread count; csrc/cpu/mlp_cpu.cpp).
    thread_count_invariant: bool = True

    def call(self, x, weights, biases, activation):
        """The forward op (its output); autograd runs the backward op."""
        op = getattr(ops, self.forward_op)
        if self.name == "linear":
            return op(x, weights[0], biases[0])
        if self.name == "linear_act":
            return op(x, weights[0], biases[0], activation, False)[0]
        return op(x, list(weights), list(biases), activation, False)[0]

    def run(self, sample):
        return self.call(sample.input, sample.weights, sample.biases, sample.activation)

    def run_saving(self, sample):
        """The forward op asked to save what its backward op reads: (output, saved)."""
        x, ws, bs, act = sample.input, sample.weights, sample.biases, sample.activation
        if self.name == "linear":
            return getattr(ops, self.forward_op)(x, ws[0], bs[0]), None
        if self.name == "linear_act":
            return getattr(ops, self.forward_op)(x, ws[0], bs[0], act, True)
        return getattr(ops, self.forward_op)(x, ws, bs, act, True)

    def run_backward(self, sample, saved, mask):
        """The backward op called directly: the gradients in the order of sample.leaves(), an
        unrequested one as None. mask: (input, weight, bias) for one layer; for the MLP only
        mask[0] (the input gradient) applies, as the op always gives the parameters'."""
        x, ws, bs, act, gy = sample.input, sample.weights, sample.biases, sample.activation, sample.grad_output
        op = getattr(ops, self.backward_op)
        if self.name in ("linear", "linear_act"):
            args = (gy, x, ws[0]) + ((saved, act) if self.name == "linear_act" else ())
            gi, gw, gb = op(*args, list(mask))
            grads = [gi if mask[0] else None, gw if mask[1] else None]
            return grads + ([gb if mask[2] else None] if bs[0] is not None else [])
        gi, gws, gbs = op(gy, x, ws, saved, act, [b is not None for b in bs], mask[0])
        return [gi if mask[0] else None] + list(gws) + [g for g, b in zip(gbs, bs) if b is not None]


ACTIVATIONS = tuple(ACTIVATION_REFERENCES)


def _linear_specs():
    specs = [
        SampleSpec("1x1x1", 1, (1, 1)),
        SampleSpec("tiny", 4, (3, 2)),
        SampleSpec("direct", 5, (7, 9), bias=False),
        SampleSpec("dot", 5, (100, 30)),              # few rows, long contiguous K: the dot path
        SampleSpec("packed", 67, (129, 45)),          # the blocked engine with edge tiles
        SampleSpec("wide", 13, (40, 300), bias=False),
        SampleSpec("tall", 300, (17, 3)),
        SampleSpec("M=0", 0, (5, 4)),
        SampleSpec("K=0", 3, (0, 4)),
        SampleSpec("K=0-nobias", 3, (0, 4), bias=False),
        SampleSpec("N=0", 3, (5, 0)),
    ]
    for layout in LAYOUTS[1:]:
        specs.append(SampleSpec(f"packed-{layout}", 40, (70, 33), layout=layout))
        specs.append(SampleSpec(f"dot-{layout}", 3, (80, 20), layout=layout, bias=False))
    return tuple(specs)


def _linear_matrix_specs():
    # M x K x N over the sizes that change paths: empty, one, a few, past a register tile.
    return tuple(SampleSpec(f"M{M}-K{K}-N{N}-{'bias' if bias else 'nobias'}", M, (K, N), bias=bias)
                 for M, K, N, bias in itertools.product([0, 1, 2, 3, 7, 64, 257], [0, 1, 3, 17, 128, 300],
                                                        [1, 2, 5, 33, 130], [True, False]))


def _linear_edge_specs():
    # Products above 4096 multiply-adds take the packed engine: tiles avx512 12x32 / 12x16,
    # avx2 6x16 / 6x8, portable 4x8 (f32 / f64); kc is 128-512 on K, mc 128-504 on M, nc 4096
    # on N. grad_weight runs the engine with A = grad_output^T (N rows) and B = input (K
    # columns), so N also walks the row blocks and K the column blocks there.
    shapes = ([(m, 129, 34 - m) for m in range(1, 34)]               # every remainder of MR and NR; K past kc = 128
              + [(13, 333, n) for n in (63, 64, 65, 95, 97)]        # several NR panels plus a remainder
              + [(37, k, 131) for k in (1, 2, 7, 127, 128, 129, 255, 256, 257, 300, 511, 512, 513, 600)]  # kc blocks
              + [(1, 5000, 1),                                       # M = N = 1
                 (1, 300, 4100), (5, 7, 4100),                       # N > nc: two jc passes
                 (5, 4100, 7),                                       # K > nc: grad_weight's jc passes
                 (600, 129, 1), (520, 129, 40),                      # M > mc: several row blocks
                 (1, 64, 1000), (2, 64, 1000), (3, 128, 1000), (8, 64, 1000), (17, 64, 1000), (64, 64, 1000)])
    return tuple(SampleSpec(f"M{M}-K{K}-N{N}-{'bias' if bias else 'nobias'}", M, (K, N), bias=bias)
                 for (M, K, N), bias in itertools.product(shapes, [True, False]))


def _linear_act_specs():
    specs = []
    for act in ACTIVATIONS[1:]:
        specs += [SampleSpec("tiny", 4, (3, 3), act), SampleSpec("dot", 5, (70, 9), act),
                  SampleSpec("packed", 67, (129, 45), act), SampleSpec("M=0", 0, (5, 4), act),
                  SampleSpec("K=0", 3, (0, 4), act), SampleSpec("N=0", 3, (5, 0), act)]
    specs += [SampleSpec("nobias-strided", 9, (20, 11), "gelu", bias=False, layout="strided"),
              SampleSpec("transposed", 30, (40, 21), "silu", layout="transposed"),
              SampleSpec("expanded", 12, (16, 10), "tanh", layout="expanded"),
              SampleSpec("none", 6, (8, 5), "none")]
    return tuple(specs)


def _mlp_specs():
    return (
        SampleSpec("tutorial", 4, (1, 3, 3, 2), "none"),
        SampleSpec("tanh-32", 64, (2, 32, 32, 1), "tanh"),
        SampleSpec("relu-64", 256, (3, 64, 64, 64, 3), "relu"),
        SampleSpec("gelu-wide", 100, (5, 200, 37, 130, 7), "gelu"),   # past the fused CUDA kernel's 128
        SampleSpec("sigmoid", 13, (4, 17, 3), "sigmoid"),
        SampleSpec("one-layer", 3, (6, 5), "silu"),
        SampleSpec("one-row", 1, (9, 33, 20, 4), "gelu_tanh"),
        SampleSpec("empty-hidden", 5, (3, 0, 4), "relu"),
        SampleSpec("M=0", 0, (3, 8, 4), "silu"),
        SampleSpec("nobias", 7, (5, 6, 3), "tanh", bias=False),
        SampleSpec("strided", 9, (6, 10, 4), "relu", layout="strided"),
        SampleSpec("transposed", 8, (5, 12, 3), "gelu", layout="transposed"),
        SampleSpec("offset", 6, (4, 7, 2), "silu", layout="offset"),
        SampleSpec("expanded", 5, (3, 6, 2), "sigmoid", layout="expanded"),
    )


OP_DB = (
    OpInfo("linear", "linear_forward", "linear_backward", _linear_specs(),
           tuple(_linear_forward_errors("linear_forward") + _linear_backward_errors("linear_backward")),
           gradcheck_specs=(SampleSpec("g", 3, (4, 5)), SampleSpec("g-nobias", 2, (3, 2), bias=False),
                            SampleSpec("g-M=0", 0, (3, 2)), SampleSpec("g-K=0", 2, (0, 3)),
                            SampleSpec("g-strided", 3, (4, 2), layout="strided")),
           large_specs=(SampleSpec("output-over-2^31", 2**16 + 3, (1, 2**15 + 1)),
                        SampleSpec("rows-over-2^31", 2**31 + 5, (1, 1))),
           matrix_specs=_linear_matrix_specs(), edge_specs=_linear_edge_specs(),
           thread_specs=(SampleSpec("threads", 70, (300, 2100)),)),
    OpInfo("linear_act", "linear_act_forward", "linear_act_backward", _linear_act_specs(), tuple(_linear_act_errors()),
           gradcheck_specs=tuple(SampleSpec("g", 3, (4, 5), act) for act in ACTIVATIONS[1:])
           + (SampleSpec("g-nobias", 2, (3, 2), "gelu", bias=False),),
           large_specs=(SampleSpec("output-over-2^31", 2**16 + 3, (1, 2**15 + 1), "relu"),),
           edge_specs=tuple(SampleSpec(f"edge-{M}-{K}-{N}", M, (K, N), act) for act in ("gelu", "tanh", "silu")
                            for M, K, N in ((13, 129, 33), (37, 257, 131), (3, 300, 65))),
           thread_specs=(SampleSpec("threads", 70, (300, 700), "gelu"),)),
    OpInfo("mlp", "mlp_forward", "mlp_backward", _mlp_specs(), tuple(_mlp_errors()),
           gradcheck_specs=(SampleSpec("g", 3, (4, 5, 2), "tanh"), SampleSpec("g-none", 2, (3, 4, 2), "none"),
                            SampleSpec("g-gelu", 3, (2, 3, 3, 2), "gelu", bias=False),
                            SampleSpec("g-relu", 4, (3, 6, 2), "relu")),
           # A 64-bit MLP case (hidden past 2^31 elements) needs more than 16 GiB: none here.
           large_specs=(),
           edge_specs=(SampleSpec("edge-wide", 37, (129, 65, 33, 7), "tanh"),
                       SampleSpec("edge-deep", 20, (16, 16, 16, 16, 16, 16, 3), "relu")),
           thread_specs=(SampleSpec("threads", 1000, (64, 128, 128, 10), "gelu"),),
           thread_count_invariant=False),
)

OPS_BY_NAME = {info.name: info for info in OP_DB}
