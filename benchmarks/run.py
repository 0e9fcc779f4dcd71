"""Measure gdfit against its baselines, each ratio taken side by side in this one run.

usage: python -m benchmarks.run [--quick] [--rounds N] [--only NAME ...]   (prints a markdown table)

Every figure is measured in interleaved rounds: after one untimed warm-up round, each round times
the baseline and then what is compared to it (baseline, ours, baseline, ours, ...), so that a
noisy neighbour on a shared machine slows both sides of a round alike. A row reports the median
of each side, their ratio, and in brackets the spread of the per-round ratios, (max - min) / median.

Baselines: `python -c "import torch"`, the tutorial's own loop (benchmarks/tutorial_loop.py, as a
whole process and in process), torch.optim.SGD, and the memory-traffic floor (1.5 x the median
time of y.copy_(x): one update must read x and the target and write x, three passes; a copy is two).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
GDFIT = [sys.executable, "-m", "gdfit"]
SEED = str(ROOT / "configs" / "seed.yaml")
TUTORIAL = [sys.executable, str(ROOT / "benchmarks" / "tutorial_loop.py")]
SEED_TARGET = "[[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]]"
FIGURES = ("startup", "curvefit", "small", "render", "large", "busy", "lowrank", "sweep", "checkpoint", "floor", "process", "memory")

Timer = Callable[[], float]


@dataclass
class Row:
    """One line of the table: ours against a baseline, both medians of the same rounds."""

    measure: str
    ours: str
    baseline: str
    baseline_time: str
    ratio: float
    spread: float
    goal: str  # "<= 1.0x", ">= 35x", or "(context)" for a row with no goal

    def met(self) -> str:
        if not self.goal.startswith(("<=", ">=")):
            return ""
        bound = float(self.goal[2:].strip().rstrip("x"))
        ok = self.ratio <= bound if self.goal.startswith("<=") else self.ratio >= bound
        return "yes" if ok else "**no**"


@dataclass
class Times:
    """Each timer's seconds, one entry per round."""

    rounds: dict[str, list[float]]

    def median(self, name: str) -> float:
        return statistics.median(self.rounds[name])

    def per_round(self, ours: str, base: str) -> list[float]:
        return [o / b for o, b in zip(self.rounds[ours], self.rounds[base])]

    def compare(self, ours: str, base: str) -> tuple[float, float]:
        """Ratio of the medians, and the spread of the per-round ratios ((max - min) / median)."""
        per_round = self.per_round(ours, base)
        middle = statistics.median(per_round)
        return self.median(ours) / self.median(base), (max(per_round) - min(per_round)) / middle


def interleave(timers: dict[str, Timer], rounds: int) -> Times:
    """One untimed warm-up round (file cache, first-call dispatch), then `rounds` rounds, each
    calling every timer once in the order given: a baseline first, then what is compared to it."""
    for timer in timers.values():
        timer()
    times: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            times[name].append(timer())
    return Times(times)


def row(times: Times, measure: str, ours: str, baseline: str, base_label: str, goal: str, unit: str = "s") -> Row:
    ratio, spread = times.compare(ours, baseline)
    each = " ".join(f"{r:.2f}" for r in times.per_round(ours, baseline))
    print(f"  {measure.strip()}: per-round ratios {each}", file=sys.stderr)  # to judge a wide spread
    return Row(measure, FORMATS[unit](times.median(ours)), base_label, FORMATS[unit](times.median(baseline)),
               ratio, spread, goal)


FORMATS: dict[str, Callable[[float], str]] = {
    "s": lambda t: f"{t:.2f} s",
    "ms": lambda t: f"{t * 1e3:.0f} ms",
    "ms.2": lambda t: f"{t * 1e3:.2f} ms",
    "us": lambda t: f"{t * 1e6:.1f} us",
}


def process(cmd: list[str], env: dict | None = None) -> Timer:
    """A timer for one whole process, output discarded."""

    def timer() -> float:
        started = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
                       env={**os.environ, **(env or {})}, check=False)
        return time.perf_counter() - started

    return timer


def write_config(folder: Path, name: str, text: str) -> str:
    path = folder / name
    path.write_text(text)
    return str(path)


