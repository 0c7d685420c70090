"""Benchmark pylibnn.linear against torch.nn.functional.linear (and numpy on the CPU).

    python -m benchmarks.bench_linear                    # full CPU suite (~15 min here)
    python -m benchmarks.bench_linear --quick            # subset, a few minutes
    python -m benchmarks.bench_linear --threads 1 --tag linear_cpu_1thread
    python -m benchmarks.bench_linear --device cuda --quick --out benchmarks/results/gpu

Run from the repository root (benchmarks/ is a package; the machine description, ceilings,
timer and report header come from benchmarks/harness.py).

Contract (shared/DESIGN.md, "Benchmark contract"): all implementations side by side in one
process; for every shape x mode x dtype the repeats are interleaved (round-robin over the
implementations, starting order rotated each repeat) and the median per-call time is
reported. Each sample loops the call enough times to last >= --min-sample-ms, so small ops
are timed over many calls; the per-call time is the sample divided by the loop count.

Modes:
    forward      y = f(x, w, b)                              2*M*N*K flops
    fwd+bwd      y = f(x, w, b); y.backward(g), x/w/b leaves  6*M*N*K flops
                 numpy: y = x @ w.T + b; dx = g @ w; dW = g.T @ x; db = g.sum(0)

dtypes: float32, float64, bfloat16 (numpy has no bfloat16: torch and pylibnn only).

Ceiling: the probe of harness.py (fma_probe.c: fp32/fp64 FMA chains, vdpbf16ps chains for
bfloat16 where the CPU has AVX512-BF16); numpy's best GFLOP/s without a compiler. On CUDA the
ceiling is the best torch.mm (cuBLAS) GFLOP/s at 4096/8192, labelled as such. Page faults per
call (the whole process's minor faults, getrusage) are reported for each implementation.

Outputs in --out (default benchmarks/results/): linear_<device>[_quick].csv, .md, .png.
A full (not --quick) run also appends the peak memory of one call at 4096x4096->4096 to the
.md; --memory-only measures just that, into memory_<device>.md.
"""

import argparse
import csv
import math
import os
import sys
import time
from pathlib import Path

from benchmarks.harness import (HERE, PYLIBNN_IMPORT_ERROR, Timer, bench_case, describe, fmt, gfmt, log,
                                machine_info, measure_ceilings, fma_probe, np, pylibnn, set_numpy_threads,
                                shared_machine_caution)

import torch  # noqa: E402  (after harness, which sets OpenBLAS's environment before numpy loads)
import torch.nn.functional as F  # noqa: E402

MODES = ("forward", "fwd+bwd")
FLOPS_PER_MNK = {"forward": 2, "fwd+bwd": 6}

# (label, family, M, K, N): x (M, K), weight (N, K), y (M, N)
ALL_SHAPES = [
    ("sq256", "square", 256, 256, 256),
    ("sq512", "square", 512, 512, 512),
    ("sq1024", "square", 1024, 1024, 1024),
    ("sq2048", "square", 2048, 2048, 2048),
    ("xfmr_4096x1024->4096", "transformer", 4096, 1024, 4096),
    ("xfmr_4096x4096->1024", "transformer", 4096, 4096, 1024),
    ("thin_M1", "thin", 1, 4096, 4096),
    ("thin_M8", "thin", 8, 4096, 4096),
    ("thin_M64", "thin", 64, 4096, 4096),
    ("tut_4x1->3", "tutorial", 4, 1, 3),
    ("tut_4x3->3", "tutorial", 4, 3, 3),
    ("tut_4x3->2", "tutorial", 4, 3, 2),
    ("mnk64", "small", 64, 64, 64),
    ("mnk128", "small", 128, 128, 128),
    # the layers of a small transformer language model (d_model 128, MLP 512, 1024 tokens)
    ("lm_1024x128->128", "lm", 1024, 128, 128),
    ("lm_1024x128->512", "lm", 1024, 128, 512),
    ("lm_1024x512->128", "lm", 1024, 512, 128),
]
QUICK_SHAPES = {"sq256", "sq512", "sq1024", "thin_M1", "thin_M64", "tut_4x3->3", "mnk64", "mnk128",
                "lm_1024x128->128", "lm_1024x128->512", "lm_1024x512->128"}
