"""The benchmark harness's own rules that a report depends on (benchmarks/harness.py)."""

import numpy as np
import pytest

harness = pytest.importorskip("benchmarks.harness")


def test_numpy_threads_follow_torch():
    # A --threads 1 report compares pylibnn and torch on one core; numpy (OpenBLAS) must then
    # run on one core too, not on all of them.
    before = harness.numpy_threads()
    if before is None:
        pytest.skip("numpy's BLAS is not an OpenBLAS loaded in this process")
    try:
        assert harness.set_numpy_threads(1) == 1
        assert harness.numpy_threads() == 1
        a = np.ones((256, 256), dtype=np.float32)
        assert float((a @ a)[0, 0]) == 256.0  # still computes, on one thread
    finally:
        harness.set_numpy_threads(before)
    assert harness.numpy_threads() == before


def test_an_implementation_slower_than_half_a_case_is_timed_once():
    # A peer that takes minutes per call (torch's bfloat16 backward on an AVX2-only CPU) is
    # timed by one call after its warm-up; the others are repeated as usual.
    import time

    calls = {"slow": 0, "fast": 0}

    def slow():
        calls["slow"] += 1
        time.sleep(0.06)

    def fast():
        calls["fast"] += 1

    stats = harness.bench_case({"slow": slow, "fast": fast}, harness.Timer("cpu"), repeats=5,
                               min_sample_s=0.001, max_case_s=0.1, faults=True)
    assert calls["slow"] == 2  # the warm-up call and the one timed call
    assert stats["slow"]["samples"] == 1 and stats["slow"]["median_s"] >= 0.06
    assert stats["slow"]["faults_per_call"] >= 0
    assert stats["fast"]["samples"] == 5 and stats["fast"]["error"] == ""
