"""Where a sweep's batches run: in this process (`local`) or as Dask tasks (`dask`).

Both yield `(indices, records)` as work finishes: the positions in `runs` of the runs just done
and their RunRecords, in that order. Runs of a batch are independent, so the Dask backend may
split a plan batch into several tasks (`split_batches`) without changing any result.

Dask is an optional extra (`pip install 'gdfit[dask]'`) and is imported only when asked for. With
no address, a `LocalCluster` bound to 127.0.0.1 is started and closed at the end; with `address` or
`DASK_SCHEDULER_ADDRESS`, gdfit joins that cluster and leaves it running. Workers that advertise a
`GPU` resource (`dask worker ADDRESS --resources GPU=1`, one per GPU) get the batches of runs whose
device is not `cpu`, one task per GPU at a time.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any, Callable, Iterator

from gdfit import records
from gdfit.errors import MissingExtraError
from gdfit.sweeps.batches import BatchRuns, _run_batch, _shared, batch_runs, collector_paused, plan_batches, run_batch, runs_left_out
from gdfit.sweeps.grid import Run

BACKENDS = ("local", "dask")
ADDRESS_ENV = "DASK_SCHEDULER_ADDRESS"
LOOPBACK = "127.0.0.1"  # a cluster we start never listens beyond this machine
# Measured on a 2-worker LocalCluster: 3-8 ms per task. The upper end keeps the share safe.
TASK_OVERHEAD_S = 0.008
MAX_OVERHEAD = 0.05  # of a task's work
# The cheapest a run gets: 3x3 runs batched by thousands, most of them stopping early, took
# ~140 us at max_iters 3000 on one CPU core. Larger tensors cost more, which only widens the margin.
RUN_UPDATE_S = 4.5e-8
# A task runs until its slowest run (a batch holds its stopped runs still, it does not drop them),
# and neighbouring grid values stop at similar updates: smaller tasks end sooner, and many of them
# balance the workers. Modelling an update as 40 us + 50 ns a run on one core, on the update counts
# of benchmarks/dask_sweep.py (99,856 runs that stop anywhere from 1 to 3,000 updates), 2 workers
# reach 0.90 of a one-thread local run's speed twice over with 4 tasks each, 0.99 with 8; more
# tasks only add each one's per-update overhead.
TASKS_PER_WORKER = 8
POLL_S = 0.01  # how often should_stop is read, and finished tasks looked for, while tasks run
# The cluster gdfit starts has no dashboard, and no one reads a worker's statistical profile (a
# stack sample every 10 ms), its GIL monitor (every 1 ms) or its system monitor's history (CPU,
# memory, network and disk, every 0.5 s). An event loop's blocked-loop check (every 20 ms) and a
# worker's memory check (every 0.1 s) only need to be timely, not that frequent. Together they woke
# each process 50-100 times a second, ~15 ms of CPU a second for each worker and 30 for the
# scheduler and client; now 3 and 8.
QUIET_WORKERS = {"distributed.worker.profile.enabled": False, "distributed.admin.system-monitor.gil.enabled": False,
                 "distributed.admin.system-monitor.interval": "5s", "distributed.admin.tick.interval": "1s",
                 "distributed.worker.memory.monitor-interval": "500ms"}

# Dask's own log lines stay off the user's terminal unless they report an error: a worker logs a
# warning for each task cancelled under it (after Ctrl-C) and the nannies one for each restart.
# `silence_logs` sets the level of Dask's stderr handler in this process (scheduler, nannies,
# client) and in each worker process. The scheduler serves its HTTP routes (health, metrics; the
# dashboard only with bokeh and a dashboard address) even without a dashboard, on 8787 unless told
# otherwise, and warns when that port is taken (another cluster, a second gdfit job): a free port
# on 127.0.0.1 instead. LocalCluster turns the dashboard off by `dashboard_address=None`, and
# `scheduler_kwargs` only moves the HTTP server.
QUIET_CLUSTER = {"silence_logs": logging.ERROR, "scheduler_kwargs": {"dashboard_address": f"{LOOPBACK}:0"}}

Results = Iterator[tuple[list[int], list[records.RunRecord]]]


def run_batches(runs: list[Run], batches: list[list[int]], x_limit: int = records.X_LIMIT,
                backend: str = "local", address: str | None = None,
                should_stop: Callable[[], bool] = lambda: False) -> Results:
    """Run every batch (lists of indices into `runs`, from `plan_batches`) on `backend`, yielding
    `(indices, records)` as each piece finishes. Stops early, cancelling what is left, when
    `should_stop()` turns true or on KeyboardInterrupt (re-raised)."""
    if backend == "local":
        return _runs_left_out(_run_local(runs, batches, x_limit, should_stop))
    if backend == "dask":
        require_dask()
        return _runs_left_out(_run_dask(runs, batches, x_limit, address or os.environ.get(ADDRESS_ENV) or None,
                                        should_stop))
    raise ValueError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")


def _runs_left_out(results: Results) -> Results:
    """`results` with the runs left out of the cycle collector's walks (`sweep.runs_left_out`); on
    Dask the scheduler and the client's event loop make their objects in this process too."""
    with runs_left_out():
        yield from results


