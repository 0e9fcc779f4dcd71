"""torch's intra-op threads per run (engine/threads.py): the CPUs a process may use, the choice,
what wins over it, and the start event that shows it."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch

from conftest import ROOT
from gdfit.engine import threads
from gdfit.fitting.models import Identity


@pytest.mark.parametrize("cpu_max, expected", [
    ("max 100000\n", None),  # no quota: the affinity's CPUs
    ("50000 100000\n", 1),  # half a CPU: at least one thread
    ("150000 100000\n", 1),  # 1.5 CPUs: one whole one
    ("100000000 100000\n", None),  # a quota above the affinity does not add CPUs
])
def test_usable_cpus_reads_the_affinity_and_the_cgroup_quota(tmp_path, cpu_max, expected):
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max)
    affinity = len(os.sched_getaffinity(0))
    assert threads.usable_cpus(path) == (affinity if expected is None else min(expected, affinity))


def test_usable_cpus_without_a_cgroup_file_is_the_affinity(tmp_path):
    assert threads.usable_cpus(tmp_path / "absent") == len(os.sched_getaffinity(0))


def lowrank(m: int, n: int, rank: int):
    return SimpleNamespace(m=m, n=n, rank=rank)


@pytest.mark.parametrize("model, cpus, count", [
    (Identity(), 2, 1),  # gd's blocks of a few MiB: memory-bound
    (Identity(), 8, 1),
    (lowrank(4096, 4096, 8), 2, 2),  # 134 million multiply-adds a product: threads pay
    (lowrank(4096, 4096, 8), 1, 1),
    (lowrank(200, 150, 8), 2, 1),  # 240,000: the threads' meetings would cost more
])
def test_the_choice_follows_the_problem_and_the_cpus(model, cpus, count):
    assert threads.choose(model, environ={}, cpus=cpus).count == count


def test_threads_flag_then_omp_num_threads_win():
    big = lowrank(4096, 4096, 8)
    assert threads.choose(big, 3, environ={"OMP_NUM_THREADS": "1"}, cpus=2) == threads.Threads(3, "--threads")
    assert threads.choose(Identity(), environ={"OMP_NUM_THREADS": "2"}, cpus=2) == threads.Threads(2, "OMP_NUM_THREADS")
    assert threads.choose(Identity(), environ={"OMP_NUM_THREADS": "x"}, cpus=2).count == 1  # not a count: ignored


def test_a_run_uses_the_choice_shows_it_and_puts_torch_back(cli, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "choose", lambda model, requested: threads.Threads(requested or 1, "test"))
    torch.set_num_threads(1)
    try:
        result = cli("run", "configs/seed.yaml", "--json", "--every", "0", "--threads", "2")
        assert torch.get_num_threads() == 1  # put back
    finally:
        torch.set_num_threads(before)
    start = result.lines[0]
    assert start["threads"] == {"count": 2, "why": "test"}
    default = cli("run", "configs/seed.yaml", "--json", "--every", "0").lines[0]
    assert default["threads"] == {"count": 1, "why": "test"}


def test_using_sets_the_count_inside_the_block():
    before = torch.get_num_threads()
    with threads.using(threads.Threads(1, "test")):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_a_run_computed_in_numpy_has_no_threads_to_show(cli, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert "threads" not in cli("run", "configs/decay.yaml", "--json", "--every", "0").lines[0]
