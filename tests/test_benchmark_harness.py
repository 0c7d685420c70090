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
