"""GPU figures: the 8192x8192 update of the default engine against the card's own copy-bandwidth
floor, interleaved in rounds as benchmarks/run.py does. Run by benchmarks/gpu_check.sh.

usage: python -m benchmarks.gpu [--device cuda|cpu] [--size N] [--updates N] [--rounds N]
(`--device cpu` with a small size is the dry run that tests/test_gpu_check.py makes on a machine
without a GPU: the same code paths, timed with the host's clock instead of CUDA events.)

Context rows: the same engine with its cache-sized blocks (steppers.BLOCK_BYTES) widened to the
whole tensor, which on a GPU turns about 8 kernel launches per 2 MiB block into 8 per update, and
torch.optim.SGD.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

SIZE, UPDATES, ROUNDS = 8192, 200, 5


def copy_floor(x: torch.Tensor, y: torch.Tensor) -> float:
    """1.5 x the median device time of y.copy_(x): one update reads x and the target, writes x."""
    times = []
    for _ in range(20):
        with timed(x.device) as seconds:
            y.copy_(x)
        times.append(seconds())
    return 1.5 * statistics.median(times)


class timed:
    """The device time of a block: CUDA events on a GPU, the host's clock on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __enter__(self):
        if self.cuda:
            self.start, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.start.record()
        else:
            self.started = time.perf_counter()
        return self.seconds

    def __exit__(self, *exc) -> None:
        if self.cuda:
            self.end.record()
            torch.cuda.synchronize()
        else:
            self.elapsed = time.perf_counter() - self.started

    def seconds(self) -> float:
        return self.start.elapsed_time(self.end) / 1e3 if self.cuda else self.elapsed


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
    if p.device.type == "cuda":
        torch.cuda.synchronize()
    with timed(p.device) as seconds:
        for _ in range(updates):
            optimizer.zero_grad()
            loss = F.mse_loss(p, target)
            loss.backward()
            optimizer.step()
            bool(loss > 0)  # reads the loss every update, as a stop check would
    return seconds() / updates


def main() -> None:
    from gdfit.config import build_config
    from gdfit.engine.descent import prepare

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--size", type=int, default=SIZE)
    parser.add_argument("--updates", type=int, default=UPDATES)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    size, device = args.size, args.device
    resolved = build_config(
        {"target": {"random": {"shape": [size, size], "seed": 1}}, "learning_rate": 1.0, "threshold": 0,
         "max_iters": args.updates, "device": device},
        source="gpu", base_dir=Path("."),
    )
    problem = prepare(resolved)
    x, y = torch.rand(size, size, device=device), torch.empty(size, size, device=device)
    whole = size * size * 4
    timers = {
        "floor": lambda: copy_floor(x, y),
        "default": lambda: default_per_update(prepare(resolved))[0],  # a run moves its problem's x0: one each
        "one block": lambda: default_per_update(prepare(resolved), whole)[0],
        "sgd": lambda: sgd_per_update(problem.x0, problem.target),
    }
    for timer in timers.values():  # warm-up: allocator, kernels, cuBLAS handles
        timer()
    times = {name: [] for name in timers}
    for _ in range(args.rounds):
        for name, timer in timers.items():
            times[name].append(timer())
    floor = statistics.median(times["floor"])
    sync_every = default_per_update(problem)[1]
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu (dry run)"
    print(f"device: {name}, torch {torch.__version__}, {args.rounds} interleaved rounds "
          f"after one warm-up, {args.updates} updates a run, host looks every {sync_every}")
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
        print(f"| {size}x{size} float32: {label} | {ours * 1e6:.1f} us | {floor * 1e6:.1f} us "
              f"| {ours / floor:.2f}x ({spread:.0%}) | {goal} |")


if __name__ == "__main__":
    main()
