"""Distributed training: one step of DistributedDataParallel and one of FSDP (fully_shard),
with the gloo backend on 2 local processes, on a pylibnn model (Linear layers, and the
same network as one fused MLP), give the gradients and
parameters of a single-process full-batch step. Both wrappers run in one pair of
processes: starting them costs more than the steps."""

import gc
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import pylibnn

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="needs torch.distributed with the gloo backend")

WORLD_SIZE = 2
BATCH = 8  # split evenly over the ranks


def _model(kind="linear"):
    torch.manual_seed(0)
    if kind == "mlp":  # the fused network, the same layers and values as the Sequential below
        return pylibnn.MLP([6, 16, 3], activation="tanh").double()
    return nn.Sequential(pylibnn.Linear(6, 16), nn.Tanh(), pylibnn.Linear(16, 3)).double()


def _data():
    generator = torch.Generator().manual_seed(1)
    return (torch.randn(BATCH, 6, generator=generator, dtype=torch.float64),
            torch.randn(BATCH, 3, generator=generator, dtype=torch.float64))


def _step(model, parameters, x, y):
    # mean loss over the local batch: averaging the ranks' gradients gives the full batch's
    optimizer = torch.optim.SGD(parameters, lr=0.1)
    loss = ((model(x) - y) ** 2).mean()
    optimizer.zero_grad()
    loss.backward()
    grads = [p.grad.detach().clone() for p in parameters]
    optimizer.step()
    return grads


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, port, out_dir):
    torch.set_num_threads(1)  # two processes on a small machine
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        torch.save(_steps(rank), os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()  # every collective of both ranks is done
    finally:
        dist.destroy_process_group()
        # The models hold the process group: freeing them here, while the interpreter is
        # alive, joins gloo's worker threads now. Left to interpreter shutdown, a worker
        # thread can still be dropping FSDP's last all-gather (which owns Python tensors)
        # and die taking the GIL: std::terminate, SIGABRT, a flaky test (1 run in 6 here).
        gc.collect()


def _steps(rank):
    x, y = _data()
    shard = slice(rank * BATCH // WORLD_SIZE, (rank + 1) * BATCH // WORLD_SIZE)
    results = {}
    from torch.distributed.fsdp import fully_shard
    for kind in ("linear", "mlp"):
        ddp = nn.parallel.DistributedDataParallel(_model(kind))
        grads = _step(ddp, list(ddp.parameters()), x[shard], y[shard])
        results[f"ddp-{kind}"] = {"grads": grads, "params": [p.detach().clone() for p in ddp.module.parameters()]}

        model = _model(kind)
        if kind == "linear":
            for layer in model:
                if isinstance(layer, pylibnn.Linear):
                    fully_shard(layer)
        fully_shard(model)  # the MLP is one unit: its one op reads every layer's parameters
        grads = _step(model, list(model.parameters()), x[shard], y[shard])
        results[f"fsdp-{kind}"] = {"grads": [g.full_tensor() for g in grads],
                                   "params": [p.detach().full_tensor() for p in model.parameters()]}
    return results


@pytest.fixture(scope="module")
def distributed_results(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("distributed")
    mp.spawn(_worker, args=(_free_port(), str(out_dir)), nprocs=WORLD_SIZE, join=True)
    return [torch.load(out_dir / f"rank{rank}.pt") for rank in range(WORLD_SIZE)]


@pytest.mark.parametrize("kind", ["linear", "mlp"])
@pytest.mark.parametrize("wrapper", ["ddp", "fsdp"])
def test_step_matches_full_batch(distributed_results, wrapper, kind):
    model = _model("linear")  # the single-process reference: the Sequential of pylibnn.Linear
    x, y = _data()
    grads = _step(model, list(model.parameters()), x, y)
    params = [p.detach() for p in model.parameters()]
    for rank, results in enumerate(distributed_results):
        result = results[f"{wrapper}-{kind}"]
        assert len(result["grads"]) == len(grads) == 4
        for got, expected in zip(result["grads"], grads):
            torch.testing.assert_close(got, expected, msg=lambda m: f"rank {rank} gradient: {m}")
        for got, expected in zip(result["params"], params):
            torch.testing.assert_close(got, expected, msg=lambda m: f"rank {rank} parameter: {m}")
