"""The shared benchmark harness of pylibnn: the machine's description, its arithmetic
ceilings, the interleaved timer and the formatting of reports. bench_linear.py, bench_mlp.py
and sweep_profile.py are thin scripts over it; run them as modules from the repository root:

    python -m benchmarks.bench_linear [--quick]
    python -m benchmarks.bench_mlp [--quick]
    python -m benchmarks.sweep_profile [--quick]

Contract (shared/DESIGN.md, "Benchmark contract"): every implementation side by side in one
process; for each case the repeats are interleaved (round-robin over the implementations,
starting order rotated each repeat) and the median per-call time is reported. Each sample
loops the call enough times to last >= min_sample_s. Every report names the CPU (vendor,
family, model), pylibnn's micro-kernel set and tuning profile, and the load of the machine.

Ceilings: an FMA probe (fma_probe.c, compiled at run time with gcc: independent FMA chains in
registers on every core) gives the fp32 and fp64 peak; on CPUs with AVX512-BF16 it also
measures vdpbf16ps, and on CPUs with AMX tdpbf16ps. The bfloat16 ceiling of a report is the
one of the instruction pylibnn's bfloat16 kernel runs (AMX, vdpbf16ps, or float32 FMAs when it
widens).
Without a compiler, numpy's best measured GFLOP/s stands in (the report says which).
"""

import ctypes
import datetime
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

# numpy's OpenBLAS threads keep spinning for about 2^28 cycles (tens of ms) after each call,
# holding both cores while the OpenMP threads of torch and pylibnn run the next interleaved
# repeat: on a 2-core machine that halved whoever came after numpy. Let them sleep at once
# (OpenBLAS reads this when numpy loads it, so before the import).
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

try:
    import pylibnn
except Exception as exc:  # noqa: BLE001  (report, and still benchmark the peers)
    pylibnn = None
    PYLIBNN_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"
else:
    PYLIBNN_IMPORT_ERROR = None


def log(msg):
    print(msg, flush=True)


# ----------------------------------------------------------------------------- machine

def _cpuinfo_field(name):
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == name:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model():
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_flags():
    flags = _cpuinfo_field("flags")
    return set(flags.split()) if flags else set()


def usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cpu_identity():
    """'GenuineIntel family 6 model 207' from /proc/cpuinfo (pylibnn's CPUID agrees)."""
    vendor, family, model = _cpuinfo_field("vendor_id"), _cpuinfo_field("cpu family"), _cpuinfo_field("model")
    if family is None:
        return platform.machine()
    return f"{vendor} family {family} model {model}"


def pylibnn_profile():
    """pylibnn's CPU tuning profile (build_info()['cpu_profile']) or None."""
    if pylibnn is None:
        return None
    try:
        return dict(pylibnn.build_info().get("cpu_profile") or {}) or None
    except Exception:  # noqa: BLE001
        return None


def profile_summary(profile):
    if not profile:
        return "none reported"
    keys = ("kc", "mc", "nc", "single_block_rows", "a_in_place_max_panels", "bf16_block_bytes", "dot_max_rows",
            "dot_min_depth", "transposed_max_rows", "stream_max_depth", "gemv_max_rows", "small_max_madds", "write_once_min_bytes")
    params = ", ".join(f"{k} {profile[k]}" for k in keys if k in profile)
    return f"{profile.get('name')} ({profile.get('origin')}; {params}; {profile.get('measured')})"


# OpenBLAS's thread-count entry points, by build: numpy's wheels (scipy-openblas, 64-bit
# integers), scipy-openblas32, a plain OpenBLAS.
_OPENBLAS_SET_THREADS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                         "openblas_set_num_threads64_", "openblas_set_num_threads")
_OPENBLAS_GET_THREADS = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads",
                         "openblas_get_num_threads64_", "openblas_get_num_threads")


