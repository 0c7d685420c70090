"""pylibnn: a drop-in ``nn.Linear`` whose forward and backward run on hand-written kernels.

    import pylibnn
    layer = pylibnn.Linear(1024, 4096)         # instead of torch.nn.Linear
    y = pylibnn.linear(x, weight, bias)        # instead of torch.nn.functional.linear
    model = pylibnn.convert(model)             # every nn.Linear of a model, swapped
    model = pylibnn.unconvert(model)           # and back to torch's nn.Linear / nn.Sequential
    y = pylibnn.linear(x, w, b, activation="gelu")   # act(F.linear(...)) in one fused op
    mlp = pylibnn.MLP([2, 32, 32, 1], activation="tanh")  # a whole small network in one op
"""

from . import ops  # noqa: F401  (loads the compiled library and registers the ops)
from . import onnx_export  # noqa: F401  (how the ops are written in ONNX, for torch.onnx.export)
from .functional import LinearFunction, linear
from .mlp import MLP
from .modules import Linear, convert, unconvert
from .ops import build_info

__version__ = "1.0.0"
__all__ = ["Linear", "LinearFunction", "MLP", "linear", "convert", "unconvert", "build_info", "__version__"]