def _run_local(runs: list[Run], batches: list[list[int]], x_limit: int, should_stop) -> Results:
    """In order, in this process, each plan batch whole (the largest batch is the fastest here)."""
    for batch in batches:
        if should_stop():
            return
        group = [runs[i] for i in batch]
        columns = run_task(batch_runs(group), x_limit)
        with collector_paused():  # a record for each run
            done = records.run_records([run.params for run in group], columns)
        yield batch, done


def run_task(batch: BatchRuns, x_limit: int = records.X_LIMIT) -> dict[str, list]:
    """One task: `run_batch`, or error results for each of its runs when it raises, so that one
    bad batch does not end the sweep."""
    try:
        return run_batch(batch, x_limit)
    except Exception as exc:  # noqa: BLE001 - any failure of the runs is reported as their result
        return error_columns(len(batch), exc)


def error_columns(runs: int, exc: BaseException) -> dict[str, list]:
    """The results of runs that raised: no updates, no loss, no x, the message as their error."""
    return {"status": [records.ERROR] * runs, "iters": [0] * runs, "loss": [math.nan] * runs, "x": [None] * runs,
            "error": [f"{type(exc).__name__}: {exc}"] * runs, "holdout_rmse": [None] * runs}


def split_batches(batches: list[list[int]], workers: int, run_seconds: float,
                  overhead_s: float = TASK_OVERHEAD_S) -> list[list[int]]:
    """Cut plan batches into tasks: each one at least large enough that `overhead_s` is under
    MAX_OVERHEAD of its work (`run_seconds` per run, a low estimate), and no larger than gives
    every worker TASKS_PER_WORKER tasks. A batch smaller than that floor stays whole."""
    floor = math.ceil(overhead_s / (MAX_OVERHEAD * max(run_seconds, 1e-12)))
    total = sum(len(batch) for batch in batches)
    size = max(floor, math.ceil(total / (max(workers, 1) * TASKS_PER_WORKER)))
    return [batch[i : i + size] for batch in batches for i in range(0, len(batch), size)]


def run_seconds(run: Run) -> float:
    """A low estimate of one run's cost inside a large batch."""
    return RUN_UPDATE_S * run.resolved.config.max_iters


def require_dask() -> None:
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise MissingExtraError("--backend dask needs Dask distributed, which is not installed",
                                hint="pip install 'gdfit[dask]'") from None