def _loaded_openblas():
    """numpy's OpenBLAS, as loaded in this process (found by its path in /proc/self/maps)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


def _openblas_entry(names):
    lib = _loaded_openblas()
    return next((getattr(lib, n) for n in names if hasattr(lib, n)), None) if lib is not None else None


def numpy_threads():
    """The thread count numpy's OpenBLAS runs on now; None where its entry point is not found."""
    getter = _openblas_entry(_OPENBLAS_GET_THREADS)
    return int(getter()) if getter is not None else None


def set_numpy_threads(threads):
    """Runs numpy's OpenBLAS on `threads` threads, so that numpy is measured on the cores torch
    and pylibnn get: a --threads 1 run otherwise compared them against numpy on all of them
    (2048^3 float32 on 2 cores: OpenBLAS 263-315 GFLOP/s, 144-153 on one). Returns the count
    OpenBLAS then reports, or None where its entry points were not found (numpy unpinned)."""
    setter = _openblas_entry(_OPENBLAS_SET_THREADS)
    if setter is None:
        return None
    setter(ctypes.c_int(int(threads)))
    return numpy_threads()


def machine_info(device):
    info = {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": cpu_model(),
        "cpu_id": cpu_identity(),
        "cores": usable_cores(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "device": device,
        "loadavg_start": " ".join(f"{v:.1f}" for v in os.getloadavg()),
    }
    if pylibnn is not None:
        try:
            root = Path(pylibnn.__file__).resolve().parent
            rev = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"],
                                 capture_output=True, text=True, timeout=10).stdout.strip()
            so = Path(pylibnn._C.__file__)
            built = datetime.datetime.fromtimestamp(so.stat().st_mtime).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
            info["pylibnn_build"] = f"git {rev or '?'}, _C built {built}"
        except Exception as exc:  # noqa: BLE001
            info["pylibnn_build"] = f"unknown ({exc})"
        try:
            bi = pylibnn.build_info()
            info["pylibnn_isa"] = bi["cpu_isa"]["selected"]
            info["pylibnn_bf16_kernel"] = pylibnn._C.cpu_bf16_kernel_in_use()
            info["pylibnn_cuda"] = bi["cuda"]
            info["pylibnn_cuda_arch"] = bi.get("cuda_arch_list", "")
        except Exception as exc:  # noqa: BLE001
            info["pylibnn_isa"] = f"build_info failed: {exc}"
        profile = pylibnn_profile()
        info["pylibnn_profile"] = profile.get("name", "?") if profile else "none"
        info["pylibnn_profile_summary"] = profile_summary(profile)
    else:
        info["pylibnn_isa"] = f"import failed: {PYLIBNN_IMPORT_ERROR}"
        info["pylibnn_profile"] = info["pylibnn_profile_summary"] = "n/a"
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
        info["tf32"] = torch.backends.cuda.matmul.allow_tf32
    else:
        try:
            blas = np.__config__.CONFIG["Build Dependencies"]["blas"]
            info["numpy_blas"] = f"{blas.get('name')} {blas.get('version')}"
        except Exception:  # noqa: BLE001
            info["numpy_blas"] = "unknown"
        info["numpy_threads"] = numpy_threads()
    return info


