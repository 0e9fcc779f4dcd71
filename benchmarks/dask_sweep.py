"""The Dask backend against the local one: learning rate x seed on the 3x3 seed target.

usage: python -m benchmarks.dask_sweep [--runs 100000] [--workers N] [--max-iters 3000]

Both sides run the same tasks (`backends.split_batches` for N workers): local runs them one after
another in this process, Dask on a LocalCluster of N one-thread process workers on 127.0.0.1.
Reported: the local time, the Dask time as a whole (cluster start, tasks, close) and after
start-up (first submit to last result; start-up includes each worker importing torch), speed-up = local / after start-up, and efficiency =
speed-up / N (goal >= 0.7). Results are checked equal run for run.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

from distributed import Client

from gdfit import backends
from gdfit.sweep import expand, plan_batches

SEED_TARGET = [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]]


def grid(runs: int) -> dict[str, list]:
    """About `runs` runs: as many learning rates (1e-3..10, log-spaced) as seeds."""
    side = math.isqrt(runs)
    rates = [10 ** (-3 + 4 * i / (side - 1)) for i in range(side)]
    return {"learning_rate": rates, "seed": list(range(runs // side))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--max-iters", type=int, default=3000)
    args = parser.parse_args()

    started = time.perf_counter()
    base = {"target": SEED_TARGET, "device": "cpu", "max_iters": args.max_iters}
    runs = list(expand(base, grid(args.runs), "benchmark", Path(".")))
    batches, _ = plan_batches(runs, len(runs))
    tasks = backends.split_batches(batches, args.workers, backends.run_seconds(runs[0]))
    print(f"{len(runs):,} runs, {len(tasks)} tasks of <= {max(map(len, tasks)):,}, {args.workers} workers; "
          f"expand {time.perf_counter() - started:.1f} s")

    t0 = time.perf_counter()
    local = {i: r for indices, records in backends.run_batches(runs, tasks) for i, r in zip(indices, records)}
    local_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    cluster = backends.start_local_cluster(args.workers)
    with Client(cluster, set_as_default=False) as client:  # start-up includes each worker's torch import
        client.run(_import_engine)
    up = time.perf_counter()
    dask = {}
    for indices, records in backends.run_batches(runs, tasks, backend="dask", address=cluster.scheduler_address):
        dask.update(zip(indices, records))
    done = time.perf_counter()
    cluster.close()
    whole_s, after_s = time.perf_counter() - t0, done - up

    same = all((local[i].status, local[i].iters, local[i].loss) == (dask[i].status, dask[i].iters, dask[i].loss)
               and local[i].x.equal(dask[i].x) for i in local)
    speedup = local_s / after_s
    print(f"local            {local_s:7.1f} s  ({local_s / len(runs) * 1e6:.0f} us/run)")
    print(f"dask whole       {whole_s:7.1f} s  (cluster start {up - t0:.1f} s)")
    print(f"dask after start {after_s:7.1f} s  speed-up {speedup:.2f}  "
          f"efficiency {speedup / args.workers:.2f} (goal >= 0.7)")
    print(f"whole-process speed-up {local_s / whole_s:.2f}; results equal: {same} ({len(dask):,} runs)")


def _import_engine() -> None:
    import gdfit.engine  # noqa: F401 - torch and the engine, once per worker


if __name__ == "__main__":  # Dask's process workers are spawned: start the cluster only here
    main()
