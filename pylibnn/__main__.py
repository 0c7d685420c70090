"""python -m pylibnn: the tutorial's training run, twice, side by side.

Trains the tutorial network (1 -> 3 -> 3 -> 2, MSE, SGD lr 0.01, 200 iterations) from the
same initial weights as the pure-torch scratch network and on pylibnn's kernels, prints
both losses every 10 epochs, the largest relative difference and both predictions for
x = 5, and exits with status 1 if the two runs disagree by more than 1e-5 relative.
"""

import argparse
import sys

import torch

from . import build_info
from .reference import ITERATIONS, train_both

TOLERANCE = 1e-5


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pylibnn", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu or cuda (default: cuda when a GPU is visible)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=ITERATIONS)
    args = parser.parse_args(argv)

    info = build_info()
    device = torch.device(args.device)
    if device.type == "cuda":
        if not info["cuda"]:
            parser.error("this build of pylibnn has no CUDA kernels (build_info()['cuda'] is False)")
        backend = f"CUDA ({torch.cuda.get_device_name(device)}), tiled shared-memory kernels"
    else:
        backend = f"CPU, GEMM path '{info['cpu_isa']['selected']}' ({torch.get_num_threads()} threads)"
    print(f"pylibnn {__import__('pylibnn').__version__} on torch {torch.__version__}; backend: {backend}")

    reference, ours, scratch, net = train_both(seed=args.seed, device=device, iterations=args.iterations)

    print(f"{'epoch':>6} {'reference loss':>16} {'pylibnn loss':>16} {'rel diff':>10}")
    worst = 0.0
    for epoch, (a, b) in enumerate(zip(reference, ours)):
        rel = abs(a - b) / max(abs(a), 1e-30)
        worst = max(worst, rel)
        if epoch % 10 == 0:
            print(f"{epoch + 1:>6} {a:>16.8f} {b:>16.8f} {rel:>10.2e}")
    x5 = torch.tensor([[5.0]], device=device)
    with torch.no_grad():
        ref_pred = scratch(x5).cpu().flatten().tolist()
        our_pred = net(x5).cpu().flatten().tolist()
    print(f"largest relative loss difference: {worst:.3e} (tolerance {TOLERANCE:.0e})")
    print(f"prediction for x = 5: reference [{ref_pred[0]:.4f}, {ref_pred[1]:.4f}], "
          f"pylibnn [{our_pred[0]:.4f}, {our_pred[1]:.4f}] (target [10, 15])")
    if worst > TOLERANCE:
        print("FAIL: pylibnn's losses disagree with the reference network", file=sys.stderr)
        return 1
    print("OK: pylibnn trains the tutorial network to the reference's losses")
    return 0


if __name__ == "__main__":
    sys.exit(main())