def _run_dask(runs: list[Run], batches: list[list[int]], x_limit: int, address: str | None,
              should_stop) -> Results:
    def shipped(task: list[int]) -> tuple:
        with collector_paused():  # beside a sweep's runs, each collection walks them all
            return batch_runs([runs[i] for i in task]), x_limit

    for task, result in run_tasks(_packed_task, lambda workers: split_batches(batches, workers, run_seconds(runs[0])),
                                  shipped, address, should_stop,
                                  wants_gpu=lambda task: runs[task[0]].resolved.config.device != "cpu"):
        group = [runs[i] for i in task]
        with collector_paused():
            columns = error_columns(len(group), result) if isinstance(result, BaseException) else result
            done = records.run_records([run.params for run in group], columns)
        yield task, done


def run_tasks(work: Callable, tasks_for: Callable[[int], list], arguments: Callable[[Any], tuple],
              address: str | None, should_stop: Callable[[], bool] = lambda: False,
              wants_gpu: Callable[[Any], bool] = lambda task: False) -> Iterator[tuple[Any, Any]]:
    """`work(*arguments(task))` for each of `tasks_for(number of workers)` as Dask tasks, on the
    cluster at `address` (or a LocalCluster on 127.0.0.1, closed at the end). Yields `(task,
    result)` as each ends; a task that failed outside `work` (a worker killed more often than
    `distributed.scheduler.allowed-failures`, or unpicklable input) has its exception as result.
    Stops early, cancelling what is left, when `should_stop()` turns true or on KeyboardInterrupt."""
    from distributed import Client, as_completed

    address = address or os.environ.get(ADDRESS_ENV) or None
    cluster = None if address else start_local_cluster()
    client = Client(address or cluster, set_as_default=False)
    futures: dict = {}
    try:
        tasks = tasks_for(max(1, len(client.nthreads())))
        gpu = _has_gpu_workers(client)
        for task in tasks:
            resources = {"GPU": 1} if gpu and wants_gpu(task) else None
            futures[client.submit(work, *arguments(task), pure=False, resources=resources)] = task
        # each task's result fetched as it ends, on the client's event loop, not one at a time here
        finished = as_completed(list(futures), loop=client.loop, with_results=True, raise_errors=False)
        while not finished.is_empty():
            if should_stop():
                return
            if not finished.has_ready():
                time.sleep(POLL_S)
                continue
            for future, result in finished.next_batch(block=False):
                task = futures.pop(future)
                yield task, future.exception() if future.status == "error" else result
    finally:  # also on KeyboardInterrupt and when the caller closes the generator early
        if futures:
            client.cancel(list(futures), force=True)
        client.close()
        if cluster is not None:
            cluster.close()


def _packed_task(batch: BatchRuns, x_limit: int) -> dict[str, list]:
    """run_task with the x stacked in one tensor: pickling 1,000 small tensors one by one costs
    ~0.1 s, one stacked tensor almost nothing. A BatchRuns, not a list of runs, crosses Dask: it is
    one object to `client.submit`, which walks the lists, tuples and dicts of a task's arguments in
    search of futures (~1.5 us an item), and the scheduler, which unpickles each task and pickles it
    again for its worker, finds in it a few lists of numbers, not ~10 objects a run."""
    import torch

    columns = run_task(batch, x_limit)
    xs = columns["x"]
    if all(isinstance(x, torch.Tensor) for x in xs) and len({x.shape for x in xs}) == 1:
        columns["x"] = torch.stack(xs)
    return columns


def _has_gpu_workers(client) -> bool:
    return client.run_on_scheduler(_scheduler_has_gpu)


def _scheduler_has_gpu(dask_scheduler) -> bool:
    """Run on the scheduler: does any worker advertise a GPU resource?"""
    return any(worker.resources.get("GPU") for worker in dask_scheduler.workers.values())