ELEMENT_BYTES = {"float32": 4, "float64": 8, "bfloat16": 2}


# ----------------------------------------------------------------------------- implementations

def make_callables(M, K, N, dtype, device, mode, impl_names):
    """Returns {name: fn} where fn() performs one call of `mode`, plus a correctness check."""
    tdt = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(M * 131 + K * 17 + N)
    scale = 1.0 / math.sqrt(max(K, 1))
    x = torch.randn(M, K, generator=gen, dtype=tdt).to(device)
    w = (torch.randn(N, K, generator=gen, dtype=tdt) * scale).to(device)
    b = torch.randn(N, generator=gen, dtype=tdt).to(device)
    g = torch.randn(M, N, generator=gen, dtype=tdt).to(device)

    fns = {}
    torch_fns = {"pylibnn": (pylibnn.linear if pylibnn is not None else None), "torch": F.linear}
    for name in impl_names:
        if name == "numpy" and dtype == "bfloat16":
            fns[name] = "numpy has no bfloat16"
            continue
        if name == "numpy":
            xn, wn, bn, gn = (t.cpu().numpy() for t in (x, w, b, g))
            if mode == "forward":
                def fn(xn=xn, wn=wn, bn=bn):
                    return xn @ wn.T + bn
            else:
                def fn(xn=xn, wn=wn, bn=bn, gn=gn):
                    y = xn @ wn.T + bn
                    return y, gn @ wn, gn.T @ xn, gn.sum(0)
            fns[name] = fn
            continue
        f = torch_fns[name]
        if f is None:
            fns[name] = None
            continue
        if mode == "forward":
            def fn(f=f):
                return f(x, w, b)
        else:
            xl, wl, bl = (t.detach().clone().requires_grad_(True) for t in (x, w, b))

            def fn(f=f, xl=xl, wl=wl, bl=bl):
                xl.grad = wl.grad = bl.grad = None
                y = f(xl, wl, bl)
                y.backward(g)
                return y, xl.grad, wl.grad, bl.grad
        fns[name] = fn
    return fns


def max_rel_err(out, ref):
    """Largest |out - ref| / max|ref| over the outputs of one call (forward or all grads)."""
    outs = out if isinstance(out, tuple) else (out,)
    refs = ref if isinstance(ref, tuple) else (ref,)
    worst = 0.0
    for o, r in zip(outs, refs):
        o = torch.as_tensor(np.asarray(o)) if isinstance(o, np.ndarray) else o.detach()
        r = torch.as_tensor(np.asarray(r)) if isinstance(r, np.ndarray) else r.detach()
        o, r = o.double().cpu(), r.double().cpu()
        denom = max(r.abs().max().item(), 1e-30) if r.numel() else 1.0
        if o.numel():
            worst = max(worst, (o - r).abs().max().item() / denom)
    return worst


# ----------------------------------------------------------------------------- reports

