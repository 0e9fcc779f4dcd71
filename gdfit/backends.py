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

import dataclasses
import math
import operator
import os
import pickle
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from gdfit import records
from gdfit.errors import MissingExtraError
from gdfit.sweep import Run, collector_paused, run_batch

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

Results = Iterator[tuple[list[int], list[records.RunRecord]]]


def run_batches(runs: list[Run], batches: list[list[int]], x_limit: int = records.X_LIMIT,
                backend: str = "local", address: str | None = None,
                should_stop: Callable[[], bool] = lambda: False) -> Results:
    """Run every batch (lists of indices into `runs`, from `plan_batches`) on `backend`, yielding
    `(indices, records)` as each piece finishes. Stops early, cancelling what is left, when
    `should_stop()` turns true or on KeyboardInterrupt (re-raised)."""
    if backend == "local":
        return _run_local(runs, batches, x_limit, should_stop)
    if backend == "dask":
        require_dask()
        return _run_dask(runs, batches, x_limit, address or os.environ.get(ADDRESS_ENV) or None, should_stop)
    raise ValueError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")


def _run_local(runs: list[Run], batches: list[list[int]], x_limit: int, should_stop) -> Results:
    """In order, in this process, each plan batch whole (the largest batch is the fastest here)."""
    for batch in batches:
        if should_stop():
            return
        yield batch, run_task([runs[i] for i in batch], x_limit)


def run_task(group: list[Run], x_limit: int = records.X_LIMIT) -> list[records.RunRecord]:
    """One task: `run_batch`, or an error record for each of its runs when it raises, so that one
    bad batch does not end the sweep."""
    try:
        return run_batch(group, x_limit)
    except Exception as exc:  # noqa: BLE001 - any failure of the runs is reported as their result
        return [error_record(run, exc) for run in group]


def error_record(run: Run, exc: BaseException) -> records.RunRecord:
    """The record of a run that raised: no updates, no loss, the message where x would be."""
    return records.RunRecord(run.params, records.ERROR, 0, math.nan, None, error=f"{type(exc).__name__}: {exc}")


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
    from distributed import Client, as_completed

    cluster = None if address else start_local_cluster()
    client = Client(address or cluster, set_as_default=False)
    futures: dict = {}
    try:
        workers = max(1, len(client.nthreads()))
        tasks = split_batches(batches, workers, run_seconds(runs[0]))
        gpu = _has_gpu_workers(client)
        for task in tasks:
            group = [runs[i] for i in task]
            resources = {"GPU": 1} if gpu and group[0].resolved.config.device != "cpu" else None
            futures[client.submit(_packed_task, Shipment.of(group), x_limit, pure=False, resources=resources)] = task
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
                with collector_paused():
                    done = _result(future, result, [runs[i] for i in task])
                yield task, done
    finally:  # also on KeyboardInterrupt and when the caller closes the generator early
        if futures:
            client.cancel(list(futures), force=True)
        client.close()
        if cluster is not None:
            cluster.close()


def _result(future, result, group: list[Run]) -> list[records.RunRecord]:
    """A task's records from its future and what as_completed fetched; a task that failed outside
    run_task (a worker killed more often than `distributed.scheduler.allowed-failures`, or
    unpicklable input) becomes error records."""
    if future.status == "error":
        return [error_record(run, future.exception()) for run in group]
    return _unpack(result, group)


@dataclass(frozen=True)
class Shipment:
    """A task's runs as they travel: the first run, and every run's grid values (`_grid_values`)
    pickled into one bytes object. Dask opens what it can: `client.submit` walks the lists, tuples
    and dicts of a task's arguments in search of futures (~1.5 us an item), and the scheduler
    unpickles each task and pickles it again for its worker, beside the client's 100,000 runs, each
    new object a step closer to a collection that walks them all. Together a quarter of the
    benchmark's CPU at 6,241 runs a task; a bytes object passes both untouched."""

    first: Run
    values: bytes

    @classmethod
    def of(cls, group: list[Run]) -> Shipment:
        with collector_paused():  # beside a sweep's runs, each collection walks them all
            return cls(group[0], pickle.dumps(_grid_values(group), protocol=pickle.HIGHEST_PROTOCOL))

    def runs(self) -> list[Run]:
        with collector_paused():  # a dict or two a run, and none of them garbage
            return rebuild(self.first, pickle.loads(self.values))


