#!/usr/bin/env bash
# Runs pylibnn's kernel tests (CPU, and CUDA through the emulator) under AddressSanitizer +
# UndefinedBehaviorSanitizer.
#
#   scripts/sanitize.sh [SCRATCH_DIR] [-- PYTEST_ARGS...]
#
# Copies the tracked (and untracked, not ignored) files of this checkout into SCRATCH_DIR
# (default: a new temporary directory), builds pylibnn._C there in place with
# PYLIBNN_SANITIZE=1 PYLIBNN_CUDA=0 (-O1 -g -fsanitize=address,undefined), and runs a focused
# subset of the tests against that build. The checkout's own build and any editable install
# are left alone.
#
# Python itself is not instrumented, so libasan is preloaded (LD_PRELOAD) and its check that
# it comes first in the link order is turned off; leak detection is off because CPython and
# torch keep allocations alive until exit by design; allocator_may_return_null lets the
# out-of-memory tests get their exception (ASan would otherwise abort on a 2 PiB request).
# Any ASan or UBSan report aborts the run (UBSan via -fno-sanitize-recover, ASan by
# default), so a clean pass means no report.
#
# Environment: PYTHON (default: python3 on PATH), MAX_JOBS (default 2).
# About 1.5 minutes on 2 quiet cores (1 minute of it the instrumented build); see README.
# A temporary SCRATCH_DIR is removed after a clean run; a given one is kept.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
# The build and the tests run from the scratch copy: a relative interpreter path (make
# passes .venv/bin/python) must be made absolute first.
case "$PYTHON" in
  */*) PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")" ;;
esac
SCRATCH="${1:-}"
[ "$#" -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
OWN_SCRATCH=0
if [ -z "$SCRATCH" ] || [ "$SCRATCH" = "--" ]; then SCRATCH="$(mktemp -d -t pylibnn-sanitize.XXXXXX)"; OWN_SCRATCH=1; fi
mkdir -p "$SCRATCH"
T0=$(date +%s)

echo "sanitize: copying $REPO -> $SCRATCH"
(cd "$REPO" && git ls-files -co --exclude-standard -z | xargs -0 cp -p --parents -t "$SCRATCH" 2>/dev/null) \
  || (cd "$REPO" && tar --exclude=.git --exclude=build --exclude='*.so' --exclude=.venv -cf - . | tar -C "$SCRATCH" -xf -)
rm -f "$SCRATCH"/pylibnn/_C*.so

echo "sanitize: building with PYLIBNN_SANITIZE=1"
(cd "$SCRATCH" && PYLIBNN_SANITIZE=1 PYLIBNN_CUDA=0 MAX_JOBS="${MAX_JOBS:-2}" \
   "$PYTHON" setup.py build_ext --inplace > build.log 2>&1) || { tail -40 "$SCRATCH/build.log"; exit 1; }
T1=$(date +%s)
echo "sanitize: build took $((T1 - T0)) s"

LIBASAN="$(${CXX:-c++} -print-file-name=libasan.so)"
LIBSTDCXX="$(${CXX:-c++} -print-file-name=libstdc++.so)"
[ -f "$LIBASAN" ] || { echo "sanitize: libasan.so not found ($LIBASAN)"; exit 1; }

# The kernel tests: the op database's tests (values and gradients on every CPU path and
# dtype, edge shapes, backward masks, gradcheck, non-finite values, determinism, threads,
# every error input on cpu, meta and fake tensors), the Python entry points, autograd, the
# validation suite (every rejected input must raise, never touch memory), threads and error
# safety. Left out: the RSS and peak-memory tests (ASan's quarantine and shadow memory change
# RSS by design), the slow 64-bit tests (ASan's shadow would double their 8 GiB), opcheck and
# the hypothesis draws (the same launches again), and all but two rows of the shape matrix.
DEFAULT_TESTS=(tests/test_opdb.py tests/test_linear_numerics.py tests/test_ops.py tests/test_autograd.py
               tests/test_validation.py tests/test_safety.py tests/test_activations.py tests/test_mlp.py)
# (torch.compile's tests are left out too: inductor builds and loads C++ under the preload.)
# The same files' emulated_cuda variants run the CUDA kernels on the CPU under the same
# sanitizers (tests/cuda_emulation.py builds its extension with -fsanitize=bounds too, in
# build/emulated_cuda_sanitize): the float32 value tests of every op over its samples (edge
# shapes and views), the backward masks, non-finite values and the errors, not the gradchecks
# and training loops, which repeat the same launches. (The kernels themselves run under
# ASan + UBSan in make test too: tests/test_cuda_emulation.py's sanitize build.)
EMULATED_UNDER_SANITIZERS="(values_and_gradients and float32) or backward_op_direct or nonfinite or error_inputs"
EMULATED_UNDER_SANITIZERS+=" or matches_sequential or hidden_layout"
LEFT_OUT="memory_growth or temporary_larger or compile or opcheck or hypothesis"
LEFT_OUT+=" or (shape_matrix and not (M257-K300 or M1-K300))"
if [ "$#" -eq 0 ]; then
  set -- -q -x -p no:cacheprovider "${DEFAULT_TESTS[@]}" -m "not slow" \
         -k "not ($LEFT_OUT) and (not emulated_cuda or $EMULATED_UNDER_SANITIZERS)"
fi

# libstdc++ is preloaded with libasan: python does not link it, so without it ASan's
# __cxa_throw interceptor finds no real __cxa_throw at start-up and aborts on the first C++
# exception (every TORCH_CHECK). triton is stubbed out: its module throws C++ exceptions
# through a statically linked runtime at import (opcheck imports it), which ASan cannot follow.
STUBS="$SCRATCH/.sanitize_stubs"
mkdir -p "$STUBS/triton"
echo 'raise ImportError("triton is disabled in the sanitizer run (scripts/sanitize.sh)")' > "$STUBS/triton/__init__.py"
LOGS="$SCRATCH/sanitizer-logs"
rm -rf "$LOGS"; mkdir -p "$LOGS"

echo "sanitize: pytest $* (LD_PRELOAD=$LIBASAN $LIBSTDCXX; reports in $LOGS)"
cd "$SCRATCH"
set +e
PYTHONPATH="$STUBS${PYTHONPATH:+:$PYTHONPATH}" \
PYLIBNN_SANITIZE=1 \
LD_PRELOAD="$LIBASAN $LIBSTDCXX" \
ASAN_OPTIONS="detect_leaks=0:verify_asan_link_order=0:halt_on_error=1:detect_odr_violation=0:allocator_may_return_null=1:log_path=$LOGS/asan" \
UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$LOGS/ubsan" \
OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" \
  "$PYTHON" -m pytest "$@"
RC=$?
set -e
T2=$(date +%s)
# The out-of-memory tests make ASan warn "failed to allocate" (expected); anything else is a report.
REPORTS=$(cat "$LOGS"/* 2>/dev/null | grep -v "WARNING: AddressSanitizer failed to allocate" | grep -c . || true)
if [ "$REPORTS" != 0 ]; then
  echo "sanitize: sanitizer reports:"; cat "$LOGS"/* | grep -v "failed to allocate" | head -80
  [ "$RC" = 0 ] && RC=1
fi
echo "sanitize: tests rc=$RC in $((T2 - T1)) s; total $((T2 - T0)) s (scratch: $SCRATCH)"
if [ "$RC" = 0 ] && [ "$OWN_SCRATCH" = 1 ]; then cd / && rm -rf "$SCRATCH"; fi
exit $RC