def describe(info):
    parts = [f"CPU: {info['cpu']} ({info['cpu_id']}; {info['cores']} cores, torch threads {info['torch_threads']})"]
    if info["device"] == "cuda":
        parts.append(f"GPU: {info['gpu']} (CUDA {info['cuda']}, TF32 matmul {info['tf32']}, "
                     f"pylibnn CUDA {info.get('pylibnn_cuda')} arch '{info.get('pylibnn_cuda_arch')}')")
    numpy_threads = ""
    if info["device"] != "cuda":
        n = info.get("numpy_threads")
        numpy_threads = (f", {n} thread{'s' if n != 1 else ''}" if n
                         else ", thread count unknown (OpenBLAS's entry points not found)")
    parts.append(f"torch {info['torch']}; numpy {info['numpy']}"
                 + (f" ({info['numpy_blas']}{numpy_threads})" if "numpy_blas" in info else ""))
    parts.append(f"pylibnn CPU ISA: {info['pylibnn_isa']}"
                 + (f", bfloat16 kernel {info['pylibnn_bf16_kernel']}" if info.get("pylibnn_bf16_kernel") else "")
                 + (f" ({info['pylibnn_build']})" if info.get("pylibnn_build") else ""))
    parts.append(f"pylibnn CPU profile: {info.get('pylibnn_profile_summary', 'n/a')}")
    load = f"load average (1/5/15 min) at start {info['loadavg_start']}"
    if "loadavg_end" in info:
        load += f", at end {info['loadavg_end']}"
    parts.append(f"date: {info['date']}; {load}")
    return parts


def shared_machine_caution(info):
    """A warning line when the machine was busy during the run, else None."""
    loads = [float(v) for k in ("loadavg_start", "loadavg_end") for v in info.get(k, "").split()[:1]]
    if info["device"] != "cpu" or not loads or max(loads) <= info["cores"] * 0.75:
        return None
    return (f"**caution: the machine was shared (1-min load average up to {max(loads):.1f} on {info['cores']} cores).** "
            "A multi-threaded call whose threads split the work statically then waits for a descheduled "
            "thread, up to one scheduler quantum per call: small and medium shapes can collapse by 10-1000x "
            "for either side. See gflops_best in the CSV, or the --threads 1 run.")


# ----------------------------------------------------------------------------- peak probes

def _probe_kinds(flags):
    """(dtype, probe argument) pairs this CPU can run."""
    kinds = [("float32", "0"), ("float64", "1")]
    if "avx512_bf16" in flags:
        kinds.append(("bfloat16_vdpbf16ps", "2"))
    if "avx512_bf16" in flags and "amx_bf16" in flags:
        kinds.append(("bfloat16_amx", "3"))
    return kinds


def _bf16_ceiling(peaks):
    """The bfloat16 ceiling: the instruction pylibnn's bfloat16 kernel runs."""
    try:
        kernel = pylibnn._C.cpu_bf16_kernel_in_use() if pylibnn is not None else "widened"
    except Exception:  # noqa: BLE001
        kernel = "widened"
    source = {"amx": "bfloat16_amx", "avx512bf16": "bfloat16_vdpbf16ps"}.get(kernel, "float32")
    return peaks.get(source, peaks.get("float32")), source


