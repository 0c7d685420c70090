"""pylibnn's CUDA GEMM kernels against cuBLAS (torch.nn.functional.linear) on one GPU.

    python benchmarks/bench_linear_cuda.py                 # every shape and precision (~5 min on an H200)
    python benchmarks/bench_linear_cuda.py --quick         # gpu_check.sh's subset (~1.5 min)
    python benchmarks/bench_linear_cuda.py --precision bf16 --shapes xfmr_4096 sq8192

Per shape x precision x mode: pylibnn and torch side by side in one process, repeats
interleaved (the starting implementation alternates), each sample a loop of calls timed with
CUDA events; the median per call gives TFLOP/s and the ratio pylibnn / torch.

Precisions: fp32 (exact: TF32 off for both, pylibnn's warptiled SIMT kernel vs cuBLAS SGEMM),
tf32 (torch.backends.cuda.matmul.allow_tf32 on for both: pylibnn's TF32 tensor-core kernel vs
cuBLAS TF32), bf16 and fp16 (tensor cores on both). Modes: forward (2 MNK flops) and fwd+bwd
(y = linear(x, w, b); y.backward(g) with x, w, b requiring grad: 6 MNK flops).

Each case is first checked against float64 F.linear on the GPU (the largest error relative to
the largest |x| |W|^T + |b| is reported); the timing never asserts anything.
Outputs in --out (default benchmarks/results/): linear_cuda_tc[_quick].csv and .md.
--kernel / --split-k (pylibnn.ops.set_cuda_gemm_kernel / set_cuda_split_k, csrc/cuda/gemm_select.h)
force a kernel / a split, e.g. --kernel simt_basic for the previous 64x64 tile.
"""

import argparse
import csv
import datetime
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent

# (label, M, K, N): x (M, K), weight (N, K), y (M, N). A transformer layer's shapes (d = 4096:
# the attention projections, the MLP's up projection at 8192 tokens, decoding with M = 1, 16,
# 64 tokens), then cubes.
SHAPES = [
    ("xfmr_4096", 4096, 4096, 4096),
    ("xfmr_up_8192", 8192, 4096, 16384),
    ("thin_M1", 1, 4096, 4096),
    ("thin_M16", 16, 4096, 4096),
    ("thin_M64", 64, 4096, 4096),
    ("sq1024", 1024, 1024, 1024),
    ("sq2048", 2048, 2048, 2048),
    ("sq4096", 4096, 4096, 4096),
    ("sq8192", 8192, 8192, 8192),
]
QUICK_SHAPES = ["xfmr_4096", "xfmr_up_8192", "thin_M16", "sq1024"]
PRECISIONS = {"fp32": (torch.float32, False), "tf32": (torch.float32, True), "bf16": (torch.bfloat16, False),
              "fp16": (torch.float16, False)}
