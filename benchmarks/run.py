"""Measure gdfit against its baselines, each ratio taken side by side in this one run.

usage: python -m benchmarks.run [--quick]     (prints a markdown table)

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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GDFIT = [sys.executable, "-m", "gdfit"]
SEED = str(ROOT / "configs" / "seed.yaml")


def wall(cmd: list[str], repeat: int, env: dict | None = None, stdin: str | None = None) -> float:
    """Median wall time of a whole process, output discarded."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, input=stdin,
                       text=True, env={**os.environ, **(env or {})}, check=False)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def end_event(cmd: list[str]) -> dict:
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False).stdout
    return json.loads(out.strip().splitlines()[-1])


def write_config(folder: Path, name: str, text: str) -> str:
    path = folder / name
    path.write_text(text)
    return str(path)


def startup(repeat: int) -> list[tuple]:
    base = wall([sys.executable, "-c", "import torch"], repeat)
    rows = []
    for label, args in (("--help", ["--help"]), ("--version", ["--version"]), ("config", ["config", SEED])):
        t = wall(GDFIT + args, repeat)
        rows.append((f"start-up: `gdfit {label}`", f"{t * 1e3:.0f} ms", '`python -c "import torch"`',
                     f"{base * 1e3:.0f} ms", t / base, "<= 0.3x"))
    return rows


def small(folder: Path, repeat: int) -> list[tuple]:
    updates = 30_000
    config = write_config(folder, "small.yaml", SEED_SMALL.format(updates=updates))
    tutorial = wall([sys.executable, str(ROOT / "benchmarks" / "tutorial_loop.py"), str(updates), "1e-4"], repeat)
    ours = wall(GDFIT + ["run", config, "--every", "0"], repeat)
    quiet = ours
    rows = [("3x3, 30,000 updates: `gdfit run` process", f"{ours:.2f} s", "tutorial loop process",
             f"{tutorial:.2f} s", ours / tutorial, "<= 1.0x")]
    json_every = wall(GDFIT + ["run", config, "--json", "--every", "1"], repeat)
    rows.append(("3x3: `--json --every 1`", f"{json_every:.2f} s", "`--every 0`", f"{quiet:.2f} s",
                 json_every / quiet, "<= 1.3x"))
    tty = {"TTY_INTERACTIVE": "1", "TTY_COMPATIBLE": "1", "COLUMNS": "100"}
    human = wall(GDFIT + ["run", config], repeat, env=tty)
    rows.append(("3x3: human table (live, terminal)", f"{human:.2f} s", "`--every 0`", f"{quiet:.2f} s",
                 human / quiet, "<= 1.1x"))
    return rows


SEED_SMALL = """target: [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]]
learning_rate: 1.0e-4
threshold: 0
max_iters: {updates}
device: cpu
"""


def large(folder: Path, updates: int) -> list[tuple]:
    import torch
    import torch.nn.functional as F

    size = 4096
    config = write_config(folder, "large.yaml",
                          f"target: {{random: {{shape: [{size}, {size}], seed: 1}}}}\nlearning_rate: 1.0e-3\n"
                          f"threshold: 0\nmax_iters: {updates}\ndevice: cpu\n")
    end = end_event(GDFIT + ["run", config, "--json", "--every", "0"])
    ours = end["elapsed_s"] / end["iters"]
    x = torch.rand(size, size)
    y = torch.empty_like(x)
    copies = []
    for _ in range(31):
        started = time.perf_counter()
        y.copy_(x)
        copies.append(time.perf_counter() - started)
    floor = 1.5 * statistics.median(copies)
    tutorial = _per_update_tutorial(x, torch.rand(size, size), max(3, updates // 10))
    sgd = _per_update_sgd(x, torch.rand(size, size), max(3, updates // 10))
    del F
    return [
        (f"{size}x{size} float32, per update: gdfit fused", f"{ours * 1e3:.2f} ms", "memory floor (1.5 x copy)",
         f"{floor * 1e3:.2f} ms", ours / floor, "<= 2.0x"),
        ("  tutorial loop, per update", f"{tutorial * 1e3:.2f} ms", "memory floor", f"{floor * 1e3:.2f} ms",
         tutorial / floor, "(baseline)"),
        ("  torch.optim.SGD, per update", f"{sgd * 1e3:.2f} ms", "memory floor", f"{floor * 1e3:.2f} ms",
         sgd / floor, "(baseline)"),
    ]


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


def sweep(folder: Path, repeat: int) -> list[tuple]:
    config = write_config(folder, "sweep.yaml", "target: [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]]\n"
                          "threshold: 1.0e-5\nmax_iters: 3000\ndevice: cpu\n")
    grid = "learning_rate=logspace(1e-3,10,256)"
    one = wall(GDFIT + ["run", config, "--every", "0", "--set", "learning_rate=1e-3"], repeat)
    whole = wall(GDFIT + ["sweep", config, "--grid", grid, "--json"], repeat)
    sequential, batched = _in_process_sweep(config, grid)
    return [
        ("sweep of 256 lr (3x3, max_iters 3000): process", f"{whole:.2f} s", "one `gdfit run` process (lr 1e-3)",
         f"{one:.2f} s", whole / one, "<= 2.0x"),
        ("  256 sequential in-process runs", f"{sequential:.2f} s", "the batched sweep, in process",
         f"{batched:.2f} s", sequential / batched, ">= 50x"),
    ]


def _in_process_sweep(config: str, grid_text: str) -> tuple[float, float]:
    from gdfit.config import read_config_text
    from gdfit.engine import Descent, every_n, prepare
    from gdfit.sweep import expand, parse_grid, plan_and_execute
    from gdfit.yamlsource import load_yaml

    text, source, base_dir = read_config_text(config)
    data = load_yaml(text, source).data
    runs = list(expand(data, parse_grid([grid_text], None, source), source, base_dir))
    started = time.perf_counter()
    for _ in plan_and_execute(runs, 100, lambda: False):
        pass
    batched = time.perf_counter() - started
    started = time.perf_counter()
    for run in runs:
        descent = Descent(prepare(run.resolved), report=every_n(0), report_last=False, advice=False)
        for _ in descent.steps():
            pass
    sequential = time.perf_counter() - started
    return sequential, batched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke test, noisier)")
    args = parser.parse_args()
    repeat = 1 if args.quick else 5
    import torch

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows += startup(repeat)
        rows += small(folder, max(1, repeat // 2 + 1))
        rows += large(folder, 20 if args.quick else 100)
        rows += sweep(folder, max(1, repeat // 2))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d')}")
    print()
    print("| measure | gdfit | baseline | baseline time | ratio | goal |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, ours, base, base_time, ratio, goal in rows:
        print(f"| {name} | {ours} | {base} | {base_time} | {ratio:.2f}x | {goal} |")


if __name__ == "__main__":
    main()
