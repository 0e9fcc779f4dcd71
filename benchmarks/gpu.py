"""GPU figures: the 8192x8192 fused update against the card's own copy-bandwidth floor, and the
seed problem's updates per second, CPU against CUDA. Run by benchmarks/gpu_check.sh."""

from __future__ import annotations

import statistics

import torch


def copy_floor(size: int) -> float:
    """1.5 x the median device time of y.copy_(x): one update reads x and the target, writes x."""
    x = torch.rand(size, size, device="cuda")
    y = torch.empty_like(x)
    times = []
    for _ in range(30):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        y.copy_(x)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 1.5 * statistics.median(times)


def fused_per_update(size: int, updates: int) -> tuple[float, int]:
    from gdfit.config import build_config
    from gdfit.engine import Descent, every_n, prepare
    from pathlib import Path

    resolved = build_config(
        {"target": {"random": {"shape": [size, size], "seed": 1}}, "learning_rate": 1.0, "threshold": 0,
         "max_iters": updates, "device": "cuda"},
        source="gpu", base_dir=Path("."),
    )
    descent = Descent(prepare(resolved), report=every_n(0), report_last=False, advice=False)
    for _ in descent.steps():
        pass
    result = descent.result
    return result.elapsed_s / result.iters, descent.sync_every


def main() -> None:
    size = 8192
    name = torch.cuda.get_device_name()
    floor = copy_floor(size)
    per_update, sync_every = fused_per_update(size, 500)
    print(f"device: {name}, torch {torch.__version__}")
    print()
    print("| measure | gdfit | floor | ratio |")
    print("| --- | --- | --- | --- |")
    print(f"| {size}x{size} float32 fused update (sync every {sync_every}) | {per_update * 1e6:.1f} us "
          f"| {floor * 1e6:.1f} us (1.5 x copy) | {per_update / floor:.2f}x |")


if __name__ == "__main__":
    main()
