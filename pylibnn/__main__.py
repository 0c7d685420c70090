"""python -m pylibnn: the tutorial's training runs, each beside its pure-torch reference.

1. The tutorial network (1 -> 3 -> 3 -> 2, no activation, MSE, SGD lr 0.01, 200 iterations)
   built from pylibnn.Linear layers.
2. The same network as one fused pylibnn.MLP([1, 3, 3, 2], activation=None).
3. The tutorial's next step: the same data trained with a non-linear network (ReLU between
   the layers), as pylibnn.MLP([1, 3, 3, 2], activation="relu"), against its pure-torch twin.
Each run trains three networks from the scratch network's initial weights, one step of each
in turn: the scratch network (the correctness reference), the pylibnn network, and the same
network on torch's nn.Linear layers (nn.Sequential; what pylibnn replaces). Prints the losses
every 20 epochs, the largest relative difference, the prediction for x = 5, and the median
time per training step of pylibnn against the nn.Linear network, saying which is faster (the
loop includes Python, the loss and the optimizer; on a shared machine the times are
indicative, benchmarks/bench_mlp.py measures properly). Exits with status 1 if pylibnn's or
the nn.Linear network's losses differ from the reference's by more than 1e-5 relative.
"""

import argparse
import sys

import torch

from . import build_info
from .reference import ITERATIONS, train_side_by_side

TOLERANCE = 1e-5

RUNS = [
    ("tutorial network, pylibnn.Linear layers", "linear", None),
    ("tutorial network, one fused pylibnn.MLP", "mlp", None),
    ("next step: non-linear network (ReLU), fused pylibnn.MLP", "mlp", "relu"),
]


def largest_relative_difference(losses, reference):
    return max((abs(a - b) / max(abs(a), 1e-30) for a, b in zip(reference, losses)), default=0.0)


def describe_network(sequential):
    """'nn.Sequential of nn.Linear and nn.ReLU layers': the module types, in order of appearance."""
    names = list(dict.fromkeys(f"nn.{type(m).__name__}" for m in sequential))
    return f"nn.Sequential of {' and '.join(names)} layers"


def speed_comparison(ours_seconds, theirs_seconds, theirs_name):
    """'pylibnn 1.31x faster than <theirs>' (or slower): both sides and the direction."""
    if ours_seconds <= theirs_seconds:
        return f"pylibnn {theirs_seconds / ours_seconds:.2f}x faster than {theirs_name}"
    return f"pylibnn {ours_seconds / theirs_seconds:.2f}x slower than {theirs_name}"


def run(title, model, activation, device, seed, iterations):
    runs = train_side_by_side(seed=seed, device=device, iterations=iterations, model=model, activation=activation)
    peer = describe_network(runs.torch_net)
    print(f"\n== {title}")
    print(f"{'epoch':>6} {'reference loss':>16} {'pylibnn loss':>16} {'rel diff':>10}")
    for epoch, (a, b) in enumerate(zip(runs.reference_losses, runs.pylibnn_losses)):
        if epoch % 20 == 0 or epoch == len(runs.reference_losses) - 1:
            rel = abs(a - b) / max(abs(a), 1e-30)
            print(f"{epoch + 1:>6} {a:>16.8f} {b:>16.8f} {rel:>10.2e}")
    worst = largest_relative_difference(runs.pylibnn_losses, runs.reference_losses)
    worst_peer = largest_relative_difference(runs.torch_losses, runs.reference_losses)
    x5 = torch.tensor([[5.0]], device=device)
    with torch.no_grad():
        ref_pred = runs.reference_net(x5).cpu().flatten().tolist()
        our_pred = runs.pylibnn_net(x5).cpu().flatten().tolist()
    print(f"largest relative loss difference from the reference: pylibnn {worst:.3e}, {peer} {worst_peer:.3e} "
          f"(tolerance {TOLERANCE:.0e})")
    print(f"prediction for x = 5: reference [{ref_pred[0]:.4f}, {ref_pred[1]:.4f}], "
          f"pylibnn [{our_pred[0]:.4f}, {our_pred[1]:.4f}] (target [10, 15])")
    if runs.seconds_per_step:
        ours, theirs = runs.seconds_per_step["pylibnn"], runs.seconds_per_step["torch"]
        print(f"time per training step (median, interleaved): pylibnn {ours * 1e6:.1f} us, {peer} "
              f"{theirs * 1e6:.1f} us: {speed_comparison(ours, theirs, peer)}")
    return max(worst, worst_peer)


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
        print(f"FAIL: losses disagree with the reference in: {'; '.join(failed)}", file=sys.stderr)
        return 1
    print("\nOK: pylibnn trains the tutorial's networks to the reference's losses")
    return 0


if __name__ == "__main__":
    sys.exit(main())
