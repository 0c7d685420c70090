#!/usr/bin/env bash
# GPU check for pylibnn on a bare GPU machine (torch installed, no network, e.g. one H200).
#
#   scripts/gpu_check.sh [OUT_DIR]          (default OUT_DIR: benchmarks/results/gpu)
#
# Steps (each under `timeout`, all within a ~8 minute budget; a step never stops the script):
#   env     GPU, torch, nvcc and ninja as found
#   layouts the emulated PTX twins (mma.sync, ldmatrix, cp.async) against the GPU's instructions
#           (tests/emulated_kernels/ptx_golden.cu, built by nvcc and by the host compiler)
#   build   TORCH_CUDA_ARCH_LIST=9.0 PYLIBNN_CUDA=1 python setup.py build_ext --inplace
#           (fallback: pip install --no-build-isolation --no-deps --no-index -e .)
#   import  pylibnn.build_info(): CUDA kernels compiled in and a GPU visible
#   tests   python -m pytest -q tests -k cuda -m "not emulated_cuda and not slow"
#   tutor   python -m pylibnn --device cuda (tutorial network, pylibnn vs reference)
#   bench-tc python benchmarks/bench_linear_cuda.py --quick --out OUT_DIR (pylibnn's GEMM kernels vs
#           cuBLAS: fp32, TF32, bf16, fp16 at transformer shapes, TFLOP/s and ratios)
#   bench   python -m benchmarks.bench_linear --device cuda --quick --out OUT_DIR
#   mlp     python -m benchmarks.bench_mlp --device cuda --quick --no-compile --out OUT_DIR
#   cs-*    compute-sanitizer memcheck and racecheck over a subset of the CUDA tests, with the
#           budget left (a timeout or a missing tool is a WARN, a sanitizer report a FAIL)
# Writes OUT_DIR/gpu_check.log (everything) and prints a summary table LAST.
#
# Environment: PYTHON (default: python, else python3), GPU_CHECK_BUDGET_S (default 480),
# TORCH_CUDA_ARCH_LIST (default 9.0), MAX_JOBS (default: nproc), GPU_CHECK_SKIP_BUILD=1 (use the
# build already in place), GPU_CHECK_NO_SANITIZER=1 (skip compute-sanitizer), GPU_CHECK_NO_PIP=1 (no pip fallback: it re-points an editable install).
set -u

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 2
OUT_DIR="${1:-benchmarks/results/gpu}"
mkdir -p "$OUT_DIR" || exit 2
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
LOG="$OUT_DIR/gpu_check.log"
: > "$LOG"
BUDGET_S="${GPU_CHECK_BUDGET_S:-480}"
T0=$(date +%s)

if [ -n "${PYTHON:-}" ]; then :
elif command -v python >/dev/null 2>&1; then PYTHON=python
else PYTHON=python3; fi

export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export MAX_JOBS="${MAX_JOBS:-$(nproc 2>/dev/null || echo 4)}"
export PYTHONUNBUFFERED=1

STEPS=()     # "name|status|rc|seconds|note"
log() { echo "$*" | tee -a "$LOG"; }
elapsed() { echo $(( $(date +%s) - T0 )); }
remaining() { echo $(( BUDGET_S - $(elapsed) )); }

# run_step NAME WANT_S CMD...: runs CMD under timeout min(WANT_S, time left); sets STEP_RC.
run_step() {
  local name="$1" want="$2"; shift 2
  local left; left=$(remaining)
  local limit=$(( want < left ? want : left ))
  if [ "$limit" -lt 10 ]; then
    log "=== [$name] skipped: budget spent ($(elapsed) s of $BUDGET_S s)"
    STEP_RC=124; STEP_SECS=0; STEP_SKIPPED=1; STEP_OUT=/dev/null
    return 0
  fi
  STEP_SKIPPED=0
  log "=== [$name] (timeout ${limit}s) $*"
  local s; s=$(date +%s)
  STEP_OUT="$OUT_DIR/.step_$name.out"
  : > "$STEP_OUT"
  timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$LOG" "$STEP_OUT"
  STEP_RC=${PIPESTATUS[0]}
  STEP_SECS=$(( $(date +%s) - s ))
  log "=== [$name] rc=$STEP_RC in ${STEP_SECS}s"
}

