"""The benchmark harness's own rules that a report depends on (benchmarks/harness.py)."""

import numpy as np
import pytest

harness = pytest.importorskip("benchmarks.harness")


def test_numpy_threads_follow_torch():
    # A --threads 1 report compares pylibnn and torch on one core; numpy (OpenBLAS) must then
    # run on one core too, not on all of them.
    lib = harness._loaded_openblas()
    if lib is None:
        pytest.skip("numpy's BLAS is not an OpenBLAS loaded in this process")
    getter = next(getattr(lib, n) for n in harness._OPENBLAS_GET_THREADS if hasattr(lib, n))
    before = int(getter())
    try:
        assert harness.set_numpy_threads(1) == 1
        assert int(getter()) == 1
        a = np.ones((256, 256), dtype=np.float32)
        assert float((a @ a)[0, 0]) == 256.0  # still computes, on one thread
    finally:
        harness.set_numpy_threads(before)
    assert int(getter()) == before
