"""The tutorial's network (../shared/reference/seed-tutorial.txt), the project's reference.

``ScratchNet`` is the tutorial's from-scratch network in pure torch: weights stored
(in, out), ``z = x @ w + b`` per layer, normal(0, 0.1) initialization, three layers and no
activation (1 -> 3 -> 3 -> 2 for the tutorial's data). ``pylibnn_net`` builds the same
network from ``pylibnn.Linear`` (weights stored (out, in), as nn.Linear does),
``pylibnn_mlp`` as one fused ``pylibnn.MLP``, and ``copy_weights`` makes them start from
the scratch network's values.

The tutorial's next step adds activation functions between the layers: ``ScratchNet``
with ``activation=torch.relu`` (say) and ``pylibnn_mlp(activation="relu")`` are that
non-linear network and its fused pylibnn twin (``python -m pylibnn`` trains both).

``train_side_by_side`` trains the scratch network (the correctness reference), the pylibnn
network and the same network on torch's ``nn.Linear`` layers (what pylibnn replaces, the
timing peer) from the same initial weights, interleaved step by step.
"""

import statistics
import time
from typing import NamedTuple

import torch
from torch import nn

from .mlp import MLP
from .modules import Linear, unconvert

# The tutorial's data: y = (2x, 3x).
X = torch.tensor([[1], [2], [3], [4]], dtype=torch.float32)  # (4, 1)
Y = torch.tensor([[2, 3], [4, 6], [6, 9], [8, 12]], dtype=torch.float32)  # (4, 2)

LEARNING_RATE = 0.01
ITERATIONS = 200


class ScratchNet:
    """The tutorial's hand-built network: three affine layers, z = x @ w + b."""

    def __init__(self, input_size=1, hidden_size=3, output_size=2, generator=None, dtype=torch.float32,
                 activation=None):
        self.activation = activation if activation is not None else (lambda z: z)

        def param(*shape):
            return torch.normal(0.0, 0.1, size=shape, generator=generator, dtype=dtype).requires_grad_()

        self.w1, self.b1 = param(input_size, hidden_size), param(hidden_size)
        self.w2, self.b2 = param(hidden_size, hidden_size), param(hidden_size)
        self.w_out, self.b_out = param(hidden_size, output_size), param(output_size)

    def forward(self, x):
        a1 = self.activation(x @ self.w1 + self.b1)
        a2 = self.activation(a1 @ self.w2 + self.b2)
        return a2 @ self.w_out + self.b_out

    __call__ = forward

    def parameters(self):
        return [self.w1, self.b1, self.w2, self.b2, self.w_out, self.b_out]


def pylibnn_net(input_size=1, hidden_size=3, output_size=2, device=None, dtype=torch.float32):
    """The same network from pylibnn.Linear layers (nn.Linear's (out, in) weight layout)."""
    return nn.Sequential(
        Linear(input_size, hidden_size, device=device, dtype=dtype),
        Linear(hidden_size, hidden_size, device=device, dtype=dtype),
        Linear(hidden_size, output_size, device=device, dtype=dtype),
    )


def pylibnn_mlp(input_size=1, hidden_size=3, output_size=2, activation=None, device=None, dtype=torch.float32):
    """The same network as one fused pylibnn.MLP (activation between the layers)."""
    return MLP([input_size, hidden_size, hidden_size, output_size], activation=activation, device=device, dtype=dtype)


@torch.no_grad()
def copy_weights(scratch, net):
    """Gives ``net`` (its nn.Linear layers: a Sequential of Linear, or an MLP) the weights of ``scratch``."""
    pairs = [(scratch.w1, scratch.b1), (scratch.w2, scratch.b2), (scratch.w_out, scratch.b_out)]
    layers = [m for m in net if isinstance(m, nn.Linear)]
    for layer, (w, b) in zip(layers, pairs):
        layer.weight.copy_(w.t())
        layer.bias.copy_(b)
    return net


def mse(y, y_predicted):
    return ((y_predicted - y) ** 2).mean()


def train_in_lockstep(runs, x, y, lr=LEARNING_RATE, iterations=ITERATIONS):
    """The tutorial's loop (forward, MSE, zero_grad, backward, SGD step) for several networks
    at once: each iteration takes one step of each, in an order that rotates, so that all of
    them are timed under the same machine state (interleaved, not one run after another).

    runs: a list of (model, parameters). Returns (losses, step_seconds): per run, every
    loss, and the wall time of every step."""
    optimizers = [torch.optim.SGD(parameters, lr=lr) for _, parameters in runs]
    losses = [[] for _ in runs]
    step_seconds = [[] for _ in runs]
    for iteration in range(iterations):
        for offset in range(len(runs)):
            index = (iteration + offset) % len(runs)
            model, optimizer = runs[index][0], optimizers[index]
            start = time.perf_counter()
            loss = mse(y, model(x))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses[index].append(loss.item())
            step_seconds[index].append(time.perf_counter() - start)
    return losses, step_seconds


# activation name (pylibnn) -> the scratch network's pure-torch function
SCRATCH_ACTIVATIONS = {None: None, "relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
                       "silu": torch.nn.functional.silu, "gelu": torch.nn.functional.gelu}


class TrainingRuns(NamedTuple):
    """Three networks trained side by side from the same initial weights (train_side_by_side)."""

    reference_losses: list  # the scratch network: the correctness reference
    pylibnn_losses: list
    torch_losses: list  # the same network on torch's nn.Linear layers: what pylibnn replaces
    reference_net: ScratchNet
    pylibnn_net: nn.Module
    torch_net: nn.Sequential
    seconds_per_step: dict  # "reference", "pylibnn", "torch" -> median seconds per step


def train_side_by_side(seed=0, device="cpu", dtype=torch.float32, iterations=ITERATIONS, model="linear",
                       activation=None):
    """Trains the scratch network, its pylibnn twin and its torch twin from the same weights.

    model: "linear" (pylibnn.Linear layers; activation must be None) or "mlp" (one
    pylibnn.MLP with ``activation`` between the layers, the scratch network likewise). The
    torch twin is ``pylibnn.unconvert`` of the pylibnn network: nn.Linear layers (and the
    activation modules) in an nn.Sequential, computing with torch's own kernels.
    """
    if model not in ("linear", "mlp") or (model == "linear" and activation is not None):
        raise ValueError(f"train_side_by_side: model {model!r} with activation {activation!r}")
    generator = torch.Generator().manual_seed(seed)
    scratch = ScratchNet(X.shape[1], 3, Y.shape[1], generator=generator, dtype=dtype,
                         activation=SCRATCH_ACTIVATIONS[activation])
    with torch.no_grad():
        for p in scratch.parameters():
            p.data = p.data.to(device)
    if model == "linear":
        net = pylibnn_net(X.shape[1], 3, Y.shape[1], device=device, dtype=dtype)
    else:
        net = pylibnn_mlp(X.shape[1], 3, Y.shape[1], activation=activation, device=device, dtype=dtype)
    net = copy_weights(scratch, net)
    torch_net = unconvert(net)  # a copy: its own parameters, equal values
    x, y = X.to(device, dtype), Y.to(device, dtype)
    losses, step_seconds = train_in_lockstep(
        [(scratch, scratch.parameters()), (net, net.parameters()), (torch_net, torch_net.parameters())],
        x, y, iterations=iterations)
    seconds = {}
    if iterations > 0:
        seconds = {name: statistics.median(s) for name, s in zip(("reference", "pylibnn", "torch"), step_seconds)}
    return TrainingRuns(*losses, scratch, net, torch_net, seconds)
