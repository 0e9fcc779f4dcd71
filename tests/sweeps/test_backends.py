"""gdfit.sweeps.backends: the Dask backend against the local one (the oracle), faults, loopback only."""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import os
import pickle
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import SEED_TARGET
from helpers import dask_noise, holding_port, sockets_off_loopback

from gdfit import records
from gdfit.sweeps import backends
from gdfit.sweeps.batches import runs_left_out
from gdfit.errors import ExitCode, MissingExtraError
from gdfit.sweeps.batches import batch_runs, plan_batches
from gdfit.sweeps.grid import expand

SEED_BASE = {"target": SEED_TARGET, "device": "cpu", "max_iters": 2000}
MIXED_GRID = {"optimizer": ["gd", "momentum", "adam"], "learning_rate": [10 ** (-3 + 4 * i / 7) for i in range(8)]}


def make_runs(grid: dict, **base) -> tuple[list, list[list[int]]]:
    runs = list(expand({**SEED_BASE, **base}, grid, "test", Path(".")))
    batches, _ = plan_batches(runs, 10**6)
    return runs, batches


def collect(results) -> dict[int, object]:
    """Index -> RunRecord, failing if any run comes back twice."""
    seen: dict[int, object] = {}
    for indices, done in results:
        assert len(indices) == len(done)
        for i, record in zip(indices, done):
            assert i not in seen, f"run {i} came back twice"
            seen[i] = record
    return seen


def assert_same(dask: dict, local: dict) -> None:
    """Record for record, every field of RunRecord (a field added later is compared too)."""
    assert sorted(dask) == sorted(local)
    for i, want in local.items():
        for field in dataclasses.fields(records.RunRecord):
            a, b = getattr(dask[i], field.name), getattr(want, field.name)
            if isinstance(b, torch.Tensor):
                assert isinstance(a, torch.Tensor) and a.equal(b), (i, field.name)
            elif isinstance(b, float) and math.isnan(b):
                assert isinstance(a, float) and math.isnan(a), (i, field.name)
            else:
                assert a == b, (i, field.name)


# --- without Dask --------------------------------------------------------------------------------


