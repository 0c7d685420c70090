"""Small-network benchmark: pylibnn.MLP against the same nn.Sequential, eager and compiled.

For each network (the issue's three, plus a wider one) and each implementation, with the same
weights and inputs, interleaved repeats, medians (bench_linear.py's timer):
  forward   model(x) under torch.no_grad()
  fwd+bwd   model(x).backward(grad) through autograd (parameter gradients accumulate)
  step      zero_grad(); mse_loss(model(x), target).backward(); SGD step
Implementations: "sequential" (nn.Sequential of nn.Linear and activation modules, torch's
kernels), "compiled" (torch.compile of that Sequential, default mode; compiled once per
network before timing), "pylibnn" (pylibnn.MLP, one fused op forward and one backward).
Also measures the floor that torch's autograd puts under any fwd+bwd: a single-node graph
(a multiply of one tensor) run through Tensor.backward.

    python -m benchmarks.bench_mlp [--device cpu|cuda] [--quick] [--out DIR]     (from the repository root)

Writes DIR/mlp_<device>.md and .csv (DIR default benchmarks/results).
"""

import argparse
import csv
import sys
import time
from pathlib import Path

from benchmarks.harness import HERE, Timer, bench_case, describe, machine_info  # (sets OpenBLAS's env first)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import pylibnn  # noqa: E402

# (name, sizes, activation, batch): the networks, then a wider one.
NETWORKS = [
    ("tutorial 1-3-3-2, none, batch 4", [1, 3, 3, 2], None, 4),
    ("2-32-32-1 tanh, batch 64", [2, 32, 32, 1], "tanh", 64),
    ("3-64-64-64-3 relu, batch 256", [3, 64, 64, 64, 3], "relu", 256),
    ("16-128-128-16 gelu, batch 1024", [16, 128, 128, 16], "gelu", 1024),
]
IMPLS = ["sequential", "compiled", "pylibnn"]
MODES = ["forward", "fwd+bwd", "step"]


def make_models(sizes, activation, device, impls):
    torch.manual_seed(0)
    mlp = pylibnn.MLP(sizes, activation=activation, device=device)
    sequential = mlp.to_sequential()  # same modules, same values
    models = {"sequential": (sequential, sequential), "pylibnn": (mlp, mlp)}
    if "compiled" in impls:
        compiled_source = mlp.to_sequential()
        models["compiled"] = (torch.compile(compiled_source), compiled_source)
    return {impl: models[impl] for impl in impls}


def callables(model, params_owner, x, target, grad, mode):
    if mode == "forward":
        def run():
            with torch.no_grad():
                model(x)
        return run
    if mode == "fwd+bwd":
        return lambda: model(x).backward(grad)
    optimizer = torch.optim.SGD(params_owner.parameters(), lr=1e-4)

    def step():
        optimizer.zero_grad()
        F.mse_loss(model(x), target).backward()
        optimizer.step()
    return step


def autograd_floor(device):
    w = torch.randn(3, device=device, requires_grad=True)
    g = torch.ones(3, device=device)
    return lambda: (w * 2).backward(g)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--quick", action="store_true", help="fewer repeats, shorter samples")
    p.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 11, quick 5)")
    p.add_argument("--no-compile", action="store_true",
                   help="leave out torch.compile (its first compile per network costs seconds to minutes)")
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args(argv)
    impls = [impl for impl in IMPLS if not (args.no_compile and impl == "compiled")]
    device = args.device
    repeats = args.repeats or (5 if args.quick else 11)
    min_sample_s = 0.02 if args.quick else 0.05
    timer = Timer(device)
    info = machine_info(device)
    for line in describe(info):
        print(line, flush=True)

    rows = []
    start = time.perf_counter()
    floor = bench_case({"floor": autograd_floor(device)}, timer, repeats, min_sample_s, 30)["floor"]["median_s"]
    print(f"autograd floor (one-node graph through Tensor.backward): {floor * 1e6:.1f} us", flush=True)
    for name, sizes, activation, batch in NETWORKS:
        models = make_models(sizes, activation, device, impls)
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(batch, sizes[0], generator=gen).to(device)
        target = torch.randn(batch, sizes[-1], generator=gen).to(device)
        grad = torch.ones(batch, sizes[-1], device=device)
        for mode in MODES:
            fns = {impl: callables(model, owner, x, target, grad, mode) for impl, (model, owner) in models.items()}
            stats = bench_case(fns, timer, repeats, min_sample_s, 60)
            base = stats["sequential"]["median_s"]
            compiled = stats["compiled"]["median_s"] if "compiled" in stats else float("nan")
            for impl in impls:
                s = stats[impl]
                rows.append({"network": name, "mode": mode, "impl": impl, "median_us": s["median_s"] * 1e6,
                             "min_us": s["min_s"] * 1e6, "max_us": s["max_s"] * 1e6, "samples": s["samples"],
                             "speedup_vs_sequential": base / s["median_s"],
                             "speedup_vs_compiled": compiled / s["median_s"], "error": s["error"]})
            line = "  ".join(f"{impl} {stats[impl]['median_s'] * 1e6:8.1f} us" for impl in impls)
            print(f"{name:34s} {mode:8s} {line}  pylibnn {base / stats['pylibnn']['median_s']:.2f}x sequential, "
                  f"{compiled / stats['pylibnn']['median_s']:.2f}x compiled", flush=True)
        for model, _ in models.values():
            model.zero_grad(set_to_none=True)
    elapsed = time.perf_counter() - start
    info["loadavg_end"] = " ".join(f"{v:.1f}" for v in __import__("os").getloadavg())

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"mlp_{device}" + ("_quick" if args.quick else "")
    with open(out / f"{stem}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"# pylibnn.MLP vs nn.Sequential ({device})", ""] + [f"- {part}" for part in describe(info)] + ["",
             f"Command: `python -m benchmarks.bench_mlp {' '.join(argv if argv is not None else sys.argv[1:])}`; "
             f"{repeats} interleaved repeats, medians; {elapsed:.0f} s.", "",
             f"Autograd floor (one-node graph, `(w * 2).backward(g)`): {floor * 1e6:.1f} us: no fwd+bwd through "
             "Tensor.backward costs less.", "",
             "| network | mode | sequential (us) | compiled (us) | pylibnn (us) | vs sequential | vs compiled |",
             "|---|---|---|---|---|---|---|"]
    by_key = {(r["network"], r["mode"], r["impl"]): r for r in rows}
    for name, *_ in NETWORKS:
        for mode in MODES:
            r = {impl: by_key.get((name, mode, impl), {"median_us": float("nan")}) for impl in IMPLS}
            lines.append(f"| {name} | {mode} | {r['sequential']['median_us']:.1f} | {r['compiled']['median_us']:.1f} | "
                         f"{r['pylibnn']['median_us']:.1f} | {r['pylibnn']['speedup_vs_sequential']:.2f}x | "
                         f"{r['pylibnn']['speedup_vs_compiled']:.2f}x |")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / stem}.md and .csv")


if __name__ == "__main__":
    main()
