"""pylibnn's benchmarks: harness.py (shared machine description, ceilings, timer, report) and
the scripts over it, run as modules from the repository root (python -m benchmarks.bench_linear)."""