MODES = {"forward": 2, "fwd+bwd": 6}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="gpu_check.sh's subset of shapes, fewer repeats")
    p.add_argument("--shapes", nargs="+", default=None, choices=[s[0] for s in SHAPES])
    p.add_argument("--precision", dest="precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS))
    p.add_argument("--mode", dest="modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 7, quick 3)")
    p.add_argument("--min-sample-ms", type=float, default=None, help="per sample (default 30, quick 15)")
    p.add_argument("--kernel", default="auto", choices=["auto", "simt_basic", "simt_warptile", "tensor_core"],
                   help="force pylibnn's GEMM kernel (16-bit types always take the tensor cores)")
    p.add_argument("--split-k", type=int, default=0, help="force split-K slices (0: the rule)")
    p.add_argument("--out", default=str(HERE / "results"))
    return p.parse_args(argv)


def make_call(impl, mode, x, w, b, g):
    import pylibnn

    f = pylibnn.linear if impl == "pylibnn" else F.linear
    if mode == "forward":
        def call():
            with torch.no_grad():
                return f(x, w, b)
    else:
        xl, wl, bl = (t.detach().requires_grad_() for t in (x, w, b))

        def call():
            xl.grad = wl.grad = bl.grad = None
            f(xl, wl, bl).backward(g)
    return call


def timed_loop(call, loops):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(loops):
        call()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def loops_for(call, min_sample_s):
    """How many calls make a sample last >= min_sample_s (the call warmed up first)."""
    loops = 1
    while True:
        seconds = timed_loop(call, loops)
        if seconds >= min_sample_s or loops >= 1 << 14:
            return loops
        loops = max(loops * 2, int(loops * min_sample_s / max(seconds, 1e-6)) + 1)


def relative_error(x, w, b):
    import pylibnn

    with torch.no_grad():
        y = pylibnn.linear(x, w, b).double()
        reference = F.linear(x.double(), w.double(), b.double())
        magnitude = F.linear(x.double().abs(), w.double().abs(), b.double().abs())
    return ((y - reference).abs().max() / magnitude.max().clamp_min(1e-30)).item()


def main(argv=None):
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_linear_cuda: no CUDA GPU visible", file=sys.stderr)
        return 2
    import pylibnn

    info = pylibnn.build_info()
    if not info.get("cuda"):
        print("bench_linear_cuda: this build of pylibnn has no CUDA kernels", file=sys.stderr)
        return 2
    pylibnn.ops.set_cuda_gemm_kernel(args.kernel)
    pylibnn.ops.set_cuda_split_k(args.split_k)
    shapes = [s for s in SHAPES if s[0] in (args.shapes or (QUICK_SHAPES if args.quick else [s[0] for s in SHAPES]))]
    repeats = args.repeats or (3 if args.quick else 7)
    min_sample_s = (args.min_sample_ms or (15.0 if args.quick else 30.0)) / 1e3
    props = torch.cuda.get_device_properties(0)
    machine = (f"{props.name}, {props.multi_processor_count} SMs, {props.total_memory / 2**30:.0f} GiB; "
               f"torch {torch.__version__}, CUDA {torch.version.cuda}")
    print(f"# {machine}", flush=True)
    saved_tf32 = torch.backends.cuda.matmul.allow_tf32
    rows = []
    try:
        for label, M, K, N in shapes:
            for precision in args.precisions:
                dtype, tf32 = PRECISIONS[precision]
                torch.backends.cuda.matmul.allow_tf32 = tf32
                generator = torch.Generator(device="cuda").manual_seed(M * 7 + K * 3 + N)
                x = torch.randn(M, K, device="cuda", dtype=dtype, generator=generator)
                w = torch.randn(N, K, device="cuda", dtype=dtype, generator=generator) / K**0.5
                b = torch.randn(N, device="cuda", dtype=dtype, generator=generator)
                g = torch.randn(M, N, device="cuda", dtype=dtype, generator=generator)
                error = relative_error(x, w, b)
                for mode in args.modes:
                    calls = {impl: make_call(impl, mode, x, w, b, g) for impl in ("pylibnn", "torch")}
                    for call in calls.values():  # warm-up (autotuning, caches, first launches)
                        call()
                    torch.cuda.synchronize()
                    loops = {impl: loops_for(call, min_sample_s) for impl, call in calls.items()}
                    samples = {impl: [] for impl in calls}
                    for r in range(repeats):
                        order = list(calls) if r % 2 == 0 else list(calls)[::-1]
                        for impl in order:
                            samples[impl].append(timed_loop(calls[impl], loops[impl]) / loops[impl])
                    flops = MODES[mode] * M * N * K
                    tflops = {impl: flops / statistics.median(s) / 1e12 for impl, s in samples.items()}
                    row = {"shape": label, "M": M, "K": K, "N": N, "precision": precision, "mode": mode,
                           "pylibnn_tflops": round(tflops["pylibnn"], 2), "torch_tflops": round(tflops["torch"], 2),
                           "ratio": round(tflops["pylibnn"] / tflops["torch"], 3), "max_rel_error": f"{error:.2e}"}
                    rows.append(row)
                    print(f"{label:14s} {precision:5s} {mode:8s} pylibnn {row['pylibnn_tflops']:8.2f}  "
                          f"torch {row['torch_tflops']:8.2f} TFLOP/s  ratio {row['ratio']:.3f}  err {error:.1e}",
                          flush=True)
                del x, w, b, g
                torch.cuda.empty_cache()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved_tf32

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.kernel == "auto" and args.split_k == 0 else f"_{args.kernel}_split{args.split_k}"
    stem = out / (("linear_cuda_tc_quick" if args.quick else "linear_cuda_tc") + suffix)
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(stem.with_suffix(".md"), "w") as f:
        f.write(f"# pylibnn CUDA GEMMs vs cuBLAS ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC})\n\n")
        f.write(f"{machine}. Medians of {repeats} interleaved repeats; TFLOP/s = flops / time "
                f"(forward 2MNK, fwd+bwd 6MNK). Kernel override: {args.kernel}, split-K override: {args.split_k}; "
                f"rule: {info['cuda_gemm']['rule']}.\n\n")
        f.write("| shape | M x K -> N | precision | mode | pylibnn TFLOP/s | cuBLAS TFLOP/s | ratio | max rel. error |\n")
        f.write("|---|---|---|---|---:|---:|---:|---:|\n")
        for r in rows:
            f.write(f"| {r['shape']} | {r['M']} x {r['K']} -> {r['N']} | {r['precision']} | {r['mode']} | "
                    f"{r['pylibnn_tflops']} | {r['torch_tflops']} | {r['ratio']} | {r['max_rel_error']} |\n")
    print(f"wrote {stem}.csv and {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