def write_csv(path, rows):
    fields = ["name", "shape", "mode", "dtype", "median_ms", "gflops", "frac_peak", "vs_torch",
              "vs_numpy", "M", "K", "N", "family", "device", "min_ms", "max_ms", "samples",
              "calls_per_sample", "gflops_best", "gbytes_s", "max_rel_err", "peak_gflops", "faults_per_call",
              "error", "cpu", "cpu_id", "cores", "threads", "torch", "pylibnn_isa", "pylibnn_profile", "date"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def write_table(path, rows, info, peaks, peak_desc, impls, args, elapsed):
    lines = [f"# pylibnn.linear benchmark ({info['device']}{', quick' if args.quick else ''})", ""]
    lines += [f"- {p}" for p in describe(info)]
    if "bfloat16" in args.dtypes:
        lines.append("- bfloat16: torch's F.linear runs oneDNN, which uses AMX tiles where the CPU has them "
                     "(avx512_core_amx); pylibnn runs the bfloat16 kernel named above (amx: tdpbf16ps tiles, "
                     "avx512bf16: vdpbf16ps, widened: float32 FMAs), and its %peak is against that instruction's "
                     "ceiling. On a VM the AMX unit is shared with the other hyperthread of the core: its "
                     "throughput moved between about 770 and 2800 GFLOP/s within minutes on the machine this was "
                     "written on, for torch and pylibnn alike")
    lines.append("- ceiling: " + ", ".join(f"{dt} {fmt(peaks.get(dt), '.1f')} GFLOP/s" for dt in args.dtypes)
                 + f" ({peak_desc})")
    lines.append(f"- OPENBLAS_THREAD_TIMEOUT={os.environ.get('OPENBLAS_THREAD_TIMEOUT')} (numpy's threads sleep "
                 "right after a call instead of spinning on the cores the next implementation needs)")
    lines.append(f"- timing: median of {args.repeats} interleaved repeats, each sample >= "
                 f"{args.min_sample_ms:g} ms (calls looped inside), after warm-up; total run {elapsed:.0f} s")
    lines.append("- the CSV also has gflops_best (fastest sample), gbytes_s (minimum traffic), "
                 "calls_per_sample, max_rel_err (vs torch F.linear, same dtype) and faults_per_call (minor page "
                 "faults of the whole process per call, getrusage)")
    lines.append("- GFLOP/s: forward 2MNK, fwd+bwd 6MNK per call; ratios are GFLOP/s ratios "
                 "(> 1: faster than the peer); %peak against the ceiling above")
    lines.append("- command: `" + " ".join(["python -m benchmarks.bench_linear"] + sys.argv[1:]) + "`")
    caution = shared_machine_caution(info)
    if caution:
        lines.append(f"- {caution}")
    lines.append("")
    by = {(r["name"], r["shape"], r["mode"], r["dtype"]): r for r in rows}
    shapes = []
    for r in rows:
        if (r["shape"], r["M"], r["K"], r["N"]) not in shapes:
            shapes.append((r["shape"], r["M"], r["K"], r["N"]))
    for dtype in args.dtypes:
        for mode in args.modes:
            lines.append(f"## {mode}, {dtype}")
            lines.append("")
            head = ["shape", "M×K→N"] + [f"{n} GFLOP/s" for n in impls]
            head += [f"{n} ms" for n in impls[:2]]
            if "pylibnn" in impls:
                head += ["pylibnn %peak", "pylibnn/torch"] + (["pylibnn/numpy"] if "numpy" in impls else [])
                head += ["pylibnn max rel err", "faults/call pylibnn", "faults/call torch"]
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|" + "|".join("---" for _ in head) + "|")
            for shape, M, K, N in shapes:
                cells = [shape, f"{M}×{K}→{N}"]
                cells += [gfmt(by.get((n, shape, mode, dtype), {}).get("gflops")) for n in impls]
                cells += [fmt(by.get((n, shape, mode, dtype), {}).get("median_ms"), ".4g") for n in impls[:2]]
                p = by.get(("pylibnn", shape, mode, dtype))
                if "pylibnn" in impls and p is not None:
                    cells += [fmt(100 * p["frac_peak"] if p["frac_peak"] == p["frac_peak"] else float("nan"), ".1f"),
                              fmt(p["vs_torch"], ".2f")]
                    if "numpy" in impls:
                        cells.append(fmt(p["vs_numpy"], ".2f"))
                    cells.append(fmt(p["max_rel_err"], ".1e"))
                    cells.append(fmt(p.get("faults_per_call"), ".1f"))
                    cells.append(fmt(by.get(("torch", shape, mode, dtype), {}).get("faults_per_call"), ".1f"))
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
    errs = [r for r in rows if r.get("error") and r["error"] != "numpy has no bfloat16"]
    if errs:
        lines.append("## errors")
        lines.append("")
        for r in errs:
            lines.append(f"- {r['name']} {r['shape']} {r['mode']} {r['dtype']}: {r['error']}")
        lines.append("")
    Path(path).write_text("\n".join(lines))
    return "\n".join(lines)


def write_plot(path, rows, info, peaks, peak_desc, impls, args):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:  # noqa: BLE001
        log(f"plot skipped: matplotlib unavailable ({exc})")
        return False
    panels = [(m, d) for d in args.dtypes for m in args.modes]
    ncols = len(args.modes)
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.2 * ncols, 4.4 * nrows), squeeze=False)
    colors = {"pylibnn": "tab:red", "torch": "tab:blue", "numpy": "tab:green"}
    markers = {"pylibnn": "o", "torch": "s", "numpy": "^"}
    for ax, (mode, dtype) in zip(axes.flat, panels):
        sq = [r for r in rows if r["family"] == "square" and r["mode"] == mode and r["dtype"] == dtype]
        sizes = sorted({r["M"] for r in sq})
        for name in impls:
            pts = [(r["M"], r["gflops"]) for r in sq if r["name"] == name and r["gflops"] == r["gflops"]]
            pts.sort()
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=markers.get(name, "x"),
                        color=colors.get(name), label=name, linewidth=2)
        peak = peaks.get(dtype)
        if peak:
            ax.axhline(peak, color="black", linestyle="--", linewidth=1.2,
                       label=f"{dtype} peak {peak:.0f} GFLOP/s")
        ax.set_xscale("log", base=2)
        if sizes:
            ax.set_xticks(sizes)
            ax.set_xticklabels([str(s) for s in sizes])
        top = max([peak or 0.0] + [r["gflops"] for r in sq if r["gflops"] == r["gflops"]])
        ax.set_ylim(bottom=0, top=top * 1.12 or None)
        ax.set_xlabel("square size M = K = N")
        ax.set_ylabel("GFLOP/s")
        ax.set_title(f"{mode}, {dtype}")
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    for ax in list(axes.flat)[1:len(panels)]:  # each panel's own peak label
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 3 * ncols), fontsize=9, frameon=False)
    import textwrap
    desc = describe(info)
    width = 105 * ncols
    text = [f"pylibnn.linear vs peers, {info['device']}{' (quick)' if args.quick else ''}"]
    text += textwrap.wrap("; ".join(desc), width)
    text += textwrap.wrap("ceiling: " + peak_desc, width)
    fig.suptitle("\n".join(text), fontsize=8)
    legend_rows = math.ceil(len(labels) / min(len(labels), 3 * ncols))
    fig.tight_layout(rect=(0, (0.15 + 0.25 * legend_rows) / (4.4 * nrows), 1, 1 - (len(text) * 8 * 1.4 / 72 + 0.1) / (4.4 * nrows)))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--quick", action="store_true", help="subset of shapes, fewer repeats (< ~2 min)")
    p.add_argument("--dtype", dest="dtypes", nargs="+", default=["float32", "float64", "bfloat16"],
                   choices=["float32", "float64", "bfloat16"])
    p.add_argument("--mode", dest="modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--shapes", nargs="+", default=None,
                   help="shape labels or families to run (default: all, or the quick subset)")
    p.add_argument("--impl", dest="impls", nargs="+", default=None,
                   help="implementations (default: pylibnn torch [numpy on cpu])")
    p.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 9, quick 5)")
    p.add_argument("--min-sample-ms", type=float, default=20.0)
    p.add_argument("--max-case-s", type=float, default=None,
                   help="stop repeating a case after this long (>= 3 repeats kept; default 25, quick 8)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads for pylibnn and torch (default: torch's, here the core count)")
    p.add_argument("--no-probe", action="store_true", help="skip the FMA probe (numpy fallback)")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--memory-only", action="store_true",
                   help="only measure the peak memory of one call at %s (also part of every full run)"
                        % "x".join(map(str, MEMORY_SHAPE)))
    p.add_argument("--replot", metavar="CSV", default=None,
                   help="only redraw the PNG (beside the CSV) from a CSV this script wrote")
    p.add_argument("--tag", default=None, help="file stem (default linear_<device>[_quick])")
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 5 if args.quick else 9
    if args.max_case_s is None:
        args.max_case_s = 8.0 if args.quick else 25.0
    return args


