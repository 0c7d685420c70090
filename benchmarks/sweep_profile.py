"""Sweeps the parameters of pylibnn's CPU tuning profile on the machine at hand.

    python -m benchmarks.sweep_profile                       # every group below
    python -m benchmarks.sweep_profile --groups kc dot_min_depth --threads 1
    python -m benchmarks.sweep_profile --param kc=256,384,512 --shape fwd:1024x1024x1024

For each group, each shape is timed with each value of the parameter, the values
interleaved in one process (harness.bench_case: round-robin repeats, medians), everything
else at the profile's values (build_info()['cpu_profile']). The report gives the median per
value, the best value and each value's time relative to the best; the profile table in
csrc/cpu/cpu_profile.cpp takes its numbers from these runs (its `measured` field says which
CPU).

Shapes: "fwd:MxKxN" (linear_forward) or "bwd:MxKxN" (forward + linear_backward, all three
gradients), layer sizes as x (M, K), W (N, K).
Writes benchmarks/results/sweep_<profile>.md (--out to change the folder).
"""

import argparse
import math
import sys
import time
from pathlib import Path

from benchmarks.harness import RESULTS, Timer, bench_case, describe, log, machine_info, markdown_table, pylibnn

import torch  # noqa: E402

# group -> (parameter, values, shapes). Values are tried in the order given.
GROUPS = {
    "kc": ("kc", [192, 256, 384, 512, 768], ["fwd:1024x1024x1024", "fwd:2048x2048x2048", "bwd:1024x1024x1024"]),
    "mc": ("mc", [48, 96, 144, 192, 288], ["fwd:1024x1024x1024", "fwd:2048x2048x2048", "bwd:1024x1024x1024"]),
    "nc": ("nc", [1024, 2048, 4096, 8192], ["fwd:2048x2048x2048", "fwd:4096x1024x4096"]),
    # one row block (B panels packed privately, or read in place) up to this many rows
    "single_block_rows": ("single_block_rows", [0, 128, 256, 512],
                          ["fwd:128x4096x4096", "fwd:192x1024x1024", "fwd:256x1024x1024", "bwd:1024x512x128",
                           "bwd:384x1024x1024"]),
    # grad_weight's A (grad_output^T) read in place for C up to this many panels wide
    "a_in_place_max_panels": ("a_in_place_max_panels", [0, 4, 8, 16],
                              ["bwd:1024x128x128", "bwd:1024x128x512", "bwd:1024x256x512", "bwd:1024x512x512"]),
    # dot path (operands read in place) against the blocked path for the forward of thin batches
    "dot_min_depth": ("dot_min_depth", [32, 64, 128, 256, 1 << 30],
                      ["fwd:64x64x64", "fwd:64x128x128", "fwd:128x128x128", "fwd:32x256x256", "fwd:64x512x512"]),
    "dot_max_rows": ("dot_max_rows", [0, 64, 128, 192, 256], ["fwd:64x4096x4096", "fwd:128x1024x1024",
                                                              "fwd:192x1024x1024", "fwd:256x1024x1024"]),
    # transposed path (C^T = W x^T, W's rows in place) for the forward of batches up to this
    # many rows (0: the dot / blocked paths)
    "transposed_max_rows": ("transposed_max_rows", [0, 64, 128, 256],
                            ["fwd:32x4096x4096", "fwd:64x4096x4096", "fwd:128x4096x4096", "fwd:256x1024x1024"]),
    # outer-product path for grad_weight of a batch of `depth` rows
    "stream_max_depth": ("stream_max_depth", [0, 4, 8, 16], ["bwd:1x1024x1024", "bwd:4x1024x1024",
                                                            "bwd:8x1024x1024", "bwd:16x1024x1024"]),
    # non-temporal stores of the outer product's C (grad_weight of a thin batch) from this size on
    "write_once_min_bytes": ("write_once_min_bytes", [1 << 20, 8 << 20, 32 << 20, 1 << 62],
                             ["bwd:1x1024x1024", "bwd:1x2048x2048", "bwd:1x4096x4096", "bwd:8x4096x4096"]),
    "gemv_max_rows": ("gemv_max_rows", [0, 1, 2, 4], ["bwd:1x4096x4096", "bwd:2x2048x2048", "bwd:4x2048x2048"]),
    # one thread region per call for small products
    "small_max_madds": ("small_max_madds", [0, 1 << 18, 1 << 21, 1 << 24],
                        ["fwd:64x64x64", "bwd:64x64x64", "fwd:128x128x128", "bwd:128x128x128", "bwd:1024x128x128"]),
}
QUICK_GROUPS = ["kc", "dot_min_depth", "stream_max_depth", "small_max_madds"]


def parse_shape(text):
    mode, sizes = text.split(":")
    M, K, N = (int(v) for v in sizes.lower().split("x"))
    if mode not in ("fwd", "bwd"):
        raise SystemExit(f"shape {text!r}: mode must be fwd or bwd")
    return mode, M, K, N