first_line() {  # first line of the latest step's output matching $1
  grep -E "$1" "$STEP_OUT" 2>/dev/null | head -1 | cut -c1-160
}

last_line() {  # last non-empty line of the latest step's output matching $1 (default: any)
  grep -E "${1:-.}" "$STEP_OUT" 2>/dev/null | grep -v '^[[:space:]]*$' | tail -1 | cut -c1-160
}

record() {  # record NAME STATUS NOTE
  STEPS+=("$1|$2|${STEP_RC:-}|${STEP_SECS:-0}|$3")
}

status_of() {  # status_of RC -> PASS/TIMEOUT/FAIL (SKIP when the budget ran out first)
  if [ "${STEP_SKIPPED:-0}" = 1 ]; then echo SKIP; return; fi
  case "$1" in
    0) echo PASS ;;
    124|137) echo TIMEOUT ;;
    *) echo FAIL ;;
  esac
}

# ---------------------------------------------------------------- env
log "pylibnn gpu_check: repo $REPO, out $OUT_DIR, python $PYTHON, budget ${BUDGET_S}s, $(date -u '+%Y-%m-%d %H:%M UTC')"
run_step env 60 bash -c '
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>&1 || echo "nvidia-smi: not available"
  '"$PYTHON"' -c "import sys, torch; print(\"python\", sys.version.split()[0]); print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"available\", torch.cuda.is_available(), \"devices\", torch.cuda.device_count()); print(\"gpu\", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"
'
ENV_RC=$STEP_RC
TORCH_OK=$("$PYTHON" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
record env "$( [ "$ENV_RC" = 0 ] && [ "$TORCH_OK" = 1 ] && echo PASS || echo FAIL)" \
  "torch.cuda.is_available()=$TORCH_OK"

# nvcc: PATH first, then the usual toolkit roots; setup.py wants one root holding bin/nvcc,
# include/cuda_runtime.h and libcudart (it resolves a wrapper nvcc itself).
NVCC="$(command -v nvcc 2>/dev/null || true)"
if [ -z "$NVCC" ]; then
  for c in "${CUDA_HOME:-}" /usr/local/cuda /usr/local/cuda-*; do
    if [ -n "$c" ] && [ -x "$c/bin/nvcc" ]; then NVCC="$c/bin/nvcc"; break; fi
  done
  if [ -n "$NVCC" ]; then
    export PATH="$(dirname "$NVCC"):$PATH"
    log "nvcc not on PATH; using $NVCC"
  fi
fi
if [ -n "$NVCC" ]; then
  log "nvcc: $NVCC ($("$NVCC" --version 2>/dev/null | grep -o 'release [0-9.]*' || echo '?'))"
  NVCC_NOTE="nvcc $NVCC"
else
  log "nvcc: NOT FOUND (PATH, \$CUDA_HOME, /usr/local/cuda*): the CUDA kernels cannot be built"
  NVCC_NOTE="no nvcc found"
fi
# torch.utils.cpp_extension decides with `ninja --version` (on PATH), not `import ninja`.
if ninja --version >/dev/null 2>&1; then
  NINJA_NOTE="ninja $(ninja --version)"
else
  NINJA_NOTE="no ninja: torch falls back to serial setuptools compiles (slower; MAX_JOBS ignored)"
fi
"$PYTHON" -c "import ninja" >/dev/null 2>&1 && NINJA_NOTE="$NINJA_NOTE; python ninja module present"
log "ninja: $NINJA_NOTE"

# ---------------------------------------------------------------- layouts
# First the emulator's reading of the PTX ISA against the GPU: tests/emulated_kernels/
# ptx_golden.cu built by nvcc and by the host compiler (against the emulator) runs the same
# mma.sync / ldmatrix / cp.async checks on both; every check must pass on both and their raw
# outputs must agree byte for byte. A DIFFER means the emulated layout is wrong: fix the
# emulator (csrc/cuda/emulation/emulator.cpp) and the kernels together.
LAYOUT_DIR="$OUT_DIR/.layouts"
mkdir -p "$LAYOUT_DIR"
CUDA_INCLUDE=""
for d in "$(dirname "${NVCC:-/nonexistent/nvcc}")/../include" "${CUDA_HOME:-/nonexistent}/include" /usr/local/cuda/include; do
  if [ -f "$d/crt/host_defines.h" ]; then CUDA_INCLUDE="$(cd "$d" && pwd)"; break; fi
done
LAYOUT_ARCH="$(echo "${TORCH_CUDA_ARCH_LIST%%;*}" | tr -d '.' | sed 's/+PTX//')"
if [ -z "$NVCC" ] || [ -z "$CUDA_INCLUDE" ]; then
  STEP_RC=""; STEP_SECS=0
  record layouts WARN "not run: $( [ -z "$NVCC" ] && echo 'no nvcc' || echo 'no CUDA include dir with crt/host_defines.h')"
else
  run_step layouts 120 bash -c "set -e
    '$NVCC' -std=c++17 -O1 -arch=sm_$LAYOUT_ARCH -Icsrc -Itests/emulated_kernels tests/emulated_kernels/ptx_golden.cu \
      -o '$LAYOUT_DIR/golden_gpu'
    ${CXX:-c++} -x c++ -std=c++17 -O1 -Wno-unknown-pragmas -Icsrc -Itests/emulated_kernels -I'$CUDA_INCLUDE' \
      tests/emulated_kernels/ptx_golden.cu -x none csrc/cuda/emulation/emulator.cpp -lpthread -o '$LAYOUT_DIR/golden_emulated'
    '$LAYOUT_DIR/golden_gpu' '$LAYOUT_DIR/gpu.bin'
    '$LAYOUT_DIR/golden_emulated' '$LAYOUT_DIR/emulated.bin' --compare '$LAYOUT_DIR/gpu.bin'"
  case "$STEP_RC" in
    0) record layouts PASS "mma.sync, ldmatrix, cp.async: emulated = GPU ($(grep -c '^MATCH' "$STEP_OUT") checks match)" ;;
    *) record layouts "$(status_of "$STEP_RC")" "emulated vs GPU: $(first_line '^(FAIL|DIFFER)|error' || true)" ;;
  esac
