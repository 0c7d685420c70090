"""The tutorial's training run: pylibnn's network (and the nn.Linear network the demo times it
against) against the pure-torch reference network, and the ``python -m pylibnn`` main job."""

import re
import subprocess
import sys

import pytest
import torch

import pylibnn
from pylibnn import reference
from conftest import CUDA_BACKENDS, DEVICES, TUTORIAL_RTOL

SEEDS = [0, 1, 2, 3, 4]


def _test_losses_match_reference(device, seed, dtype):
    # The pylibnn network, and the nn.Linear network the demo times it against, both trained
    # beside the scratch network.
    runs = reference.train_side_by_side(seed=seed, device=device, dtype=dtype)
    assert type(runs.torch_net) is torch.nn.Sequential
    assert [type(m) for m in runs.torch_net] == [torch.nn.Linear] * 3
    for name, losses, net in (("pylibnn", runs.pylibnn_losses, runs.pylibnn_net),
                              ("nn.Linear", runs.torch_losses, runs.torch_net)):
        assert len(losses) == len(runs.reference_losses) == reference.ITERATIONS
        for epoch, (ref, ours) in enumerate(zip(runs.reference_losses, losses), start=1):
            assert abs(ours - ref) <= TUTORIAL_RTOL * abs(ref), (
                f"seed {seed}, epoch {epoch}: {name} loss {ours!r} vs reference {ref!r}")
        # The run really trains (a run that never updates would also "agree" at epoch 1 only).
        assert losses[-1] < 0.5 * losses[0]
        # And the networks end with the same parameters (scratch stores w as (in, out)).
        scratch = runs.reference_net
        pairs = [(scratch.w1, scratch.b1), (scratch.w2, scratch.b2), (scratch.w_out, scratch.b_out)]
        for layer, (w, b) in zip(net, pairs):
            torch.testing.assert_close(layer.weight.detach(), w.detach().t(), rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(layer.bias.detach(), b.detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [pytest.param(torch.float32, id="f32"), pytest.param(torch.float64, id="f64")])
@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed{s}" for s in SEEDS])
def test_losses_match_reference_cpu(seed, dtype):
    _test_losses_match_reference("cpu", seed, dtype)


@pytest.mark.parametrize("device", CUDA_BACKENDS)
@pytest.mark.parametrize("dtype", [pytest.param(torch.float32, id="f32"), pytest.param(torch.float64, id="f64")])
@pytest.mark.parametrize("seed", SEEDS, ids=[f"seed{s}" for s in SEEDS])
def test_losses_match_reference_cuda(device, seed, dtype):
    _test_losses_match_reference(device, seed, dtype)


def test_copy_weights_gives_identical_forward():
    generator = torch.Generator().manual_seed(7)
    scratch = reference.ScratchNet(generator=generator)
    net = reference.copy_weights(scratch, reference.pylibnn_net())
    with torch.no_grad():
        torch.testing.assert_close(net(reference.X), scratch(reference.X), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_main_job_exits_zero_and_prints_the_table(device):
    result = subprocess.run([sys.executable, "-m", "pylibnn", "--device", device],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    lines = result.stdout.splitlines()
    headers = [i for i, line in enumerate(lines) if "reference loss" in line and "pylibnn loss" in line]
    # Three runs: Linear layers, the fused MLP, and the non-linear next step on the MLP.
    assert len(headers) == 3, f"expected three loss tables in:\n{result.stdout}"
    for start in headers:
        rows = []
        for line in lines[start + 1:]:
            if not (line.split() and line.split()[0].isdigit()):
                break
            rows.append(line.split())
        # 200 iterations, a row every 20 epochs and the last: epochs 1, 21, ..., 181, 200.
        assert [int(row[0]) for row in rows] == list(range(1, reference.ITERATIONS + 1, 20)) + [reference.ITERATIONS]
        for row in rows:
            ref, ours = float(row[1]), float(row[2])
            assert abs(ours - ref) <= TUTORIAL_RTOL * abs(ref) + 1e-8, row  # +1e-8: the table prints 8 decimals
    # Each timing line names both sides and says which way the ratio goes.
    timings = [line for line in lines if line.startswith("time per training step")]
    assert len(timings) == 3, result.stdout
    for line, peer in zip(timings, ["nn.Sequential of nn.Linear layers"] * 2
                          + ["nn.Sequential of nn.Linear and nn.ReLU layers"]):
        assert f"pylibnn " in line and f", {peer} " in line, line
        assert re.search(rf": pylibnn \d+\.\d\dx (faster|slower) than {peer}$", line), line
    assert "OK" in result.stdout


def test_main_job_rejects_cuda_without_cuda_kernels():
    if torch.cuda.is_available() and pylibnn.build_info()["cuda"]:
        pytest.skip("this build has CUDA kernels and a GPU: --device cuda is valid here")
    result = subprocess.run([sys.executable, "-m", "pylibnn", "--device", "cuda"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0


def test_speed_comparison_names_the_direction():
    from pylibnn.__main__ import speed_comparison
    assert speed_comparison(1.0, 1.31, "nn.Sequential") == "pylibnn 1.31x faster than nn.Sequential"
    assert speed_comparison(2.0, 1.0, "nn.Sequential") == "pylibnn 2.00x slower than nn.Sequential"