def startup(folder: Path, rounds: int, quick: bool) -> tuple[list[Row], list[str]]:
    torch_label = '`python -c "import torch"`'
    times = interleave({
        "torch": process([sys.executable, "-c", "import torch"]),
        "--help": process(GDFIT + ["--help"]),
        "--version": process(GDFIT + ["--version"]),
        "config": process(GDFIT + ["config", SEED]),
    }, rounds)
    rows = [row(times, f"start-up: `gdfit {name}`", name, "torch", torch_label, "<= 0.3x", unit="ms")
            for name in ("--help", "--version", "config")]
    return rows, []


DECAY = str(ROOT / "configs" / "decay.yaml")
LMFIT = [sys.executable, str(ROOT / "benchmarks" / "lmfit_decay.py")]
CURVE_FIT_RSS_MB = 200  # the goal for a curve fit's whole process


def curvefit(folder: Path, rounds: int, quick: bool) -> tuple[list[Row], list[str]]:
    """configs/decay.yaml as a whole `gdfit run` process against the same fit as an lmfit script
    (benchmarks/lmfit_decay.py): time, and peak resident memory (the kernel's count for each child)."""
    peaks: dict[str, list[float]] = {"lmfit": [], "gdfit": []}
    times = interleave({
        "lmfit": process_peak(LMFIT, peaks["lmfit"]),
        "gdfit": process_peak(GDFIT + ["run", DECAY, "--every", "0"], peaks["gdfit"]),
    }, rounds)
    rss = {name: statistics.median(values) for name, values in peaks.items()}
    rss_row = Row("curve fit: peak RSS", f"{rss['gdfit']:.0f} MB", "lmfit", f"{rss['lmfit']:.0f} MB",
                  rss["gdfit"] / rss["lmfit"], 0.0, "(context)")
    note = (f"curvefit: peak RSS of the whole `gdfit run` process {rss['gdfit']:.0f} MB (median; goal <= "
            f"{CURVE_FIT_RSS_MB} MB: {'met' if rss['gdfit'] <= CURVE_FIT_RSS_MB else 'not met'}), lmfit's {rss['lmfit']:.0f} MB")
    return [row(times, "curve fit: `gdfit run configs/decay.yaml`, whole process", "gdfit", "lmfit",
                "lmfit script (`benchmarks/lmfit_decay.py`)", "<= 0.7x"), rss_row], [note]


def process_peak(cmd: list[str], peaks: list[float]) -> Timer:
    """`process` under GNU time, also keeping each run's peak resident memory in MB (the warm-up's
    too). The kernel's count for a child of this process would start from this process's own
    size (it carries over fork and exec); `time` is small, so its child's count is the command's."""

    def timer() -> float:
        started = time.perf_counter()
        done = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, check=False)
        elapsed = time.perf_counter() - started
        peaks.append(int(done.stderr.split()[-1]) / 1024)  # KiB
        return elapsed

    return timer


SMALL = f"target: {SEED_TARGET}\nlearning_rate: 1.0e-4\nthreshold: 0\nmax_iters: {{updates}}\ndevice: cpu\n"
SMALL_UPDATES = 30_000


def small(folder: Path, rounds: int, quick: bool) -> tuple[list[Row], list[str]]:
    config = write_config(folder, "small.yaml", SMALL.format(updates=SMALL_UPDATES))
    times = interleave({
        "tutorial": process(TUTORIAL + [str(SMALL_UPDATES), "1e-4"]),
        "gdfit": process(GDFIT + ["run", config, "--every", "0"]),
    }, rounds)
    return [row(times, "3x3, 30,000 updates: `gdfit run` process", "gdfit", "tutorial",
                "tutorial loop process", "<= 1.0x")], []


def render(folder: Path, rounds: int, quick: bool) -> tuple[list[Row], list[str]]:
    config = write_config(folder, "small.yaml", SMALL.format(updates=SMALL_UPDATES))
    tty = {"TTY_INTERACTIVE": "1", "TTY_COMPATIBLE": "1", "COLUMNS": "100"}
    times = interleave({
        "quiet": process(GDFIT + ["run", config, "--every", "0"]),
        "json": process(GDFIT + ["run", config, "--json", "--every", "1"]),
        "human": process(GDFIT + ["run", config], env=tty),
    }, rounds)
    return [
        row(times, "3x3: `--json --every 1`", "json", "quiet", "`--every 0`", "<= 1.3x"),
        row(times, "3x3: human table (live, terminal)", "human", "quiet", "`--every 0`", "<= 1.1x"),
    ], []


LARGE_SIZE = 4096


