"""The tutorial's network (../shared/reference/seed-tutorial.txt), the project's reference.

``ScratchNet`` is the tutorial's from-scratch network in pure torch: weights stored
(in, out), ``z = x @ w + b`` per layer, normal(0, 0.1) initialization, three layers and no
activation (1 -> 3 -> 3 -> 2 for the tutorial's data). ``pylibnn_net`` builds the same
network from ``pylibnn.Linear`` (weights stored (out, in), as nn.Linear does), and
``copy_weights`` makes the two start from identical values.
"""

import torch
from torch import nn

from .modules import Linear

# The tutorial's data: y = (2x, 3x).
X = torch.tensor([[1], [2], [3], [4]], dtype=torch.float32)  # (4, 1)
Y = torch.tensor([[2, 3], [4, 6], [6, 9], [8, 12]], dtype=torch.float32)  # (4, 2)

LEARNING_RATE = 0.01
ITERATIONS = 200


class ScratchNet:
    """The tutorial's hand-built network: three affine layers, z = x @ w + b."""

    def __init__(self, input_size=1, hidden_size=3, output_size=2, generator=None, dtype=torch.float32):
        def param(*shape):
            return torch.normal(0.0, 0.1, size=shape, generator=generator, dtype=dtype).requires_grad_()

        self.w1, self.b1 = param(input_size, hidden_size), param(hidden_size)
        self.w2, self.b2 = param(hidden_size, hidden_size), param(hidden_size)
        self.w_out, self.b_out = param(hidden_size, output_size), param(output_size)

    def forward(self, x):
        z1 = x @ self.w1 + self.b1
        z2 = z1 @ self.w2 + self.b2
        return z2 @ self.w_out + self.b_out

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


@torch.no_grad()
def copy_weights(scratch, net):
    """Gives ``net`` (an nn.Sequential of Linear layers) the weights of ``scratch``."""
    pairs = [(scratch.w1, scratch.b1), (scratch.w2, scratch.b2), (scratch.w_out, scratch.b_out)]
    for layer, (w, b) in zip(net, pairs):
        layer.weight.copy_(w.t())
        layer.bias.copy_(b)
    return net


def mse(y, y_predicted):
    return ((y_predicted - y) ** 2).mean()


def train(model, parameters, x, y, lr=LEARNING_RATE, iterations=ITERATIONS):
    """The tutorial's loop: forward, MSE, zero_grad, backward, SGD step. Returns every loss."""
    optimizer = torch.optim.SGD(parameters, lr=lr)
    losses = []
    for _ in range(iterations):
        loss = mse(y, model(x))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def train_both(seed=0, device="cpu", dtype=torch.float32, iterations=ITERATIONS):
    """Trains the scratch network and its pylibnn twin from the same initial weights.

    Returns (reference_losses, pylibnn_losses, reference_net, pylibnn_net).
    """
    generator = torch.Generator().manual_seed(seed)
    scratch = ScratchNet(X.shape[1], 3, Y.shape[1], generator=generator, dtype=dtype)
    with torch.no_grad():
        for p in scratch.parameters():
            p.data = p.data.to(device)
    net = copy_weights(scratch, pylibnn_net(X.shape[1], 3, Y.shape[1], device=device, dtype=dtype))
    x, y = X.to(device, dtype), Y.to(device, dtype)
    reference_losses = train(scratch, scratch.parameters(), x, y, iterations=iterations)
    pylibnn_losses = train(net, net.parameters(), x, y, iterations=iterations)
    return reference_losses, pylibnn_losses, scratch, net