def test_missing_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` now raises ImportError
    runs, batches = make_runs({"learning_rate": [0.1]})
    with pytest.raises(MissingExtraError) as caught:
        backends.run_batches(runs, batches, backend="dask")
    assert "pip install 'gdfit[dask]'" in str(caught.value)
    assert caught.value.exit_code == ExitCode.BAD_INPUT


def test_split_keeps_every_run_once_in_order():
    batches = [list(range(0, 10_000)), list(range(10_000, 10_005))]
    tasks = backends.split_batches(batches, workers=2, run_seconds=1e-4)
    assert [i for task in tasks for i in task] == list(range(10_005))
    assert [10_000, 10_001, 10_002, 10_003, 10_004] in tasks  # a small batch stays whole, never merged


def test_split_keeps_overhead_under_five_percent():
    tasks = backends.split_batches([list(range(100_000))], workers=200, run_seconds=1e-4, overhead_s=0.008)
    work = [len(task) * 1e-4 for task in tasks]
    assert min(work[:-1]) >= 0.008 / 0.05
    assert len(tasks) == math.ceil(100_000 / 1600)  # 1,600 runs of 0.1 ms carry 8 ms at 5%


def test_split_gives_each_worker_several_tasks_when_work_allows():
    tasks = backends.split_batches([list(range(100_000))], workers=2, run_seconds=1e-4)
    assert len(tasks) == 2 * backends.TASKS_PER_WORKER


def test_local_error_records_and_the_rest_runs():
    runs, batches = make_runs({"device": ["cpu", "cuda:7"]})
    done = collect(backends.run_batches(runs, batches))
    assert done[0].status == "converged"
    assert done[1].status == records.ERROR and "cuda:7" in done[1].error


def test_a_sweep_leaves_its_runs_out_of_the_collectors_walks():
    """While the batches run, the objects that existed before (the runs) sit in the collector's
    permanent generation; afterwards they are back, and a sweep inside another leaves them be."""
    runs, batches = make_runs({"learning_rate": [0.1, 0.2]})
    assert gc.get_freeze_count() == 0
    frozen = [gc.get_freeze_count() for _ in backends.run_batches(runs, batches)]
    assert frozen and min(frozen) > 0 and gc.get_freeze_count() == 0
    with runs_left_out():
        outer = gc.get_freeze_count()
        assert outer > 0 and len(collect(backends.run_batches(runs, batches))) == len(runs)
        assert gc.get_freeze_count() == outer
    assert gc.get_freeze_count() == 0


# --- with a local Dask cluster -------------------------------------------------------------------


@pytest.fixture(scope="session")
def cluster():
    """A 2-worker LocalCluster on 127.0.0.1 (skips without the dask extra). Its workers are spawned
    processes, which re-import only pytest's own guarded `__main__`, so a fixture may start them."""
    distributed = pytest.importorskip("distributed")
    local = distributed.LocalCluster(host="127.0.0.1", n_workers=2, threads_per_worker=1, processes=True,
                                     dashboard_address=None)
    yield local
    local.close()


@pytest.fixture
def client(cluster):
    from distributed import Client

    with Client(cluster, set_as_default=False) as c:
        c.wait_for_workers(2, timeout=60)
        yield c


@pytest.fixture(scope="module")
def mixed():
    runs, batches = make_runs(MIXED_GRID)
    return runs, batches, collect(backends.run_batches(runs, batches))


def test_dask_equals_local_on_a_heterogeneous_grid(cluster, mixed):
    runs, batches, local = mixed
    assert len(batches) == 3
    dask = collect(backends.run_batches(runs, batches, backend="dask", address=cluster.scheduler_address))
    assert_same(dask, local)


def test_dask_equals_local_for_a_matrix_model_with_a_holdout(cluster):
    """Every field of a record comes back from a task, the held-out RMSE of a matrix model too."""
    ratings = Path(__file__).resolve().parents[2] / "configs" / "ratings.csv"
    runs, batches = make_runs({"learning_rate": [1, 3], "seed": [0, 1]}, target={"file": str(ratings)},
                              model={"name": "lowrank", "rank": 3}, holdout=0.2, dtype="float64", max_iters=200)
    local = collect(backends.run_batches(runs, batches))
    assert len(batches) == 1 and all(isinstance(r.holdout_rmse, float) for r in local.values())
    assert_same(collect(backends.run_batches(runs, batches, backend="dask", address=cluster.scheduler_address)),
                local)


def test_scheduler_address_from_the_environment(cluster, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("started a cluster of its own despite DASK_SCHEDULER_ADDRESS")

    monkeypatch.setattr(backends, "start_local_cluster", refuse)
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.scheduler_address)
    runs, batches = make_runs({"learning_rate": [0.1, 0.2]})
    done = collect(backends.run_batches(runs, batches, backend="dask"))
    assert_same(done, collect(backends.run_batches(runs, batches)))


def test_a_task_that_raises_becomes_error_records(cluster):
    runs, batches = make_runs({"device": ["cpu", "cuda:7"], "learning_rate": [0.1, 0.2]})
    done = collect(backends.run_batches(runs, batches, backend="dask", address=cluster.scheduler_address))
    assert [done[i].status for i in range(4)] == ["converged", "converged", "error", "error"]
    assert done[2].error.startswith("DeviceError") and "cuda:7" in done[2].error


def _fails_outside_run_task(batch, x_limit):
    raise MemoryError(f"gave up on {len(batch)} runs")


def test_a_task_that_fails_in_dask_becomes_error_records(cluster, monkeypatch):
    """A task that fails around run_task (here the task function itself; in life a worker killed
    too often) ends as an errored future: its runs become error records with its message."""
    monkeypatch.setattr(backends, "_packed_task", _fails_outside_run_task)
    runs, batches = make_runs({"learning_rate": [0.1, 0.2, 0.3]})
    done = collect(backends.run_batches(runs, batches, backend="dask", address=cluster.scheduler_address))
    assert sorted(done) == [0, 1, 2]
    assert all(r.status == records.ERROR and r.error == f"MemoryError: gave up on {len(batches[0])} runs"
               for r in done.values())


def test_a_killed_worker_is_replaced_and_its_task_rerun(cluster, client):
    # threshold 0: every run takes all its updates, so a task lasts long enough to be killed in
    runs, batches = make_runs(MIXED_GRID, max_iters=15_000, threshold=0)
    local = collect(backends.run_batches(runs, batches))
    pids = client.run(os.getpid)
    killed: list[int] = []

    def kill_a_busy_worker() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            busy = [w for w, keys in client.processing().items() if keys and w in pids]
            if busy:
                time.sleep(0.3)  # into the task, not before it
                os.kill(pids[busy[0]], signal.SIGKILL)
                killed.append(pids[busy[0]])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_busy_worker)
    killer.start()
    dask = collect(backends.run_batches(runs, batches, backend="dask", address=cluster.scheduler_address))
    killer.join()
    assert killed, "no worker was busy to kill"
    assert_same(dask, local)
    client.wait_for_workers(2, timeout=60)
    assert killed[0] not in client.run(os.getpid).values()  # the nanny started a new one


def test_stop_cancels_what_is_left(cluster, client):
    runs, batches = make_runs(MIXED_GRID, max_iters=15_000, threshold=0)
    running = lambda: any(client.processing().values())  # noqa: E731 - stop once tasks run
    results = backends.run_batches(runs, batches, backend="dask", address=cluster.scheduler_address,
                                   should_stop=running)
    assert collect(results) == {}
    deadline = time.monotonic() + 30
    while any(client.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(client.processing().values())


def test_a_cluster_gdfit_starts_stays_on_loopback(cluster, monkeypatch, mixed):
    """Watch this process and every process under it (scheduler, nannies, workers; the session
    cluster's too) while run_batches starts its own cluster, runs the grid and closes it."""
    psutil = pytest.importorskip("psutil")
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    runs, batches, local = mixed
    me = psutil.Process()
    seen_pids: set[int] = set()
    bad: list[str] = []
    sweeping = threading.Event()

    def watch() -> None:
        while not sweeping.is_set():
            pids = {me.pid} | {child.pid for child in me.children(recursive=True)}
            seen_pids.update(pids)
            bad.extend(sockets_off_loopback(pids))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        dask = collect(backends.run_batches(runs, batches, backend="dask"))
    finally:
        sweeping.set()
        watcher.join()
    assert not bad, "\n".join(sorted(set(bad)))
    assert len(seen_pids) > 1 + 2, "the watcher never saw the cluster's processes"
    assert_same(dask, local)


def test_the_cli_sweeps_on_dask_and_resumes_there(cluster, cli, tmp_path, monkeypatch):
    """The issue's command, on the test cluster: the same runs as the local backend, and a journal
    cut short goes on with --backend dask to the same summary."""
    from conftest import ROOT

    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.scheduler_address)
    seed = str(ROOT / "configs" / "seed.yaml")
    grid = ["--grid", "optimizer=gd,momentum,adam", "--grid", "learning_rate=logspace(1e-3,10,8)"]
    local = cli("sweep", seed, *grid, "--output", str(tmp_path / "local.json"))
    assert local.exit_status == 0
    folder = tmp_path / "demo"
    on_dask = cli("sweep", seed, *grid, "--backend", "dask", "--output", str(folder))
    assert on_dask.exit_status == 0
    expected = {json.dumps(r["params"]): r for r in json.loads((tmp_path / "local.json").read_text())["runs"]}
    summary = json.loads((folder / "summary.json").read_text())
    assert {json.dumps(r["params"]): r for r in summary["runs"]} == expected
    lines = (folder / "runs.jsonl").read_text().splitlines()
    (folder / "runs.jsonl").write_text("\n".join(lines[:5]) + "\n")  # as if killed after 5 runs
    (folder / "summary.json").unlink()
    resumed = cli("sweep", "--resume", str(folder), "--backend", "dask")
    assert resumed.exit_status == 0
    again = json.loads((folder / "summary.json").read_text())
    assert {json.dumps(r["params"]): r for r in again["runs"]} == expected
    assert len((folder / "runs.jsonl").read_text().splitlines()) == 24  # each run exactly once


def test_a_sweep_beside_a_taken_dashboard_port_prints_nothing_of_it():
    """127.0.0.1:8787 taken: the sweep's own cluster moves its HTTP server to a free loopback port
    without a word (the many-fits job's test runs the same with `gdfit run`)."""
    pytest.importorskip("distributed")
    from conftest import ROOT, run_process

    with holding_port(8787):
        result = run_process("sweep", str(ROOT / "configs" / "seed.yaml"), "--grid", "learning_rate=0.5,1",
                             "--backend", "dask", env={"DASK_SCHEDULER_ADDRESS": ""})
    assert result.exit_status == 0, result.stderr
    assert not dask_noise(result.stderr), result.stderr


def test_the_cluster_gdfit_starts_serves_http_on_a_free_loopback_port():
    """Its scheduler's HTTP server (health and metrics routes; no dashboard) listens on 127.0.0.1,
    not on 8787 when that is taken, and starting it warns of nothing."""
    import urllib.error
    import urllib.request
    import warnings

    pytest.importorskip("distributed")
    with holding_port(8787), warnings.catch_warnings():
        warnings.simplefilter("error")
        cluster = backends.start_local_cluster(workers=1)
    try:
        server = cluster.scheduler.http_server
        assert (server.address, server.port != 8787) == ("127.0.0.1", True)
        base = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(f"{base}/health", timeout=10) as answer:
            assert answer.read() == b"ok"
        with pytest.raises(urllib.error.HTTPError) as missing:  # the dashboard's page: none served
            urllib.request.urlopen(f"{base}/status", timeout=10)
        assert missing.value.code == 404
    finally:
        cluster.close()


def _log_on_worker() -> None:
    import logging

    logging.getLogger("distributed.worker").warning("probe: a warning")
    logging.getLogger("distributed.worker").error("probe: an error")


def test_the_cluster_gdfit_starts_lets_only_errors_through(capfd, monkeypatch):
    """A worker's warning (Dask logs one for each task it cancels, on Ctrl-C) stays off the
    terminal; an error, such as a worker lost for good, still reaches it. The workers write to
    this process's stderr, which capfd reads; no environment of an earlier CLI test speaks for them."""
    pytest.importorskip("distributed")
    from distributed import Client

    monkeypatch.delenv("DASK_LOGGING__DISTRIBUTED", raising=False)
    cluster = backends.start_local_cluster(workers=1)
    try:
        with Client(cluster, set_as_default=False) as client:
            client.run(_log_on_worker)
    finally:
        cluster.close()
    err = capfd.readouterr().err
    assert "probe: an error" in err and "probe: a warning" not in err


@pytest.mark.parametrize(
    "grid,optimizer",
    [
        ({"optimizer.betas": [[0.9, 0.999], [0.8, 0.99]], "init": ["zeros", "random", {"name": "normal", "std": 2}],
          "learning_rate": [0.1, 0.2], "seed": [0, 5]}, "adam"),
        # nested values that differ within one batch, beside top-level ones
        ({"optimizer.momentum": [0.5, 0.9], "learning_rate": [0.1, 0.2], "optimizer.dampening": [0.0, 0.3],
          "seed": [0, 5]}, "momentum"),
    ],
)
def test_a_batch_as_it_travels_gives_each_run_its_own_result(grid, optimizer):
    """A task carries a batch as `batch_runs` (pickled, as Dask does), not its runs: every setting
    that differs within the batch must reach the worker, so that each run ends as it does alone."""
    runs, batches = make_runs(grid, optimizer=optimizer, dtype="float64", max_iters=200)
    assert any(len(batch) > 1 for batch in batches)
    for batch in batches:
        group = [runs[i] for i in batch]
        travelled = pickle.loads(pickle.dumps(batch_runs(group)))
        assert len(travelled.starts) < len(group) or "seed" not in grid  # the repeated starts are shipped once
        together = records.run_records([run.params for run in group], backends.run_task(travelled))
        alone = [records.run_records([run.params], backends.run_task(batch_runs([run])))[0] for run in group]
        assert_same(dict(enumerate(together)), dict(enumerate(alone)))
        assert len({(r.iters, r.loss) for r in alone}) > 1  # the runs differ, so a lost setting would show


def test_a_cluster_gdfit_starts_has_quiet_workers():
    """The nannies copy the config they are made under to their workers: no 10 ms stack sampler,
    no 1 ms GIL monitor, and the periodic checks that woke each process 50-100 times a second
    spaced out; the caller's config is left as it was."""
    pytest.importorskip("distributed")
    import dask
    from distributed import Client

    keys = ["distributed.worker.profile.enabled", "distributed.admin.system-monitor.gil.enabled",
            "distributed.admin.tick.interval", "distributed.admin.system-monitor.interval",
            "distributed.worker.memory.monitor-interval"]

    def seconds(value) -> float:
        return dask.utils.parse_timedelta(value) if isinstance(value, str) else value

    before = {key: dask.config.get(key) for key in keys}
    cluster = backends.start_local_cluster(1)
    try:
        with Client(cluster, set_as_default=False) as client:
            on_worker = next(iter(client.run(lambda: {key: dask.config.get(key) for key in keys}).values()))
    finally:
        cluster.close()
    assert {key: dask.config.get(key) for key in keys} == before
    assert on_worker == backends.QUIET_WORKERS
    assert on_worker[keys[0]] is False and on_worker[keys[1]] is False
    for key in keys[2:]:  # further apart than Dask's defaults
        assert seconds(on_worker[key]) > seconds(before[key]), key
