"""GPU figures: the 8192x8192 update of the default engine against the card's own copy-bandwidth
floor, interleaved in rounds as benchmarks/run.py does. Run by benchmarks/gpu_check.sh.

Context rows: the same engine with its cache-sized blocks (steppers.BLOCK_BYTES) widened to the
whole tensor, which on a GPU turns about 8 kernel launches per 2 MiB block into 8 per update, and
torch.optim.SGD.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

SIZE, UPDATES, ROUNDS = 8192, 200, 5


def copy_floor(x: torch.Tensor, y: torch.Tensor) -> float:
    """1.5 x the median device time of y.copy_(x): one update reads x and the target, writes x."""
    times = []
    for _ in range(20):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        y.copy_(x)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 1.5 * statistics.median(times)


def default_per_update(problem, block_bytes: int | None = None) -> tuple[float, int]:
    """Seconds per update of one gdfit run (its own clock), and how often its host looks."""
    from gdfit.fitting import steppers
    from gdfit.engine.descent import Descent, every_n

    saved = steppers.BLOCK_BYTES
    steppers.BLOCK_BYTES = block_bytes or saved
    try:
        descent = Descent(problem, report=every_n(0), report_last=False, advice=False)
        for _ in descent.steps():
            pass
    finally:
        steppers.BLOCK_BYTES = saved
    return descent.result.elapsed_s / descent.result.iters, descent.loop.sync_every


def sgd_per_update(x0: torch.Tensor, target: torch.Tensor, updates: int = 20) -> float:
    import torch.nn.functional as F

    p = x0.clone().requires_grad_(True)
    optimizer = torch.optim.SGD([p], lr=1.0)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(updates):
        optimizer.zero_grad()
        loss = F.mse_loss(p, target)
        loss.backward()
        optimizer.step()
        bool(loss > 0)  # reads the loss every update, as a stop check would
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / updates


def main() -> None:
    from gdfit.config import build_config
    from gdfit.engine.descent import prepare

    resolved = build_config(
        {"target": {"random": {"shape": [SIZE, SIZE], "seed": 1}}, "learning_rate": 1.0, "threshold": 0,
         "max_iters": UPDATES, "device": "cuda"},
        source="gpu", base_dir=Path("."),
    )
    problem = prepare(resolved)
    x, y = torch.rand(SIZE, SIZE, device="cuda"), torch.empty(SIZE, SIZE, device="cuda")
    whole = SIZE * SIZE * 4
    timers = {
        "floor": lambda: copy_floor(x, y),
        "default": lambda: default_per_update(prepare(resolved))[0],  # a run moves its problem's x0: one each
        "one block": lambda: default_per_update(prepare(resolved), whole)[0],
        "sgd": lambda: sgd_per_update(problem.x0, problem.target),
    }
    for timer in timers.values():  # warm-up: allocator, kernels, cuBLAS handles
        timer()
    times = {name: [] for name in timers}
    for _ in range(ROUNDS):
        for name, timer in timers.items():
            times[name].append(timer())
    floor = statistics.median(times["floor"])
    sync_every = default_per_update(problem)[1]
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, {ROUNDS} interleaved rounds "
          f"after one warm-up, {UPDATES} updates a run, host looks every {sync_every}")
    print()
    print("| measure | per update | floor (1.5 x copy) | ratio (spread) | goal |")
    print("| --- | --- | --- | --- | --- |")
    labels = {"default": ("default engine", "<= 2.0x"),
              "one block": ("  same, blocks widened to the whole tensor", "(context)"),
              "sgd": ("  torch.optim.SGD", "(context)")}
    for name, (label, goal) in labels.items():
        per_round = [t / f for t, f in zip(times[name], times["floor"])]
        middle = statistics.median(per_round)
        spread = (max(per_round) - min(per_round)) / middle
        ours = statistics.median(times[name])
        print(f"| {SIZE}x{SIZE} float32: {label} | {ours * 1e6:.1f} us | {floor * 1e6:.1f} us "
              f"| {ours / floor:.2f}x ({spread:.0%}) | {goal} |")


if __name__ == "__main__":
    main()