def large(folder: Path, rounds: int, quick: bool) -> tuple[list[Row], list[str]]:
    import torch

    size, updates = LARGE_SIZE, 20 if quick else 100
    config = write_config(folder, "large.yaml",
                          f"target: {{random: {{shape: [{size}, {size}], seed: 1}}}}\nlearning_rate: 1.0e-3\n"
                          f"threshold: 0\nmax_iters: {updates}\ndevice: cpu\n")
    x, target, y = torch.rand(size, size), torch.rand(size, size), torch.empty(size, size)
    context = max(3, updates // 10)
    times = interleave({
        "floor": lambda: 1.5 * _median_copy(x, y),
        "gdfit": lambda: _per_update_process(GDFIT + ["run", config, "--json", "--every", "0"]),
        "tutorial": lambda: _per_update_tutorial(x, target, context),
        "sgd": lambda: _per_update_sgd(x, target, context),
    }, rounds)
    floor = "memory floor (1.5 x copy)"
    ratio, _ = times.compare("gdfit", "floor")
    notes = [f"large: the default update costs {3 * ratio:.2f} copy-equivalent memory passes "
             f"(a copy is 2: read x, write y); the floor is 3 (read x and the target, write x), "
             f"so it runs at {100 / ratio:.0f}% of the floor's speed"]
    return [
        row(times, f"{size}x{size} float32, per update: gdfit default engine", "gdfit", "floor", floor,
            "<= 2.0x", unit="ms.2"),
        row(times, "  tutorial loop, per update", "tutorial", "floor", "memory floor", "(context)", unit="ms.2"),
        row(times, "  torch.optim.SGD, per update", "sgd", "floor", "memory floor", "(context)", unit="ms.2"),
    ], notes


LOWRANK_ALS = str(ROOT / "configs" / "lowrank-als.yaml")  # 60 x 40, rank 5, optimizer als


def lowrank(folder: Path, rounds: int, quick: bool) -> tuple[list[Row], list[str]]:
    """configs/lowrank-als.yaml (a 60 x 40 matrix, rank 5, `optimizer: als`): the fit's own time
    (its end event's elapsed_s) against the SVD that gives its optimum directly, and how close
    the fit's loss comes to the truncated SVD's."""
    import torch

    from gdfit.config import load_config
    from gdfit.engine.descent import prepare

    target = prepare(load_config(LOWRANK_ALS)).target.double()
    s = torch.linalg.svdvals(target)
    best = float(s[5:].square().sum()) / target.numel()
    losses: list[float] = []

    def als() -> float:
        out = subprocess.run(GDFIT + ["run", LOWRANK_ALS, "--json", "--every", "0"], cwd=ROOT, capture_output=True,
                             text=True, check=False).stdout
        end = json.loads(out.strip().splitlines()[-1])
        losses.append(end["loss"])
        return end["elapsed_s"]

    def svd() -> float:
        started = time.perf_counter()
        torch.linalg.svd(target, full_matrices=False)
        return time.perf_counter() - started

    times = interleave({"svd": svd, "als": als}, rounds)
    gap = max(abs(loss - best) / best for loss in losses)
    return [row(times, "lowrank 60x40, rank 5: `optimizer: als` to its end (fitting time)", "als", "svd",
                "`torch.linalg.svd` of the matrix", "(context)", unit="ms")], \
        [f"lowrank: the als fit ends {gap:.1e} relative from the truncated SVD's loss (goal 1e-6) in "
         f"{statistics.median(times.rounds['als']):.2f} s of fitting (goal < 5 s); lm refuses this problem "
         f"(500 parameters: a dense 2,400 x 500 solve per update) and names als"]


NEIGHBOURS = 2  # CPU-bound processes beside the `busy` figure's runs
NEIGHBOUR = [sys.executable, "-c", "while True: pass"]


def busy(folder: Path, rounds: int, quick: bool) -> tuple[list[Row], list[str]]:
    """The `large` figure's update and copy floor, both measured while NEIGHBOURS CPU-bound
    processes run beside them (a shared machine: another job, a browser, a CI neighbour)."""
    import torch

    size, updates = LARGE_SIZE, 20 if quick else 50
    config = write_config(folder, "busy.yaml",
                          f"target: {{random: {{shape: [{size}, {size}], seed: 1}}}}\nlearning_rate: 1.0e-3\n"
                          f"threshold: 0\nmax_iters: {updates}\ndevice: cpu\n")
    x, y = torch.rand(size, size), torch.empty(size, size)
    neighbours = [subprocess.Popen(NEIGHBOUR) for _ in range(NEIGHBOURS)]
    try:
        time.sleep(1.0)  # let them take their cores
        load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
        times = interleave({
            "floor": lambda: 1.5 * _median_copy(x, y),
            "gdfit": lambda: _per_update_process(GDFIT + ["run", config, "--json", "--every", "0"]),
        }, rounds)
    finally:
        for neighbour in neighbours:
            neighbour.kill()
            neighbour.wait()
    return [row(times, f"{size}x{size} float32, per update, beside {NEIGHBOURS} CPU-bound processes", "gdfit",
                "floor", "memory floor (1.5 x copy), under the same load", "<= 2.5x", unit="ms.2")], \
        [f"busy: load average with the neighbours running {load} (1, 5, 15 minutes)"]


def checkpoint(folder: Path, rounds: int, quick: bool) -> tuple[list[Row], list[str]]:
    """One checkpoint of a 4096x4096 float32 run (gd on mse: x, the rules, the history), written
    and fsynced, against one in-memory copy of x."""
    import torch

    from gdfit.engine.checkpoint import Checkpointer
    from gdfit.config import build_config
    from gdfit.engine.descent import Descent, every_n, prepare

    size = LARGE_SIZE
    data = {"target": {"random": {"shape": [size, size], "seed": 1}}, "learning_rate": 1e-3, "threshold": 0,
            "max_iters": 10**9, "device": "cpu"}
    descent = Descent(prepare(build_config(data, source="bench", base_dir=folder)), report=every_n(1), advice=False)
    steps = descent.steps()
    next(steps)
    saver = Checkpointer(folder / "large.ckpt", 0.0)

    x = descent.loop.stepper.params["x"]
    y = torch.empty_like(x)
    y.copy_(x)

    def copy() -> float:
        started = time.perf_counter()
        y.copy_(x)
        return time.perf_counter() - started

    def one_checkpoint() -> float:
        started = time.perf_counter()
        saver.save(descent.checkpoint([0.0] * (descent.loop.k + 1)))  # the losses' values cost nothing here
        return time.perf_counter() - started

    times = interleave({"copy": copy, "checkpoint": one_checkpoint}, rounds)
    megabytes = (folder / "large.ckpt").stat().st_size / 2**20
    notes = [f"checkpoint: {megabytes:.0f} MiB written and fsynced per checkpoint of the {size}x{size} run"]
    return [row(times, f"checkpoint of a {size}x{size} float32 run", "checkpoint", "copy",
                "`y.copy_(x)` in memory", "(figure)", unit="ms.2")], notes


FLOOR_UPDATES = 20_000


def floor(folder: Path, rounds: int, quick: bool) -> tuple[list[Row], list[str]]:
    """Issue 17: a 3x3 update in process against the least torch allows (a 0-dim multiply, a dot
    and .item() under inference mode), and against the tutorial's own operations there."""
    import torch

    from gdfit.config import build_config
    from gdfit.engine.descent import Descent, every_n, prepare

    updates = 2_000 if quick else FLOOR_UPDATES
    data = {"target": json.loads(SEED_TARGET), "learning_rate": 1e-4, "threshold": 0, "max_iters": updates,
            "device": "cpu"}

    def torch_floor() -> float:
        with torch.inference_mode():
            x, factor = torch.rand(9), torch.tensor(0.999)
            started = time.perf_counter()
            for _ in range(updates):
                x.mul_(factor)
                torch.dot(x, x).item()
            return (time.perf_counter() - started) / updates

    def tutorial_ops() -> float:  # d = x - t; g = 2/n d; x -= lr g; loss = mean((x - t)^2); read it
        with torch.inference_mode():
            x, t, buf = torch.rand(1, 9), torch.rand(1, 9), torch.empty(1, 9)
            scale, lr, n = torch.tensor(2 / 9), torch.tensor(1e-4), torch.tensor(9.0)
            started = time.perf_counter()
            for _ in range(updates):
                torch.sub(x, t, out=buf).mul_(scale).mul_(lr)
                x.sub_(buf)
                torch.sub(x, t, out=buf).square_()
                torch.sum(buf, 1).div_(n).item()
            return (time.perf_counter() - started) / updates

    def gdfit_update() -> float:
        descent = Descent(prepare(build_config(dict(data), source="bench", base_dir=folder)), report=every_n(0),
                          report_last=False, advice=False, keep_history=False)
        started = time.perf_counter()
        for _ in descent.steps():
            pass
        return (time.perf_counter() - started) / updates

    times = interleave({"floor": torch_floor, "ops": tutorial_ops, "gdfit": gdfit_update}, rounds)
    return [
        row(times, "3x3 update, in process (gd, mse)", "gdfit", "floor", "torch floor: 0-dim mul, dot, item",
            "<= 2.0x", unit="us"),
        row(times, "  the tutorial's update as bare torch calls", "ops", "floor", "torch floor", "(context)", unit="us"),
        row(times, "  gdfit against those bare calls", "gdfit", "ops", "the tutorial's calls", "(context)", unit="us"),
    ], []


def whole_process(folder: Path, rounds: int, quick: bool) -> tuple[list[Row], list[str]]:
    """Issue 17: a whole `gdfit run` process of 100 updates at 4096² float32 against `import torch`,
    allocating the target and x, and 100 updates at the three-pass memory floor."""
    size, updates = LARGE_SIZE, 20 if quick else 100
    config = write_config(folder, "process.yaml",
                          f"target: {{random: {{shape: [{size}, {size}], seed: 1}}}}\nlearning_rate: 1.0e-3\n"
                          f"threshold: 0\nmax_iters: {updates}\ndevice: cpu\n")
    baseline = [sys.executable, str(ROOT / "benchmarks" / "floor_process.py"), str(size), str(updates)]
    times = interleave({"floor": process(baseline), "gdfit": process(GDFIT + ["run", config, "--json", "--every", "0"])},
                       rounds)
    return [row(times, f"{size}² float32, whole `gdfit run` process of {updates} updates", "gdfit", "floor",
                "import torch, allocate, updates at the 3-pass floor", "<= 1.3x")], []


PEAK = r"""
import json, sys, resource
from pathlib import Path
import torch
from gdfit.config import build_config
from gdfit.engine.descent import Descent, every_n, prepare

def rss(field):
    for line in open('/proc/self/status'):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

size = int(sys.argv[1])
data = lambda n, updates: {"target": {"random": {"shape": [n, n], "seed": 1}}, "learning_rate": 1e-3,
                           "threshold": 0, "max_iters": updates, "device": "cpu"}
list(Descent(prepare(build_config(data(64, 1), source="b", base_dir=Path("."))), advice=False).steps())
imported = rss("VmRSS:")
with open('/proc/self/clear_refs', 'w') as f:
    f.write('5')
descent = Descent(prepare(build_config(data(size, 3), source="b", base_dir=Path("."))), report=every_n(0))
list(descent.steps())
print((rss("VmHWM:") - imported) / (size * size * 4))
"""


def memory(folder: Path, rounds: int, quick: bool) -> tuple[list[Row], list[str]]:
    """Issue 17: a run's peak resident memory above its imports, in target-sized tensors (gd, mse,
    float32): the kernel's peak counter, reset after the imports and a warm-up run."""
    notes = []
    for size in (4096, 8192):
        out = subprocess.run([sys.executable, "-c", PEAK, str(size)], cwd=ROOT, capture_output=True, text=True,
                             env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}, check=True).stdout
        tensors = float(out.strip().splitlines()[-1])
        notes.append(f"memory: peak RSS above the imports, {size}² float32 gd on mse: {tensors:.2f} target-sized "
                     f"tensors (goal <= 3)")
    return [], notes