def fma_probe(seconds=0.15, trials=10, threads=None):
    """Returns ({'float32': gflops, 'float64': gflops[, 'bfloat16': gflops]}, description) from
    the C probe on `threads` threads (default: every usable core), or (None, reason) when it
    cannot be built or run."""
    cc = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if cc is None:
        return None, "no C compiler"
    flags = cpu_flags()
    if "avx512f" in flags:
        isa_flags = (["-mavx512f", "-mfma"] + (["-mavx512bf16"] if "avx512_bf16" in flags else [])
                     + (["-mamx-tile", "-mamx-bf16"] if {"avx512_bf16", "amx_bf16"} <= flags else []))
    elif "avx2" in flags and "fma" in flags:
        isa_flags = ["-mavx2", "-mfma"]
    else:
        return None, "no AVX2/AVX-512 FMA in /proc/cpuinfo flags"
    threads = threads or usable_cores()
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_PROC_BIND="spread")
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "fma_probe")
        cmd = [cc, "-O3", *isa_flags, "-fopenmp", str(HERE / "fma_probe.c"), "-o", exe]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            return None, f"compile failed: {' '.join(cmd)}: {res.stderr.strip()[:200]}"
        peaks = {}
        try:
            for dtype, kind in _probe_kinds(flags):
                # Calibrate the iteration count so one trial lasts about `seconds`.
                iters = 1_000_000
                out = subprocess.run([exe, str(iters), kind, "1"], capture_output=True, text=True,
                                     env=env, check=True, timeout=60).stdout.split()
                gflops, flops_per_iter = float(out[0]), float(out[3])
                iters = max(iters, int(seconds * gflops * 1e9 / flops_per_iter))
                out = subprocess.run([exe, str(iters), kind, str(trials)], capture_output=True,
                                     text=True, env=env, check=True, timeout=120).stdout.split()
                peaks[dtype] = float(out[0])
                nacc, vbits = int(out[4]), int(out[2])
        except (subprocess.SubprocessError, OSError, ValueError, IndexError) as exc:
            return None, f"probe run failed: {exc}"
    peaks["bfloat16"], bf16_source = _bf16_ceiling(peaks)
    extra = ", ".join(f"{k.split('_')[1]} {v:.0f}" for k, v in peaks.items() if k.startswith("bfloat16_"))
    extra = f" (this probe: {extra} GFLOP/s)" if extra else ""
    desc = (f"FMA probe: {os.path.basename(cc)} -O3 {' '.join(isa_flags)} -fopenmp, "
            f"{threads} threads x {nacc} independent {vbits}-bit chains (vfmadd; vdpbf16ps; AMX: 4 tiles of "
            f"tdpbf16ps), best of {trials}; bfloat16 ceiling from {bf16_source}, the instruction of pylibnn's "
            f"bfloat16 kernel{extra}")
    return peaks, desc


def numpy_peak(dtypes):
    peaks = {}
    for dt in dtypes:
        if dt == "bfloat16":
            continue
        best = 0.0
        for n in (1024, 2048):
            a = np.random.rand(n, n).astype(dt)
            b = np.random.rand(n, n).astype(dt)
            a @ b
            for _ in range(3):
                t = time.perf_counter()
                a @ b
                best = max(best, 2 * n ** 3 / (time.perf_counter() - t) / 1e9)
        peaks[dt] = best
    return peaks, "fallback: numpy's best a @ b GFLOP/s at 1024/2048 (no FMA probe)"


def cuda_peak(dtypes):
    peaks = {}
    for dt in dtypes:
        best = 0.0
        for n in (4096, 8192):
            a = torch.randn(n, n, device="cuda", dtype=getattr(torch, dt))
            b = torch.randn(n, n, device="cuda", dtype=getattr(torch, dt))
            for _ in range(2):
                torch.mm(a, b)
            torch.cuda.synchronize()
            for _ in range(3):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(3):
                    torch.mm(a, b)
                end.record()
                end.synchronize()
                best = max(best, 3 * 2 * n ** 3 / (start.elapsed_time(end) / 1e3) / 1e9)
            del a, b
        peaks[dt] = best
    torch.cuda.empty_cache()
    return peaks, "cuBLAS ceiling: best torch.mm GFLOP/s at 4096/8192 (TF32 off), not a datasheet peak"


def measure_ceilings(device, dtypes, no_probe=False, threads=None):
    if device == "cuda":
        return cuda_peak(dtypes)
    peaks, desc = (None, "skipped (--no-probe)") if no_probe else fma_probe(threads=threads)
    if peaks is None:
        reason = desc
        peaks, desc = numpy_peak(dtypes)
        desc += f" [{reason}]"
    return peaks, desc


# ----------------------------------------------------------------------------- timing

class Timer:
    def __init__(self, device):
        self.cuda = device == "cuda"

    def sample(self, fn, n):
        """Seconds for n back-to-back calls."""
        if self.cuda:
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(n):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        t = time.perf_counter()
        for _ in range(n):
            fn()
        return time.perf_counter() - t


