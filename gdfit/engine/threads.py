"""How many threads torch's operations use in one run, chosen from the problem and the CPUs.

torch splits each operation over its intra-op threads (by default one per core it sees), and the
threads meet at the end of every operation. A large update of x itself (gd on mse, in cache-sized
blocks of a few MiB: steppers.GdOnMse) is memory traffic that one core already drives at the
memory's pace, and on a shared machine, where a neighbour holds the other core, each meeting
waits for a thread that is not running: measured on a 2-core machine beside two CPU-bound
processes, a 4096² float32 update took 104 ms with one thread and 1062 ms with two (the copy
floor, 49 ms). Threads pay off where an operation is long arithmetic: a matrix model's products.
So a run takes one thread unless its model multiplies large matrices, and then as many as the
CPUs it may use (affinity and cgroup quota). `--threads N`, or OMP_NUM_THREADS, decides instead.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from gdfit.errors import UsageError
from gdfit.lazy import torch

PRODUCT_WORK = 10_000_000  # multiply-adds of one matrix product above which threads pay for their meetings
CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "QUOTA PERIOD", or "max PERIOD" for no quota


@dataclass(frozen=True)
class Threads:
    """The choice, and why: shown in the start event."""

    count: int
    why: str

    def describe(self) -> dict[str, object]:
        return {"count": self.count, "why": self.why}


def usable_cpus(cpu_max: Path = CPU_MAX) -> int:
    """The CPUs this process may run on: its affinity, capped by a cgroup CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def choose(model, requested: int | None = None, environ=os.environ, cpus: int | None = None) -> Threads:
    """torch's intra-op threads for a run of `model` (see the module's docstring)."""
    if requested is not None:
        return Threads(requested, "--threads")
    if environ.get("OMP_NUM_THREADS", "").strip().isdigit() and int(environ["OMP_NUM_THREADS"]) > 0:
        return Threads(int(environ["OMP_NUM_THREADS"]), "OMP_NUM_THREADS")
    cpus = usable_cpus() if cpus is None else cpus
    work = product_work(model)
    if cpus > 1 and work >= PRODUCT_WORK:
        return Threads(cpus, f"matrix products of {work:,} multiply-adds: one thread per usable CPU ({cpus})")
    if cpus == 1:
        return Threads(1, "one usable CPU")
    return Threads(1, "memory-bound or small operations: one thread drives them, and never waits on a busy core")


def resumed(saved: int, requested: int | None = None) -> Threads:
    """A resumed run's threads: the checkpoint's count. torch splits a sum of more than 32,768
    elements among its threads, so another count adds a large loss up in another order, and the
    resumed run would not end where the uninterrupted one does: `--threads` must match it."""
    if requested is not None and requested != saved:
        raise UsageError(f"{requested} differs from the checkpoint's {saved} (the run saved in it used {saved} "
                         f"thread{'s' if saved != 1 else ''}); another count changes how torch adds large sums up, "
                         "so the resumed run would not end where the uninterrupted run does",
                         key="--threads", hint=f"leave out --threads (the checkpoint's count is used), or give --threads {saved}")
    return Threads(saved, "the checkpoint's count: a resumed run keeps it, for the same arithmetic")


def product_work(model) -> int:
    """Multiply-adds of the model's largest matrix product per run (0 for elementwise models)."""
    if hasattr(model, "rank") and hasattr(model, "m"):  # lowrank: U [m, r] @ V^T [r, n]
        return model.m * model.n * model.rank
    inputs = getattr(model, "inputs", None)  # linear: inputs [N, d] @ W [d, k]
    if inputs is not None:
        return math.prod(inputs.shape) * getattr(model, "outputs", 1)
    return 0


@contextmanager
def using(threads: Threads) -> Iterator[None]:
    """torch's intra-op threads set to the choice for the block, and put back after it (a run
    inside a longer Python session leaves torch as it found it)."""
    previous = torch.get_num_threads()
    if previous != threads.count:
        torch.set_num_threads(threads.count)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