def _median_copy(x, y, repeat: int = 11) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        y.copy_(x)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _per_update_process(cmd: list[str]) -> float:
    """Seconds per update from the `end` event's own clock (start-up and set-up excluded)."""
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False).stdout
    end = json.loads(out.strip().splitlines()[-1])
    return end["elapsed_s"] / end["iters"]


def _per_update_tutorial(x0, target, updates: int) -> float:
    import torch.nn.functional as F

    x = x0.clone().requires_grad_(True)
    loss = F.mse_loss(x, target)
    started = time.perf_counter()
    for _ in range(updates):
        loss.backward()
        x = x - 1e-3 * x.grad
        x.detach_()
        x.requires_grad_(True)
        loss = F.mse_loss(x, target)
        bool(loss > 0)  # the tutorial's `while loss > threshold` reads it every update
    return (time.perf_counter() - started) / updates


def _per_update_sgd(x0, target, updates: int) -> float:
    import torch
    import torch.nn.functional as F

    p = x0.clone().requires_grad_(True)
    optimizer = torch.optim.SGD([p], lr=1e-3)
    started = time.perf_counter()
    for _ in range(updates):
        optimizer.zero_grad()
        loss = F.mse_loss(p, target)
        loss.backward()
        optimizer.step()
        bool(loss > 0)  # reads the loss every update, as a stop check would
    return (time.perf_counter() - started) / updates