def make_call(mode, M, K, N, dtype):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(M, K, generator=gen, dtype=dtype)
    w = torch.randn(N, K, generator=gen, dtype=dtype) / math.sqrt(K)
    b = torch.randn(N, generator=gen, dtype=dtype)
    gy = torch.randn(M, N, generator=gen, dtype=dtype)
    ops = torch.ops.pylibnn
    if mode == "fwd":
        return lambda: ops.linear_forward(x, w, b)

    def fwd_bwd():
        ops.linear_forward(x, w, b)
        ops.linear_backward(gy, x, w, [True, True, True])
    return fwd_bwd


class ParameterSetter:
    """Sets the profile parameter only when the value changes (once per sample, not per call)."""

    def __init__(self, name):
        self.name, self.value = name, None

    def wrap(self, value, fn):
        def run():
            if self.value != value:
                pylibnn._C.set_cpu_profile_parameter(self.name, value)
                self.value = value
            fn()
        return run


def sweep(name, values, shapes, dtype, timer, args):
    results = []
    for shape in shapes:
        mode, M, K, N = parse_shape(shape)
        call = make_call(mode, M, K, N, dtype)
        setter = ParameterSetter(name)
        fns = {value: setter.wrap(value, call) for value in values}
        stats = bench_case(fns, timer, args.repeats, args.min_sample_ms / 1e3, args.max_case_s)
        medians = {v: stats[v]["median_s"] for v in values}
        fastest = {v: stats[v]["min_s"] for v in values}
        best = min(values, key=lambda v: medians[v])
        flops = (2 if mode == "fwd" else 6) * M * N * K
        results.append((shape, medians, fastest, best, flops))
        cells = "  ".join(f"{v}: {medians[v] * 1e3:.4g} ms" for v in values)
        log(f"{name:18s} {shape:22s} {cells}  best {best}")
        pylibnn._C.set_cpu_profile("auto")
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--groups", nargs="+", default=None, choices=list(GROUPS),
                   help="parameter groups to sweep (default: all; --quick: %s)" % " ".join(QUICK_GROUPS))
    p.add_argument("--param", default=None, help="one parameter and its values: NAME=V1,V2,...")
    p.add_argument("--shape", nargs="+", default=None, help="shapes for --param (fwd:MxKxN or bwd:MxKxN)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 7, quick 5)")
    p.add_argument("--min-sample-ms", type=float, default=20.0)
    p.add_argument("--max-case-s", type=float, default=20.0)
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--tag", default=None, help="file stem (default sweep_<profile>)")
    args = p.parse_args(argv)
    if pylibnn is None:
        raise SystemExit("pylibnn does not import; build it first (make build)")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.repeats = args.repeats or (5 if args.quick else 7)
    if args.param:
        name, _, values = args.param.partition("=")
        groups = {name: (name, [int(v) for v in values.split(",")], args.shape or ["fwd:1024x1024x1024"])}
    else:
        chosen = args.groups or (QUICK_GROUPS if args.quick else list(GROUPS))
        groups = {g: GROUPS[g] for g in chosen}
    dtype = getattr(torch, args.dtype)
    info = machine_info("cpu")
    for line in describe(info):
        log(line)
    timer = Timer("cpu")
    start = time.perf_counter()
    all_results = {}
    for group, (name, values, shapes) in groups.items():
        all_results[group] = (name, values, sweep(name, values, shapes, dtype, timer, args))
    info["loadavg_end"] = " ".join(f"{v:.1f}" for v in __import__("os").getloadavg())

    profile = info.get("pylibnn_profile", "unknown")
    lines = [f"# pylibnn CPU profile sweep ({profile})", ""] + [f"- {d}" for d in describe(info)]
    lines += [f"- dtype {args.dtype}; {args.repeats} interleaved repeats per case, medians; samples >= "
              f"{args.min_sample_ms:g} ms; total {time.perf_counter() - start:.0f} s",
              "- command: `python -m benchmarks.sweep_profile " + " ".join(sys.argv[1:] if argv is None else argv) + "`",
              "- each cell: median ms (median GFLOP/s; GFLOP/s of the fastest sample) and, in brackets, the median "
              "relative to the row's best value; on a shared machine the fastest sample is the less disturbed one", ""]
    for group, (name, values, results) in all_results.items():
        lines += [f"## {name}", ""]
        rows = []
        for shape, medians, fastest, best, flops in results:
            cells = [f"{medians[v] * 1e3:.4g} ({flops / medians[v] / 1e9:.1f}; best {flops / fastest[v] / 1e9:.1f}) "
                     f"[{medians[v] / medians[best]:.2f}]" for v in values]
            rows.append([shape] + cells + [str(best)])
        lines += markdown_table(["shape"] + [str(v) for v in values] + ["best"], rows) + [""]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = args.tag or f"sweep_{profile}"
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    log("\n".join(lines))
    log(f"wrote {out / (stem + '.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