fi

# ---------------------------------------------------------------- build
BUILD_OK=0
if [ "${GPU_CHECK_SKIP_BUILD:-0}" = 1 ]; then
  STEP_RC=""; STEP_SECS=0
  record build SKIP "GPU_CHECK_SKIP_BUILD=1: using the build in place"
  BUILD_OK=1
else
run_step build 300 env PYLIBNN_CUDA=1 "$PYTHON" setup.py build_ext --inplace
fi
if [ "$BUILD_OK" = 1 ]; then :
elif [ "$STEP_RC" = 0 ]; then
  BUILD_OK=1
  record build PASS "setup.py build_ext --inplace, arch $TORCH_CUDA_ARCH_LIST; $NVCC_NOTE; $NINJA_NOTE"
else
  record build "$(status_of "$STEP_RC")" "setup.py build_ext --inplace: $(first_line 'error:|Error' || true); $NVCC_NOTE; $NINJA_NOTE"
  if [ "${GPU_CHECK_NO_PIP:-0}" = 1 ]; then
    log "pip fallback skipped (GPU_CHECK_NO_PIP=1)"
  else
  run_step build-pip 240 env PYLIBNN_CUDA=1 "$PYTHON" -m pip install --no-build-isolation --no-deps --no-index -v -e .
  if [ "$STEP_RC" = 0 ]; then BUILD_OK=1; fi
  record build-pip "$(status_of "$STEP_RC")" "pip install --no-build-isolation -e . (fallback)"
  fi
fi

# ---------------------------------------------------------------- import
run_step import 60 "$PYTHON" -c "
import sys, pylibnn
info = pylibnn.build_info()
print(info)
sys.exit(0 if info['cuda'] and info['cuda_available'] else 3)
"
IMPORT_RC=$STEP_RC
case "$IMPORT_RC" in
  0) record import PASS "build_info: cuda compiled in, GPU visible" ;;
  3) record import FAIL "pylibnn imports but build_info says no CUDA kernels or no GPU" ;;
  *) record import "$(status_of "$IMPORT_RC")" "import pylibnn failed: $(last_line)" ;;
esac