SWEEP_GRID = "learning_rate=logspace(1e-3,10,256)"


def sweep(folder: Path, rounds: int, quick: bool) -> tuple[list[Row], list[str]]:
    config = write_config(folder, "sweep.yaml", f"target: {SEED_TARGET}\nthreshold: 1.0e-5\nmax_iters: 3000\n"
                          "device: cpu\n")
    batched, sequential = _in_process_sweep(config, SWEEP_GRID)
    times = interleave({
        "one": process(GDFIT + ["run", config, "--every", "0", "--set", "learning_rate=1e-3"]),
        "whole": process(GDFIT + ["sweep", config, "--grid", SWEEP_GRID, "--json"]),
        "batched": batched,
        "sequential": sequential,
    }, rounds)
    return [
        row(times, "sweep of 256 lr (3x3, max_iters 3000): process", "whole", "one",
            "one `gdfit run` process (lr 1e-3)", "<= 2.0x"),
        row(times, "  in process: 256 sequential `Descent` runs", "sequential", "batched",
            "the batched sweep (`execute`), in process", ">= 35x"),
    ], []


def _in_process_sweep(config: str, grid_text: str) -> tuple[Timer, Timer]:
    """Timers for the 256 runs as `sweep.execute` batches them, and as one `Descent` each."""
    from gdfit.config import merge_config
    from gdfit.engine.descent import Descent, every_n, prepare
    from gdfit.sweeps.backends import execute
    from gdfit.sweeps.grid import expand, parse_grid

    raw = merge_config(config)
    runs = list(expand(raw.data, parse_grid([grid_text], None, raw.source), raw.source, raw.base_dir))

    def batched() -> float:
        started = time.perf_counter()
        for _ in execute(runs, 100, lambda: False):
            pass
        return time.perf_counter() - started

    def sequential() -> float:
        started = time.perf_counter()
        for run in runs:
            descent = Descent(prepare(run.resolved), report=every_n(0), report_last=False, advice=False)
            for _ in descent.steps():
                pass
        return time.perf_counter() - started

    return batched, sequential


