"""CUDA checks, run by benchmarks/gpu_check.sh on a machine with a GPU (skipped elsewhere)."""

from __future__ import annotations

import pytest
import torch
from conftest import SEED_TARGET
from helpers import fit

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("engine", ["autograd", "fused"])
def test_cuda_retraces_the_cpu_trajectory(engine):
    _, cpu, _ = fit(engine, device="cpu", target=SEED_TARGET)
    steps, gpu, descent = fit(engine, device="cuda", target=SEED_TARGET)
    assert descent.sync_every == (32 if engine == "fused" else 1)
    assert (gpu.status, gpu.iters) == (cpu.status, cpu.iters) == ("converged", 19)
    assert gpu.history == pytest.approx(cpu.history, rel=1e-5)
    assert torch.allclose(gpu.x, cpu.x, atol=1e-6)
    assert [s.iter for s in steps] == list(range(1, 20))


@pytest.mark.parametrize("optimizer", ["momentum", "adam", "rmsprop"])
def test_cuda_optimizers_stop_where_cpu_does(optimizer):
    config = dict(target={"random": {"shape": [64, 64], "seed": 1}}, optimizer=optimizer, dtype="float64",
                  learning_rate=0.01 if optimizer != "momentum" else 50.0, threshold=1e-4, max_iters=2000)
    _, cpu, _ = fit(device="cpu", every=0, **config)
    _, gpu, _ = fit(device="cuda", every=0, **config)
    assert (gpu.status, gpu.iters) == (cpu.status, cpu.iters)
    assert gpu.loss == pytest.approx(cpu.loss, rel=1e-6)


def test_cuda_sweep_equals_cpu_sweep():
    from test_batched import _sweep

    _, cpu = _sweep({"target": SEED_TARGET}, ["learning_rate=logspace(1e-2,10,16)", "seed=0..1"])
    _, gpu = _sweep({"target": SEED_TARGET, "device": "cuda"}, ["learning_rate=logspace(1e-2,10,16)", "seed=0..1"])
    assert [(r.status, r.iters) for r in gpu] == [(r.status, r.iters) for r in cpu]