# ---------------------------------------------------------------- tests
# Leave ~300 s for the tutorial run and the benchmarks after the tests.
TESTS_S=$(( $(remaining) - 300 )); [ "$TESTS_S" -gt 240 ] && TESTS_S=240
# (The emulated_cuda variants run on the CPU in CI; here only the real GPU's.)
run_step tests "$TESTS_S" "$PYTHON" -m pytest -q -rfE tests -k cuda -m "not emulated_cuda and not slow" -p no:cacheprovider
case "$STEP_RC" in
  0) record tests PASS "pytest -k cuda: $(last_line 'passed|skipped')" ;;
  5) record tests WARN "pytest -k cuda collected no tests: $(last_line)" ;;
  *) record tests "$(status_of "$STEP_RC")" "pytest -k cuda: $(last_line 'passed|failed|error|ERROR')" ;;
esac

# ---------------------------------------------------------------- tutorial network
run_step tutorial 45 "$PYTHON" -m pylibnn --device cuda
record tutorial "$(status_of "$STEP_RC")" "python -m pylibnn --device cuda: $(last_line)"

# ---------------------------------------------------------------- benchmark
run_step bench-tc 120 "$PYTHON" benchmarks/bench_linear_cuda.py --quick --out "$OUT_DIR"
if [ "$STEP_RC" = 0 ]; then
  record bench-tc PASS "bench_linear_cuda.py --quick -> $OUT_DIR/linear_cuda_tc_quick.{csv,md}"
else
  record bench-tc "$(status_of "$STEP_RC")" "bench_linear_cuda.py --quick: $(last_line)"
fi
run_step bench 90 "$PYTHON" -m benchmarks.bench_linear --device cuda --quick --out "$OUT_DIR"
BENCH_RC=$STEP_RC
if [ "$BENCH_RC" = 0 ]; then
  record bench PASS "bench_linear.py --device cuda --quick -> $OUT_DIR/linear_cuda_quick.{csv,md,png}"
else
  record bench "$(status_of "$BENCH_RC")" "bench_linear.py --device cuda --quick: $(last_line)"
fi
run_step mlp 60 "$PYTHON" -m benchmarks.bench_mlp --device cuda --quick --no-compile --out "$OUT_DIR"
if [ "$STEP_RC" = 0 ]; then
  record mlp PASS "bench_mlp.py --device cuda --quick -> $OUT_DIR/mlp_cuda_quick.{csv,md}"
else
  record mlp "$(status_of "$STEP_RC")" "bench_mlp.py --device cuda --quick: $(last_line)"
fi

# ---------------------------------------------------------------- compute-sanitizer
# The CUDA tests of the ops (the op database's samples, every backward mask, non-finite
# values) under memcheck (out-of-bounds and misaligned accesses) and racecheck (shared-memory
# hazards), with whatever budget is left after the benchmark. A timeout is a warning, not a
# failure (the tool slows torch's start-up by minutes on some drivers); a report fails.
CS="$(command -v compute-sanitizer 2>/dev/null || true)"
if [ -z "$CS" ]; then
  for c in "${CUDA_HOME:-}" "$(dirname "$(dirname "${NVCC:-/none/bin/nvcc}")")" /usr/local/cuda; do
    if [ -n "$c" ] && [ -x "$c/bin/compute-sanitizer" ]; then CS="$c/bin/compute-sanitizer"; break; fi
  done
fi
if [ "${GPU_CHECK_NO_SANITIZER:-0}" = 1 ]; then
  STEP_RC=""; STEP_SECS=0; record sanitizer SKIP-OK "GPU_CHECK_NO_SANITIZER=1"
elif [ -z "$CS" ] || [ "$BUILD_OK" != 1 ]; then
  STEP_RC=""; STEP_SECS=0
  record sanitizer WARN "compute-sanitizer not run ($( [ -z "$CS" ] && echo 'tool not found' || echo 'no build'))"