def machine() -> str:
    import torch

    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return (f"machine: {_cpu_name()}, {os.cpu_count()} cores, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), python {platform.python_version()}, "
            f"{time.strftime('%Y-%m-%d %H:%M')}, load average {load}")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({platform.machine()})"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def print_table(rows: list[Row], before: str, rounds: str) -> None:
    """The machine line (load at the start and now), then the rows as a markdown table."""
    after = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"{before} (at the start; {after} at the end); {rounds}")
    print()
    print("| measure | gdfit | baseline | baseline time | ratio (spread) | goal | met |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r.measure} | {r.ours} | {r.baseline} | {r.baseline_time} | {r.ratio:.2f}x ({r.spread:.0%}) "
              f"| {r.goal} | {r.met()} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 rounds and fewer large updates (a noisy smoke run)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per figure (default 7, --quick 3)")
    parser.add_argument("--only", action="append", choices=FIGURES, metavar="NAME",
                        help=f"measure only this figure (repeatable): {', '.join(FIGURES)}")
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 7)
    chosen = [f for f in FIGURES if f in (args.only or FIGURES)]
    measure = {"startup": startup, "small": small, "render": render, "large": large, "sweep": sweep,
               "checkpoint": checkpoint, "floor": floor, "process": whole_process, "memory": memory,
               "curvefit": curvefit, "busy": busy, "lowrank": lowrank}

    before = machine()
    rows: list[Row] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in chosen:
            started = time.perf_counter()
            figure_rows, figure_notes = measure[name](Path(tmp), rounds, args.quick)
            rows += figure_rows
            notes += figure_notes
            print(f"{name}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    print_table(rows, before, f"{rounds} interleaved rounds after one warm-up")
    if notes:
        print()
        for note in notes:
            print(f"- {note}")


if __name__ == "__main__":
    main()
