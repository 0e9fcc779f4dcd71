"""Sweeps at scale (issue 17): what building the runs costs against running them, in process.

usage: python -m benchmarks.sweep_scale [--rounds 5] [--side 256] [--only setup|sequential] [--threads N]

- `setup`: a sweep of side x side runs (256 learning rates x 256 seeds = 65,536 on the 3x3 seed
  target, threshold 1e-5, max_iters 3000) through `sweep.expand` and `sweep.execute`. Each round
  times the whole sweep and, inside it, its own descent loop (`Loop.chunks`, every update and the
  host's looks); set-up is the rest: validating the grid, planning the batches, each batch's starts
  and settings, the records. Ratio = set-up / loop; the goal, set-up <= 20% of the total, is
  set-up / loop <= 0.25.
- `sequential`: benchmarks/run.py's in-process sweep row: 256 learning rates as 256 sequential
  `Descent` runs against the same runs batched by `sweep.execute` (ratio: sequential / batched),
  in interleaved rounds after a warm-up round. Goal >= 100x.

Prints markdown rows in benchmarks/run.py's format, with a machine line; each row is the median
of its rounds, and the spread (max - min) / median of the per-round ratios. `--threads 1` runs
torch on one thread: on a machine shared with other work, torch's threads wait for each other
whenever another process holds a core, which can slow a 65,536-run loop tenfold and would make
any set-up look small beside it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.run import SEED_TARGET, SWEEP_GRID, Row, _in_process_sweep, interleave, machine, print_table, row, write_config

BASE = {"target": [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]], "threshold": 1e-5, "max_iters": 3000,
        "device": "cpu"}


def setup_row(rounds: int, side: int) -> Row:
    """Set-up against the descent loop of one side x side sweep, both from the same run each round."""
    import gdfit.engine.loop
    from gdfit.sweeps.backends import execute
    from gdfit.sweeps.grid import expand

    chunks = gdfit.engine.loop.Loop.chunks
    in_loop = [0.0]

    def timed_chunks(self):
        """Loop.chunks, timing only its own work (not what the caller does between looks)."""
        steps = chunks(self)
        while True:
            started = time.perf_counter()
            try:
                item = next(steps)
            except StopIteration:
                in_loop[0] += time.perf_counter() - started
                return
            in_loop[0] += time.perf_counter() - started
            yield item

    grid = {"learning_rate": [10 ** (-3 + 4 * i / (side - 1)) for i in range(side)], "seed": list(range(side))}

    def sweep() -> tuple[float, float]:
        in_loop[0] = 0.0
        started = time.perf_counter()
        runs = list(expand(BASE, grid, "benchmark", Path(".")))
        for _ in execute(runs, 100, lambda: False):
            pass
        return time.perf_counter() - started, in_loop[0]

    gdfit.engine.loop.Loop.chunks = timed_chunks
    try:
        sweep()  # warm-up
        whole, loop = zip(*(_announced(sweep(), r) for r in range(rounds)))
    finally:
        gdfit.engine.loop.Loop.chunks = chunks
    setup = [w - l for w, l in zip(whole, loop)]
    per_round = [s / l for s, l in zip(setup, loop)]
    ratio = statistics.median(setup) / statistics.median(loop)
    share = statistics.median(s / w for s, w in zip(setup, whole))
    print(f"  set-up share of the whole sweep per round: {' '.join(f'{s / w:.0%}' for s, w in zip(setup, whole))}",
          file=sys.stderr)
    return Row(f"sweep of {side * side:,} runs ({side} lr x {side} seeds, 3x3, max_iters 3000): set-up "
               f"({share:.0%} of the total)", f"{statistics.median(setup):.2f} s", "its own descent loop",
               f"{statistics.median(loop):.2f} s", ratio,
               (max(per_round) - min(per_round)) / statistics.median(per_round), "<= 0.25x")


def _announced(times: tuple[float, float], r: int) -> tuple[float, float]:
    whole, loop = times
    print(f"  round {r + 1}: whole {whole:.2f} s, loop {loop:.2f} s, set-up {whole - loop:.2f} s", file=sys.stderr)
    return times


def sequential_row(rounds: int) -> Row:
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), "sweep.yaml", f"target: {SEED_TARGET}\nthreshold: 1.0e-5\n"
                              "max_iters: 3000\ndevice: cpu\n")
        batched, sequential = _in_process_sweep(config, SWEEP_GRID)
        times = interleave({"batched": batched, "sequential": sequential}, rounds)
    return row(times, "256-lr sweep (3x3, max_iters 3000), in process: 256 sequential `Descent` runs", "sequential",
               "batched", "the batched sweep (`execute`), in process", ">= 100x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--side", type=int, default=256, help="learning rates and seeds of the set-up sweep")
    parser.add_argument("--only", choices=("setup", "sequential"))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    before = machine()
    rows = []
    if args.only in (None, "setup"):
        rows.append(setup_row(args.rounds, args.side))
    if args.only in (None, "sequential"):
        rows.append(sequential_row(args.rounds))
    print_table(rows, before, f"{args.rounds} rounds after one warm-up")


if __name__ == "__main__":
    main()