def replot(csv_path, args):
    """Redraws the PNG from a results CSV (machine fields and ceilings as recorded there)."""
    rows = list(csv.DictReader(open(csv_path)))
    if not rows:
        log(f"{csv_path}: no rows")
        return 1
    for r in rows:
        for k in ("gflops", "peak_gflops"):
            r[k] = float(r[k]) if r[k] not in ("", "nan") else float("nan")
        for k in ("M", "K", "N"):
            r[k] = int(r[k])
    first = rows[0]
    info = {"cpu": first["cpu"], "cores": first["cores"], "torch_threads": "?", "device": first["device"],
            "torch": first["torch"], "numpy": np.__version__, "pylibnn_isa": first["pylibnn_isa"],
            "date": first["date"], "loadavg_start": "? (redrawn from CSV)", "gpu": "?", "cuda": "?",
            "tf32": "?"}
    peaks = {r["dtype"]: r["peak_gflops"] for r in rows}
    impls = list(dict.fromkeys(r["name"] for r in rows))
    args.dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    args.modes = list(dict.fromkeys(r["mode"] for r in rows))
    args.quick = "_quick" in Path(csv_path).stem
    png = Path(csv_path).with_suffix(".png")
    write_plot(png, rows, info, peaks, "as recorded in the CSV (peak_gflops)", impls, args)
    log(f"wrote {png}")
    return 0