def start_local_cluster(workers: int | None = None):
    """A LocalCluster on this machine only: process workers of one thread each, one per CPU,
    scheduler and workers bound to 127.0.0.1, no dashboard, quiet (see QUIET_CLUSTER). Callers
    start it under `if __name__ == "__main__":` (the workers are spawned processes)."""
    import dask
    from distributed import LocalCluster

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    # the scheduler (in this process) reads this config as it starts, and the nannies copy it to their workers
    with dask.config.set(QUIET_WORKERS):
        return LocalCluster(host=LOOPBACK, n_workers=workers or cpus or 1, threads_per_worker=1, processes=True,
                            dashboard_address=None, protocol="tcp://", **QUIET_CLUSTER)


def execute(runs: list[Run], x_limit: int, should_stop, done: frozenset[int] = frozenset(),
            on_batch=None, backend: str = "local", address: str | None = None) -> Iterator[Any]:
    """Run every combination in as few batches as exactness and memory allow, each one `Loop`.

    Yields the SweepPlan first, then (done, total) progress tuples, and finally the list of
    RunRecords in grid order. Runs whose index is in `done` (a resumed journal) are skipped;
    `on_batch(indices, records)` is called as each batch ends.
    """
    with runs_left_out():
        yield from _execute(runs, x_limit, should_stop, done, on_batch, backend, address)


def _execute(runs: list[Run], x_limit: int, should_stop, done: frozenset[int], on_batch, backend: str,
             address: str | None) -> Iterator[Any]:
    from gdfit.engine.advisor import advise, shown
    from gdfit.files.devices import describe
    from gdfit.engine.descent import prepare, working_copies
    from gdfit.files.tensors import MEMORY_HEADROOM, available_bytes, guard_memory

    first = prepare(runs[0].resolved)
    target, device, dtype = first.target, first.device, first.dtype

    def fit(run: Run) -> int:
        """Runs like this one that fit in memory at once (each group has its own target and dtype)."""
        problem = first if _shared(run.resolved.config) == _shared(runs[0].resolved.config) else prepare(run.resolved)
        numel, size = problem.target.numel(), problem.target.element_size()
        # per run: the x kept to hold it still replaces the target; a matrix model knows its own
        copies = problem.copies or working_copies(run.resolved.config)
        guard_memory(numel, problem.dtype, problem.device, copies, "one run of the sweep")
        return max(1, int(available_bytes(problem.device) * MEMORY_HEADROOM // max(numel * size * copies, 1)))

    batches, why = plan_batches(runs, fit)
    advice = (advise(first.loss, first.x0, target, first.model, first.config.optimizer.name)
              if shown(first.config.optimizer.name) else None)
    yield records.SweepPlan(describe(device), str(dtype).removeprefix("torch."), list(target.shape), len(runs),
                            max(len(b) for b in batches), len(batches), advice, why)
    results: dict[int, records.RunRecord] = {}
    if backend == "dask":  # batches as tasks, results as they finish (below)
        left = [b for b in ([i for i in batch if i not in done] for batch in batches) if b]
        for batch, item in run_batches(runs, left, x_limit, "dask", address, should_stop):
            results.update(zip(batch, item))
            if on_batch is not None:
                on_batch(batch, item)
            yield (len(done) + len(results), len(runs))
        yield [results[i] for i in sorted(results)]
        return
    for batch in ([i for i in batch if i not in done] for batch in batches):
        if not batch:
            continue
        group = [runs[i] for i in batch]
        problem = first if _shared(group[0].resolved.config) == _shared(runs[0].resolved.config) else None
        for item in _run_batch(problem or prepare(group[0].resolved), batch_runs(group), x_limit, should_stop):
            if isinstance(item, int):
                yield (len(done) + len(results) + item, len(runs))
            else:
                with collector_paused():  # a record for each run
                    item = records.run_records([run.params for run in group], item)
                results.update(zip(batch, item))
                if on_batch is not None:
                    on_batch(batch, item)
        yield (len(done) + len(results), len(runs))
        if should_stop():
            break
    yield [results[i] for i in sorted(results)]