else
  for tool in memcheck racecheck; do
    if [ "$tool" = memcheck ]; then FILTER="float32 and (values_and_gradients or backward_op_direct or nonfinite)"
    else FILTER="float32 and backward_op_direct"; fi
    run_step "cs-$tool" 120 "$CS" --tool "$tool" --error-exitcode 9 --target-processes all \
      "$PYTHON" -m pytest -q -x -p no:cacheprovider -m "not emulated_cuda and not slow" tests/test_opdb.py \
      -k "cuda and ($FILTER)"
    [ "$STEP_RC" = 0 ] && run_step "cs-$tool-fused" 90 "$CS" --tool "$tool" --error-exitcode 9 --target-processes all \
      "$PYTHON" -m pytest -q -x -p no:cacheprovider -m "not emulated_cuda and not slow" tests/test_opdb.py \
      tests/test_mlp.py -k "cuda and (mlp or matches_sequential or hidden_layout) and ($FILTER or matches_sequential)"
    case "$STEP_RC" in
      0) record "cs-$tool" PASS "compute-sanitizer --tool $tool: $(last_line 'ERROR SUMMARY|passed')" ;;
      124|137) record "cs-$tool" WARN "compute-sanitizer --tool $tool: timed out (${STEP_SECS}s); not a failure" ;;
      *) if [ "${STEP_SKIPPED:-0}" = 1 ]; then record "cs-$tool" WARN "skipped: budget spent";
         else record "cs-$tool" FAIL "compute-sanitizer --tool $tool: $(last_line 'ERROR SUMMARY|failed|error')"; fi ;;
    esac
  done
fi

# ---------------------------------------------------------------- summary (printed last)
{
  echo
  if [ -f "$OUT_DIR/linear_cuda_tc_quick.csv" ]; then
    echo "GEMM kernels vs cuBLAS (TFLOP/s, median; ratio pylibnn/cuBLAS):"
    "$PYTHON" - "$OUT_DIR/linear_cuda_tc_quick.csv" <<'EOF' || true
import csv, sys
print(f"  {'shape':14s} {'prec':5s} {'mode':8s} {'pylibnn':>9s} {'cuBLAS':>9s} {'ratio':>6s} {'error':>9s}")
for r in csv.DictReader(open(sys.argv[1])):
    print(f"  {r['shape']:14s} {r['precision']:5s} {r['mode']:8s} {float(r['pylibnn_tflops']):9.2f} "
          f"{float(r['torch_tflops']):9.2f} {float(r['ratio']):6.3f} {r['max_rel_error']:>9s}")
EOF
  fi
  if [ -f "$OUT_DIR/linear_cuda_quick.csv" ]; then
    echo "benchmark headline (GFLOP/s, median; pylibnn/cuBLAS ratio):"
    "$PYTHON" - "$OUT_DIR/linear_cuda_quick.csv" <<'EOF' || true
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
by = {(r["name"], r["shape"], r["mode"], r["dtype"]): r for r in rows}
keys = []
for r in rows:
    k = (r["shape"], r["mode"], r["dtype"])
    if k not in keys:
        keys.append(k)
print(f"  {'shape':22s} {'mode':8s} {'dtype':8s} {'pylibnn':>10s} {'torch':>10s} {'ratio':>6s}")
for shape, mode, dtype in keys:
    p, t = by.get(("pylibnn", shape, mode, dtype), {}), by.get(("torch", shape, mode, dtype), {})
    def g(r):
        try:
            return f"{float(r['gflops']):10.1f}"
        except (KeyError, ValueError):
            return f"{'n/a':>10s}"
    ratio = p.get("vs_torch", "")
    try:
        ratio = f"{float(ratio):6.2f}"
    except ValueError:
        ratio = f"{'n/a':>6s}"
    err = f"  [{p['error']}]" if p.get("error") else ""
    print(f"  {shape:22s} {mode:8s} {dtype:8s} {g(p)} {g(t)} {ratio}{err}")
EOF
    echo
  fi
  echo "================ pylibnn gpu_check summary ($(elapsed) s of ${BUDGET_S} s budget; log: $LOG)"
  printf '%-10s %-8s %-5s %-6s %s\n' STEP STATUS RC SECS NOTE
  OVERALL=PASS
  for s in "${STEPS[@]}"; do
    IFS='|' read -r n st rc secs note <<<"$s"
    printf '%-10s %-8s %-5s %-6s %s\n' "$n" "$st" "$rc" "$secs" "$note"
    case "$n:$st" in
      build:FAIL|build:TIMEOUT) [ "$BUILD_OK" = 1 ] || OVERALL=FAIL ;;
      build:SKIP) ;;
      *:FAIL|*:TIMEOUT|*:SKIP) OVERALL=FAIL ;;
    esac
  done
  echo "OVERALL: $OVERALL"
} 2>&1 | tee -a "$LOG"
grep -q "^OVERALL: PASS" "$LOG"
