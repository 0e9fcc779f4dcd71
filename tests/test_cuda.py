"""CUDA checks, run by benchmarks/gpu_check.sh on a machine with a GPU (skipped elsewhere)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import SEED_TARGET
from helpers import fit

from gdfit.engine.loop import CUDA_SYNC_EVERY
from gdfit.sweeps.backends import execute
from gdfit.sweeps.grid import expand, parse_grid

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def sweep(data: dict, grid: list[str]):
    """A sweep in process, as `gdfit sweep` runs it: (the plan, the run records in grid order)."""
    runs = list(expand({"device": "cpu", **data}, parse_grid(grid, None, "test"), "test", Path(".")))
    events = list(execute(runs, 100, lambda: False))
    return events[0], events[-1]


@pytest.mark.parametrize("engine", ["autograd", "fused"])
def test_cuda_retraces_the_cpu_trajectory(engine):
    _, cpu, _ = fit(engine, device="cpu", target=SEED_TARGET)
    steps, gpu, descent = fit(engine, device="cuda", target=SEED_TARGET)
    assert descent.loop.sync_every == CUDA_SYNC_EVERY  # a small problem: the host looks every 32 updates
    assert (gpu.status, gpu.iters) == (cpu.status, cpu.iters) == ("converged", 19)
    assert gpu.history == pytest.approx(cpu.history, rel=1e-5)
    assert torch.allclose(gpu.x, cpu.x, atol=1e-6)
    assert [s.iter for s in steps] == list(range(1, 20))  # every update reported, none past the stop


@pytest.mark.parametrize("optimizer", ["momentum", "adam", "rmsprop"])
def test_cuda_optimizers_stop_where_cpu_does(optimizer):
    config = dict(target={"random": {"shape": [64, 64], "seed": 1}}, optimizer=optimizer, dtype="float64",
                  learning_rate=0.01 if optimizer != "momentum" else 50.0, threshold=1e-4, max_iters=2000)
    _, cpu, _ = fit(device="cpu", every=0, **config)
    _, gpu, _ = fit(device="cuda", every=0, **config)
    assert (gpu.status, gpu.iters) == (cpu.status, cpu.iters)
    assert gpu.loss == pytest.approx(cpu.loss, rel=1e-6)


def test_cuda_sweep_equals_cpu_sweep():
    grid = ["learning_rate=logspace(1e-2,10,16)", "seed=0..1"]
    cpu_plan, cpu = sweep({"target": SEED_TARGET}, grid)
    gpu_plan, gpu = sweep({"target": SEED_TARGET, "device": "cuda"}, grid)
    assert cpu_plan.device == "cpu" and gpu_plan.device.startswith("cuda")
    assert [r.params for r in gpu] == [r.params for r in cpu]
    assert [(r.status, r.iters) for r in gpu] == [(r.status, r.iters) for r in cpu]
    # CUDA and the CPU may sum the 9 squared errors in different orders: the last bit may differ
    assert [r.loss for r in gpu] == pytest.approx([r.loss for r in cpu], rel=1e-5, nan_ok=True)


def test_many_fits_on_cuda_give_the_cpu_table(tmp_path):
    """device: cuda places a many-fits job's tensors and stop rules on the GPU; lm's algebra is
    on the host either way, so every group's result is the CPU's."""
    import sys

    from conftest import ROOT, run_cli

    sys.path.insert(0, str(ROOT / "configs"))
    from make_screen import screen, write

    columns, _ = screen(300, seed=3, failures=True)
    write(tmp_path / "plates.npz", columns)
    base = (f"data: {{file: plates.npz, group: compound}}\ntarget: {{column: response}}\n"
            "model: {expr: 'bottom + (top - bottom) / (1 + (ec50 / dose) ** hill)', "
            "params: {bottom: 0, top: 100, ec50: 1, hill: 1}}\noptimizer: lm\ndtype: float64\nmax_iters: 200\n")
    tables = {}
    for device in ("cpu", "cuda"):
        (tmp_path / f"{device}.yaml").write_text(base + f"device: {device}\n")
        result = run_cli("run", str(tmp_path / f"{device}.yaml"), "--output", str(tmp_path / f"{device}.csv"))
        assert result.exit_status == 1, result.stderr
        tables[device] = (tmp_path / f"{device}.csv").read_text()
    assert tables["cuda"] == tables["cpu"]