# Peak memory of one call for one large shape (DESIGN: a call allocates its outputs and the
# packing buffers, nothing the size of an operand). tracemalloc does not see C++ allocations:
# on the CPU the peak resident set (VmHWM, reset through /proc/self/clear_refs) above the
# resident set before the call; on CUDA torch.cuda.max_memory_allocated above the allocated
# memory before the call.
MEMORY_SHAPE = (4096, 4096, 4096)


def _cpu_rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_above_start(fn, device):
    import gc
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        result = fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - start, result
    with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current RSS
        f.write("5")
    start = _cpu_rss_bytes()
    result = fn()
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    return peak - start, result


def measure_peak_memory(device, dtype, impls, shape=MEMORY_SHAPE):
    """Returns markdown lines: per implementation and mode, the peak memory of one call above
    what was in use before it, and that peak less the bytes of the call's own results."""
    M, K, N = shape
    elem = ELEMENT_BYTES[dtype]
    result_bytes = {"forward": M * N * elem, "fwd+bwd": (M * N + M * K + N * K + N) * elem}
    lines = [f"## peak memory of one call, {M}×{K}→{N} {dtype}", "",
             "| implementation | mode | peak above start (MiB) | of which results (MiB) | extra (MiB) |",
             "| --- | --- | --- | --- | --- |"]
    names = [n for n in impls if n in ("pylibnn", "torch")]
    for mode in MODES:
        for name in names:
            try:
                # Warm up (thread pools, code paths) on one set of tensors, measure on a fresh
                # set: the warm-up's gradients, freed during the next call, would hide its peak.
                make_callables(M, K, N, dtype, device, mode, [name])[name]()
                fn = make_callables(M, K, N, dtype, device, mode, [name])[name]
                if fn is None:
                    continue
                peak, result = _peak_above_start(fn, device)
            except (RuntimeError, OSError) as exc:
                lines.append(f"| {name} | {mode} | unavailable ({exc}) | | |")
                continue
            del result, fn
            mib = 2**20
            lines.append(f"| {name} | {mode} | {peak / mib:.1f} | {result_bytes[mode] / mib:.1f} | "
                         f"{(peak - result_bytes[mode]) / mib:.1f} |")
    lines += ["", "On the CPU the figure is resident memory, so it also counts pages first touched during "
              "the call (thread stacks, allocator arenas); `extra` is what a call needs beyond its results.", ""]
    return lines


