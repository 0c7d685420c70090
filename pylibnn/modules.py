"""``pylibnn.Linear``: a drop-in for ``torch.nn.Linear`` that runs on pylibnn's kernels."""

from torch import nn

from .functional import linear


class Linear(nn.Linear):
    """Applies y = x Wᵀ + b with pylibnn's kernels.

    A subclass of ``torch.nn.Linear``: the constructor, parameters (``weight`` (out, in),
    ``bias``), initialization, state_dict and repr are nn.Linear's own, so the two load
    each other's state_dicts and code that checks ``isinstance(m, nn.Linear)`` keeps
    working. Only ``forward`` differs.
    """

    def forward(self, input):
        return linear(input, self.weight, self.bias)
