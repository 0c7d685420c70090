"""Nothing breaks: concurrent calls with intra-op and inter-op threads, memory over many
calls, errors raised inside a call (out of memory, interrupts). The ops' own concurrency and
64-bit size tests are in the op database (tests/test_opdb.py: test_concurrent_threads and
the slow test_64bit_sizes).
"""

import gc
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import torch.nn.functional as F

import pylibnn
from pylibnn import ops


def _expected(x, w, b, gy):
    """float64 F.linear output and gradients, cast back to x's dtype for comparison."""
    leaves = [t.detach().double().requires_grad_() for t in (x, w, b)]
    y = F.linear(*leaves)
    return [y.detach()] + list(torch.autograd.grad(y, leaves, gy.double()))


def _close(actual, expected):
    tol = dict(rtol=1e-4, atol=1e-4) if actual.dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(actual.double(), expected, **tol)


# Shapes that take each CPU path: direct loop, dot kernels, packed and threaded.
THREAD_SHAPES = [(3, 5, 4), (4, 100, 30), (70, 90, 50), (130, 257, 190)]


def _case(shape, dtype, seed):
    M, K, N = shape
    g = torch.Generator().manual_seed(seed)
    make = lambda *s: torch.randn(s, generator=g, dtype=torch.float64).to(dtype)  # noqa: E731
    x, w, b, gy = make(M, K), make(N, K), make(N), make(M, N)
    return (x, w, b, gy), _expected(x, w, b, gy)


def test_concurrent_threads_with_intra_op_parallelism():
    """Threads whose calls themselves split over torch's intra-op pool (large shapes)."""
    (x, w, b, gy), expected = _case((300, 256, 260), torch.float32, 7)
    with ThreadPoolExecutor(4) as pool:
        outputs = list(pool.map(lambda _: pylibnn.linear(x, w, b), range(16)))
    for y in outputs:
        _close(y, expected[0])


def _forked_linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> list[torch.Tensor]:
    futures = [torch.jit.fork(torch.ops.pylibnn.linear_forward, x[i], w, b) for i in range(x.size(0))]
    return [torch.jit.wait(f) for f in futures]


# torch.jit.script is deprecated, but it is the one public way to reach the inter-op pool.
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_inter_op_threads():
    """Calls forked by TorchScript run on torch's inter-op thread pool, concurrently."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(12, 70, 90, generator=g)
    w = torch.randn(50, 90, generator=g)
    b = torch.randn(50, generator=g)
    forked = torch.jit.script(_forked_linear)
    for y, xi in zip(forked(x, w, b), x):
        torch.testing.assert_close(y, F.linear(xi.double(), w.double(), b.double()).float(), rtol=1e-4, atol=1e-4)


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_no_memory_growth_over_10k_calls():
    """RSS after 10^4 forward+backward calls (two paths) stays within 8 MiB of its level
    after a warm-up: leaking even one output (about 20 KiB) per call would add 200 MiB."""
    g = torch.Generator().manual_seed(5)
    shapes = [(40, 64, 48), (200, 96, 24)]
    data = []
    for M, K, N in shapes:
        x = torch.randn(M, K, generator=g).requires_grad_()
        w = torch.randn(N, K, generator=g).requires_grad_()
        b = torch.randn(N, generator=g).requires_grad_()
        data.append((x, w, b, torch.randn(M, N, generator=g)))

    def run(n):
        for i in range(n):
            x, w, b, gy = data[i % 2]
            torch.autograd.grad(pylibnn.linear(x, w, b), (x, w, b), gy)

    run(1000)
    gc.collect()
    before = _rss_bytes()
    run(10_000)
    gc.collect()
    growth = _rss_bytes() - before
    assert growth < 8 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 10^4 forward+backward calls"


def _peak_rss_delta(fn):
    """Peak RSS during fn() above the RSS before it (Linux: clear_refs resets the peak)."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pytest.skip("cannot reset the peak RSS (/proc/self/clear_refs)")
    before = _rss_bytes()
    result = fn()
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    return peak - before, result


