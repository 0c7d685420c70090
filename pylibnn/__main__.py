"""python -m pylibnn: the tutorial's training runs, each beside its pure-torch reference.

1. The tutorial network (1 -> 3 -> 3 -> 2, no activation, MSE, SGD lr 0.01, 200 iterations)
   built from pylibnn.Linear layers.
2. The same network as one fused pylibnn.MLP([1, 3, 3, 2], activation=None).
3. The tutorial's next step: the same data trained with a non-linear network (ReLU between
   the layers), as pylibnn.MLP([1, 3, 3, 2], activation="relu"), against its pure-torch twin.
Each run starts from the scratch network's initial weights. Prints the losses every 20
epochs, the largest relative difference, the prediction for x = 5 and the time per training
step of each (the loop includes Python, the loss and the optimizer; on a shared machine the
times are indicative, benchmarks/bench_mlp.py measures properly). Exits with status 1 if any
run disagrees with its reference by more than 1e-5 relative.
"""

import argparse
import sys

import torch

from . import build_info
from .reference import ITERATIONS, train_both

TOLERANCE = 1e-5

RUNS = [
    ("tutorial network, pylibnn.Linear layers", "linear", None),
    ("tutorial network, one fused pylibnn.MLP", "mlp", None),
    ("next step: non-linear network (ReLU), fused pylibnn.MLP", "mlp", "relu"),
]


def run(title, model, activation, device, seed, iterations):
    timings = {}
    reference, ours, scratch, net = train_both(seed=seed, device=device, iterations=iterations, model=model,
                                               activation=activation, timings=timings)
    print(f"\n== {title}")
    print(f"{'epoch':>6} {'reference loss':>16} {'pylibnn loss':>16} {'rel diff':>10}")
    worst = 0.0
    for epoch, (a, b) in enumerate(zip(reference, ours)):
        rel = abs(a - b) / max(abs(a), 1e-30)
        worst = max(worst, rel)
        if epoch % 20 == 0 or epoch == len(reference) - 1:
            print(f"{epoch + 1:>6} {a:>16.8f} {b:>16.8f} {rel:>10.2e}")
    x5 = torch.tensor([[5.0]], device=device)
    with torch.no_grad():
        ref_pred = scratch(x5).cpu().flatten().tolist()
        our_pred = net(x5).cpu().flatten().tolist()
    print(f"largest relative loss difference: {worst:.3e} (tolerance {TOLERANCE:.0e})")
    print(f"prediction for x = 5: reference [{ref_pred[0]:.4f}, {ref_pred[1]:.4f}], "
          f"pylibnn [{our_pred[0]:.4f}, {our_pred[1]:.4f}] (target [10, 15])")
    if timings:
        ref_us, our_us = timings["reference"] * 1e6, timings["pylibnn"] * 1e6
        print(f"time per training step (median): reference {ref_us:.1f} us, pylibnn {our_us:.1f} us "
              f"({ref_us / our_us:.2f}x)")
    return worst


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

    failed = []
    for title, model, activation in RUNS:
        if run(title, model, activation, device, args.seed, args.iterations) > TOLERANCE:
            failed.append(title)
    if failed:
        print(f"FAIL: pylibnn's losses disagree with the reference in: {'; '.join(failed)}", file=sys.stderr)
        return 1
    print("\nOK: pylibnn trains the tutorial's networks to the reference's losses")
    return 0


if __name__ == "__main__":
    sys.exit(main())