def page_faults_per_call(fn, calls):
    """Minor page faults of the whole process per call, over `calls` calls after one more warm
    call (the packing memory, torch's allocator and the thread stacks are warm by then)."""
    fn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def bench_case(fns, timer, repeats, min_sample_s, max_case_s, faults=False):
    """Interleaved repeats over the implementations; returns {name: dict of stats}. With
    faults=True each implementation's stats also hold its page faults per call."""
    live = {k: f for k, f in fns.items() if callable(f)}  # a string in place of a callable says why not
    calls, errors = {}, {}
    # An implementation whose one call costs half of max_case_s or more is timed once, by its
    # calibration call, and not repeated: torch's bfloat16 fwd+bwd on a CPU without native
    # bfloat16 (AVX2 Zen 3) took 58 s per 2048^3 call, 10 minutes for one case at >= 8 calls.
    timed_once = {}  # name -> (seconds, page faults) of that call
    # Warm up and calibrate: loop count so one sample lasts >= min_sample_s.
    for name, fn in list(live.items()):
        try:
            fn()
            faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t1 = timer.sample(fn, 1)
            if t1 >= max_case_s / 2:
                timed_once[name] = (t1, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before)
                calls[name] = 1
                del live[name]
                log(f"  {name}: one call took {t1:.1f} s (>= max_case_s / 2): timed once, not repeated")
                continue
            if t1 < min_sample_s / 4:  # too short to trust one call: time a short loop
                n = max(1, int(min_sample_s / 4 / max(t1, 1e-9)))
                t1 = timer.sample(fn, n) / n
            calls[name] = max(1, math.ceil(min_sample_s / max(t1, 1e-9)))
            timer.sample(fn, calls[name])  # one full-length warm-up sample
        except Exception as exc:  # noqa: BLE001
            errors[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            del live[name]
    # Repeats stop early (keeping >= 3) once a case has cost max_case_s.
    samples = {name: [] for name in live}
    names = list(live)
    t_case = time.perf_counter()
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)] if names else []
        for name in order:
            samples[name].append(timer.sample(live[name], calls[name]) / calls[name])
        if r >= 2 and time.perf_counter() - t_case > max_case_s:
            break
    stats = {}
    for name in fns:
        if name in timed_once:
            seconds, faults_of_call = timed_once[name]
            stats[name] = {"median_s": seconds, "min_s": seconds, "max_s": seconds, "samples": 1,
                           "calls_per_sample": 1, "error": "",
                           "faults_per_call": float(faults_of_call) if faults and not timer.cuda else float("nan")}
        elif name in samples and samples[name]:
            s = sorted(samples[name])
            stats[name] = {"median_s": statistics.median(s), "min_s": s[0], "max_s": s[-1],
                           "samples": len(s), "calls_per_sample": calls[name], "error": "",
                           "faults_per_call": (page_faults_per_call(live[name], min(calls[name], 50))
                                               if faults and not timer.cuda else float("nan"))}
        else:
            stats[name] = {"median_s": float("nan"), "min_s": float("nan"), "max_s": float("nan"),
                           "samples": 0, "calls_per_sample": 0, "faults_per_call": float("nan"),
                           "error": errors.get(name, fns[name] if isinstance(fns.get(name), str) else
                                               "unavailable (pylibnn import failed)" if fns.get(name) is None
                                               else "no samples")}
    return stats


# ----------------------------------------------------------------------------- formatting

def gfmt(v):
    """GFLOP/s: one decimal from 10 up, three significant digits below (tutorial shapes)."""
    if v is None or v != v:
        return "n/a"
    return f"{v:.1f}" if abs(v) >= 10 else f"{v:.3g}"


def fmt(v, spec):
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def markdown_table(head, rows):
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def report_header(title, info, command, extra=()):
    """The opening lines of every report: title, machine, profile, command."""
    lines = [f"# {title}", ""] + [f"- {p}" for p in describe(info)]
    lines += [f"- {e}" for e in extra]
    lines.append(f"- command: `{command}`")
    caution = shared_machine_caution(info)
    if caution:
        lines.append(f"- {caution}")
    return lines + [""]