def _grid_values(group: list[Run]) -> list[tuple[dict, dict]]:
    """What sets each run of a batch apart: its grid values, and their validated forms in its
    config. Shipping these, not each run's whole validated config, costs a few bytes a run instead
    of ~30 us. The runs of a sweep all set the same keys."""
    getters = [(key, operator.attrgetter(key)) for key in group[0].params]  # "optimizer.momentum" too
    return [(run.params, {key: get(run.resolved.config) for key, get in getters}) for run in group]


def _with(model, path: list[str], value):
    """A copy of a frozen model with the (already validated) value at `path`."""
    if len(path) == 1:
        return model.model_copy(update={path[0]: value})
    return model.model_copy(update={path[0]: _with(getattr(model, path[0]), path[1:], value)})


def rebuild(first: Run, values: list[tuple[dict, dict]]) -> list[Run]:
    """A batch's runs from its first run and each run's grid values: runs of one batch differ
    only there, and the client validated every value, so nothing is validated again."""
    runs = []
    with collector_paused():
        for params, validated in values:
            # one copy for every top-level value (a model copy is most of a rebuilt run's cost), then
            # the nested ones; every value comes from the run's own config, so the order cannot matter
            config = first.resolved.config.model_copy(update={k: v for k, v in validated.items() if "." not in k})
            for key, value in validated.items():
                if "." in key:
                    config = _with(config, key.split("."), value)
            runs.append(Run(params, first.resolved.model_copy(update={"config": config})))
    return runs


# what a task sends back of each record, in the record's order after its params (the client has those)
COLUMNS = [field.name for field in dataclasses.fields(records.RunRecord) if field.name != "params"]


def _packed_task(shipment: Shipment, x_limit: int) -> list:
    """run_task with its records as columns and the x stacked in one tensor: pickling 1,000 small
    tensors one by one costs ~0.1 s, one stacked tensor almost nothing."""
    import torch

    done = run_task(shipment.runs(), x_limit)
    columns = [[getattr(record, name) for record in done] for name in COLUMNS]
    xs = columns[COLUMNS.index("x")]
    if all(isinstance(x, torch.Tensor) for x in xs) and len({x.shape for x in xs}) == 1:
        columns[COLUMNS.index("x")] = torch.stack(xs)
    return columns


def _unpack(columns: list, group: list[Run]) -> list[records.RunRecord]:
    return list(map(records.RunRecord, [run.params for run in group], *columns))


def _has_gpu_workers(client) -> bool:
    return client.run_on_scheduler(_scheduler_has_gpu)


def _scheduler_has_gpu(dask_scheduler) -> bool:
    """Run on the scheduler: does any worker advertise a GPU resource?"""
    return any(worker.resources.get("GPU") for worker in dask_scheduler.workers.values())


def start_local_cluster(workers: int | None = None):
    """A LocalCluster on this machine only: process workers of one thread each, one per CPU,
    scheduler and workers bound to 127.0.0.1, no dashboard. Callers start it under
    `if __name__ == "__main__":` (the workers are spawned processes)."""
    import dask
    from distributed import LocalCluster

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    # the scheduler (in this process) reads this config as it starts, and the nannies copy it to their workers
    with dask.config.set(QUIET_WORKERS):
        return LocalCluster(host=LOOPBACK, n_workers=workers or cpus or 1, threads_per_worker=1, processes=True,
                            dashboard_address=None, protocol="tcp://")
