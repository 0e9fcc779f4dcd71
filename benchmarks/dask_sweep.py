"""The Dask backend against the local one: learning rate x seed on the 3x3 seed target.

usage: python -m benchmarks.dask_sweep [--runs 100000] [--workers N] [--max-iters 3000] [--rounds 3]
                                      [--tasks-per-worker K]
(from the repository root, so that this tree's gdfit is the one imported, here and on the workers)

Both sides run the same tasks (`backends.split_batches` for N workers): local runs them one after
another in this process (torch's own threads, N of them: `--backend local` as shipped), Dask on a
LocalCluster of N one-thread process workers on 127.0.0.1, started once. A third side, local with
one torch thread, is the serial baseline that parallel efficiency is usually quoted against.

In interleaved rounds (after one untimed warm-up round: local, Dask, local at one thread, ...), as
benchmarks/run.py measures, each side's median and the spread of the per-round ratios ((max - min)
/ median). Reported: speed-up = local / Dask (first submit to last result; the cluster's start-up,
each worker importing torch, is reported apart), efficiency = speed-up / N (goal >= 0.7), and the
same against the one-thread local side. Results are checked equal run for run in every round.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from pathlib import Path

from distributed import Client

from gdfit.sweeps import backends
from gdfit.sweeps.grid import expand
from gdfit.sweeps.batches import plan_batches

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
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks-per-worker", type=int, default=backends.TASKS_PER_WORKER)
    args = parser.parse_args()
    backends.TASKS_PER_WORKER = args.tasks_per_worker
    import torch

    started = time.perf_counter()
    base = {"target": SEED_TARGET, "device": "cpu", "max_iters": args.max_iters}
    runs = list(expand(base, grid(args.runs), "benchmark", Path(".")))
    batches, _ = plan_batches(runs, len(runs))
    tasks = backends.split_batches(batches, args.workers, backends.run_seconds(runs[0]))
    print(f"{len(runs):,} runs, {len(tasks)} tasks of <= {max(map(len, tasks)):,}, {args.workers} workers, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads); expand {time.perf_counter() - started:.1f} s; "
          f"load average {', '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)

    t0 = time.perf_counter()
    cluster = backends.start_local_cluster(args.workers)
    with Client(cluster, set_as_default=False) as client:  # start-up includes each worker's torch import
        where = set(client.run(_import_engine).values())
    start_up = time.perf_counter() - t0
    print(f"gdfit from {backends.__file__}; on the workers from {', '.join(sorted(where))}", flush=True)
    threads = torch.get_num_threads()
    reference: dict = {}

    cpu: dict[str, list[float]] = {"local": [], "dask": [], "local1": []}  # CPU seconds, every thread

    def local(torch_threads: int, name: str):
        def timer() -> float:
            torch.set_num_threads(torch_threads)
            try:
                t, c = time.perf_counter(), time.process_time()
                done = {i: r for indices, records in backends.run_batches(runs, tasks)
                        for i, r in zip(indices, records)}
                elapsed, used = time.perf_counter() - t, time.process_time() - c
            finally:
                torch.set_num_threads(threads)
            check(done)
            cpu[name].append(used)
            return elapsed
        return timer

    def dask() -> float:
        with Client(cluster.scheduler_address, set_as_default=False) as client:
            before = sum(client.run(time.process_time).values())
            t, c = time.perf_counter(), time.process_time()
            done = {}
            for indices, records in backends.run_batches(runs, tasks, backend="dask",
                                                         address=cluster.scheduler_address):
                done.update(zip(indices, records))
            elapsed, used = time.perf_counter() - t, time.process_time() - c
            used += sum(client.run(time.process_time).values()) - before
        check(done)
        cpu["dask"].append(used)
        return elapsed

    def check(done: dict) -> None:
        """Every side's results equal the first local round's, run for run."""
        if not reference:
            reference.update(done)
        same = len(done) == len(reference) and all(
            (a.status, a.iters, a.loss) == (b.status, b.iters, b.loss) and a.x.equal(b.x)
            for a, b in ((done[i], reference[i]) for i in reference))
        if not same:
            raise SystemExit("results differ between the sides")

    sides = {"local": local(threads, "local"), "dask": dask, "local1": local(1, "local1")}
    for timer in sides.values():  # warm-up round
        timer()
    for taken in cpu.values():
        taken.clear()
    times: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(args.rounds):
        for name, timer in sides.items():
            times[name].append(timer())
        print(f"  round {r + 1}: " + ", ".join(f"{n} {t[-1]:.2f} s" for n, t in times.items()), flush=True)
    cluster.close()

    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"dask cluster start-up {start_up:.1f} s (once; not in the rounds)")
    for base_name, label in (("local", f"local ({threads} torch threads)"), ("local1", "local (1 torch thread)")):
        per_round = [b / d for b, d in zip(times[base_name], times["dask"])]
        speedup = median[base_name] / median["dask"]
        spread = (max(per_round) - min(per_round)) / statistics.median(per_round)
        print(f"{label:26} {median[base_name]:6.2f} s   dask {median['dask']:6.2f} s   speed-up {speedup:.2f} "
              f"({spread:.0%})   efficiency {speedup / args.workers:.2f} (goal >= 0.7)")
    # CPU seconds do not count the time a process waits for a core another one holds: on a busy
    # machine they say what each side did, where wall times say what it was given
    print("CPU seconds (median; Dask: the client and every worker): " + ", ".join(
        f"{name} {statistics.median(taken):.2f} s" for name, taken in cpu.items()))
    print(f"  Dask's work against one-thread local: {statistics.median(cpu['dask']) / statistics.median(cpu['local1']):.2f}x")
    print(f"results equal on every side and round ({len(runs):,} runs); {args.rounds} rounds, medians, "
          f"spread = (max - min) / median of the per-round ratios")


def _import_engine() -> str:
    import gdfit.engine.descent  # torch and the engine, once per worker

    return gdfit.engine.descent.__file__


if __name__ == "__main__":  # Dask's process workers are spawned: start the cluster only here
    main()