def test_no_temporary_larger_than_the_packing_buffers():
    """A call's peak memory is its outputs plus the packing buffers (a few MiB), no copy of
    an operand: forward 1536 x 1536 -> 1536 float32 (each operand 9 MiB), and its backward."""
    n = 1536
    g = torch.Generator().manual_seed(9)
    x, w, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g), torch.randn(n, generator=g)
    gy = torch.randn(n, n, generator=g)
    pylibnn.linear(x[:64], w[:64], b[:64])  # warm up: thread pools, code paths
    output_bytes = n * n * 4
    allowance = 16 * 2**20  # packed B block (<= 8 MiB) + per-thread A blocks + malloc slack
    delta, y = _peak_rss_delta(lambda: ops.linear_forward(x, w, b))
    assert delta <= output_bytes + allowance, f"forward peak +{delta / 2**20:.1f} MiB for a {output_bytes / 2**20:.0f} MiB output"
    del y
    delta, grads = _peak_rss_delta(lambda: ops.linear_backward(gy, x, w, [True, True, True]))
    assert delta <= 2 * output_bytes + allowance, f"backward peak +{delta / 2**20:.1f} MiB for 2 x {output_bytes / 2**20:.0f} MiB of gradients"


# ---------------------------------------------------------------------------------------
# Errors raised inside a call leave the process usable and the next call correct.

HUGE_ROWS = 2**45  # an (M, 16) float32 result would be 2 PiB: past any address space


def _check_next_call_correct():
    (x, w, b, gy), expected = _case((70, 90, 50), torch.float64, 11)
    leaves = [t.detach().requires_grad_() for t in (x, w, b)]
    y = pylibnn.linear(*leaves)
    for actual, want in zip([y] + list(torch.autograd.grad(y, leaves, gy)), expected):
        _close(actual, want)


def test_out_of_memory_in_forward_then_next_call_correct():
    x = torch.ones(1, 8).expand(HUGE_ROWS, 8)  # stride 0: owns 32 bytes
    w = torch.ones(16, 8)
    for _ in range(3):
        with pytest.raises(RuntimeError, match=r"(?i)memory|allocat"):
            ops.linear_forward(x, w, None)
        with pytest.raises(RuntimeError, match=r"(?i)memory|allocat"):
            pylibnn.linear(x.unsqueeze(0), w)
    _check_next_call_correct()


def test_out_of_memory_in_backward_then_next_call_correct():
    x = torch.ones(1, 8).expand(HUGE_ROWS, 8)
    gy = torch.ones(1, 16).expand(HUGE_ROWS, 16)
    w = torch.ones(16, 8)
    with pytest.raises(RuntimeError, match=r"(?i)memory|allocat"):
        ops.linear_backward(gy, x, w, [True, False, False])
    # Through autograd: the forward's output is already too large, so build the failure in
    # the backward with a grad_output the forward never saw.
    leaf = torch.ones(1, 8).requires_grad_()
    y = pylibnn.linear(leaf.expand(4, 8), w)
    with pytest.raises(RuntimeError):
        y.backward(torch.ones(5, 16))  # wrong shape: autograd's own check
    _check_next_call_correct()


def test_keyboard_interrupt_between_calls_leaves_next_call_correct():
    """Ctrl-C (simulated: _thread.interrupt_main from a timer) while a loop of large calls
    runs: the kernels do not poll for it, so it lands between two calls, and the next call
    is correct."""
    import _thread
    import time

    import signal

    g = torch.Generator().manual_seed(17)
    x, w, b = torch.randn(512, 512, generator=g), torch.randn(512, 512, generator=g), torch.randn(512, generator=g)
    # A process started in the background (nohup, `cmd &`, some CI runners) inherits SIGINT
    # ignored, and then interrupt_main does nothing: install Python's own handler for the test.
    previous_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.2, _thread.interrupt_main)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                pylibnn.linear(x, w, b).sum().item()
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous_handler)
    _check_next_call_correct()


def test_errors_in_threads_leave_other_threads_correct():
    """Half the threads fail (out of memory, bad shapes) while the other half compute."""
    (x, w, b, gy), expected = _case((130, 257, 190), torch.float32, 13)
    huge = torch.ones(1, 8).expand(HUGE_ROWS, 8)

    def work(i):
        if i % 2:
            with pytest.raises(RuntimeError):
                ops.linear_forward(huge if i % 4 == 1 else x, torch.ones(16, 8), None)
            return None
        return pylibnn.linear(x, w, b)

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(work, range(24)))
    for y in results[::2]:
        _close(y, expected[0])


# ---------------------------------------------------------------------------------------
# 64-bit sizes.