def main(argv=None):
    args = parse_args(argv)
    if args.replot:
        return replot(args.replot, args)
    t_start = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    set_numpy_threads(torch.get_num_threads())  # numpy measured on the cores torch gets
    if args.device == "cuda" and not torch.cuda.is_available():
        log("--device cuda: no CUDA GPU visible to torch")
        return 2
    impls = args.impls or (["pylibnn", "torch", "numpy"] if args.device == "cpu" else ["pylibnn", "torch"])
    if args.device == "cuda" and "numpy" in impls:
        impls.remove("numpy")
    if pylibnn is None:
        log(f"WARNING: import pylibnn failed ({PYLIBNN_IMPORT_ERROR}); benchmarking the peers only")
    info = machine_info(args.device)
    if args.device == "cuda" and pylibnn is not None and not info.get("pylibnn_cuda"):
        log("WARNING: this pylibnn build has no CUDA kernels; its rows will carry the error")

    if args.shapes:
        wanted = set(args.shapes)
        shapes = [s for s in ALL_SHAPES if s[0] in wanted or s[1] in wanted]
    elif args.quick:
        shapes = [s for s in ALL_SHAPES if s[0] in QUICK_SHAPES]
    else:
        shapes = list(ALL_SHAPES)

    for line in describe(info):
        log(line)
    if args.memory_only:
        lines = [f"# pylibnn.linear: peak memory of one call ({info['device']})", ""]
        lines += [f"- {p}" for p in describe(info)]
        lines += ["- command: `" + " ".join(["python benchmarks/bench_linear.py"] + sys.argv[1:]) + "`", ""]
        for dtype in args.dtypes:
            lines += measure_peak_memory(args.device, dtype, impls)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"memory_{args.device}.md").write_text("\n".join(lines))
        for line in lines:
            log(line)
        log(f"wrote {out / f'memory_{args.device}.md'}")
        return 0

    log("measuring the ceiling ...")
    peaks, peak_desc = measure_ceilings(args.device, args.dtypes, args.no_probe, threads=torch.get_num_threads())
    log("ceiling: " + ", ".join(f"{dt} {peaks.get(dt, float('nan')):.1f} GFLOP/s" for dt in args.dtypes)
        + f" -- {peak_desc}")

    timer = Timer(args.device)
    rows = []
    for dtype in args.dtypes:
        for label, family, M, K, N in shapes:
            for mode in args.modes:
                try:
                    fns = make_callables(M, K, N, dtype, args.device, mode, impls)
                except RuntimeError as exc:  # e.g. out of memory
                    log(f"skip {label} {mode} {dtype}: {exc}")
                    continue
                # Correctness (a benchmark of a wrong answer is worthless): against torch.
                errs = {}
                ref = None
                try:
                    ref = fns["torch"]() if fns.get("torch") else None
                    ref = tuple(t.detach().clone() for t in ref) if isinstance(ref, tuple) else (
                        ref.detach().clone() if ref is not None else None)
                except Exception:  # noqa: BLE001
                    ref = None
                for name, fn in fns.items():
                    if not callable(fn) or ref is None:
                        errs[name] = float("nan")
                        continue
                    try:
                        errs[name] = max_rel_err(fn(), ref)
                    except Exception:  # noqa: BLE001
                        errs[name] = float("nan")
                stats = bench_case(fns, timer, args.repeats, args.min_sample_ms / 1e3, args.max_case_s,
                                   faults=args.device == "cpu")
                flops = FLOPS_PER_MNK[mode] * M * N * K
                elem = ELEMENT_BYTES[dtype]
                # Minimum traffic: read x, w, b, write y (forward); + read g, write dx, dW, db.
                nbytes = elem * (M * K + N * K + N + M * N)
                if mode == "fwd+bwd":
                    nbytes += elem * (M * N + M * K + N * K + N)
                gfl = {n: flops / s["median_s"] / 1e9 if s["median_s"] == s["median_s"] and s["median_s"] > 0
                       else float("nan") for n, s in stats.items()}
                peak = peaks.get(dtype, float("nan"))
                for name in impls:
                    s = stats[name]
                    g = gfl[name]
                    rows.append({
                        "name": name, "shape": label, "mode": mode, "dtype": dtype,
                        "median_ms": s["median_s"] * 1e3, "gflops": g,
                        "frac_peak": g / peak if peak == peak and peak else float("nan"),
                        "vs_torch": g / gfl["torch"] if "torch" in gfl else float("nan"),
                        "vs_numpy": g / gfl["numpy"] if "numpy" in gfl else float("nan"),
                        "M": M, "K": K, "N": N, "family": family, "device": args.device,
                        "min_ms": s["min_s"] * 1e3, "max_ms": s["max_s"] * 1e3,
                        "samples": s["samples"], "calls_per_sample": s["calls_per_sample"],
                        "gflops_best": flops / s["min_s"] / 1e9 if s["min_s"] == s["min_s"] and s["min_s"] > 0 else float("nan"),
                        "gbytes_s": nbytes / s["median_s"] / 1e9 if s["median_s"] == s["median_s"] else float("nan"),
                        "max_rel_err": errs.get(name, float("nan")), "peak_gflops": peak,
                        "faults_per_call": s["faults_per_call"], "cpu_id": info["cpu_id"],
                        "threads": torch.get_num_threads(), "pylibnn_profile": info["pylibnn_profile"],
                        "error": s["error"], "cpu": info["cpu"], "cores": info["cores"],
                        "torch": info["torch"], "pylibnn_isa": info["pylibnn_isa"], "date": info["date"],
                    })
                summary = "  ".join(f"{n} {gfmt(gfl[n])}" for n in impls)
                ratio = ""
                if "pylibnn" in gfl and "torch" in gfl:
                    ratio = f"  pylibnn/torch {fmt(gfl['pylibnn'] / gfl['torch'], '.2f')}"
                log(f"{dtype:8s} {mode:8s} {label:22s} GFLOP/s: {summary}{ratio}"
                    f"  [{time.perf_counter() - t_start:.0f} s]")
                for name in impls:
                    if stats[name]["error"] and stats[name]["error"] != "numpy has no bfloat16":
                        log(f"    {name}: {stats[name]['error']}")
                del fns
                if args.device == "cuda":
                    torch.cuda.empty_cache()

    if args.device == "cpu" and not args.no_probe and "FMA probe" in peak_desc:
        # Probe again after the run (the machine may be shared); the ceiling is the best seen.
        again, _ = fma_probe(threads=torch.get_num_threads())
        if again:
            log("ceiling re-probed at the end: " + ", ".join(f"{k} {v:.1f}" for k, v in again.items()))
            for k, v in again.items():
                if v > peaks.get(k, 0.0):
                    peaks[k] = v
            for r in rows:
                p = peaks.get(r["dtype"], float("nan"))
                r["peak_gflops"] = p
                r["frac_peak"] = r["gflops"] / p if p == p and p else float("nan")
            peak_desc += ", best of the probes before and after the run"
    info["loadavg_end"] = " ".join(f"{v:.1f}" for v in os.getloadavg())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = args.tag or f"linear_{args.device}{'_quick' if args.quick else ''}"
    elapsed = time.perf_counter() - t_start
    write_csv(out / f"{stem}.csv", rows)
    table = write_table(out / f"{stem}.md", rows, info, peaks, peak_desc, impls, args, elapsed)
    if not args.quick:
        memory = measure_peak_memory(args.device, args.dtypes[0], impls)
        with open(out / f"{stem}.md", "a") as f:
            f.write("\n" + "\n".join(memory))
        table += "\n" + "\n".join(memory)
    plotted = write_plot(out / f"{stem}.png", rows, info, peaks, peak_desc, impls, args)
    log("")
    log(table)
    log(f"wrote {out / (stem + '.csv')}, {out / (stem + '.md')}"
        + (f", {out / (stem + '.png')}" if plotted else "") + f" in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
