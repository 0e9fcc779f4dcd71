"""Many fits at once against a scipy `curve_fit` loop, both as whole processes.

    python -m benchmarks.many_fits                       # 100,000 groups, 3 interleaved rounds
    python -m benchmarks.many_fits --groups 10000 --rounds 1   # a smoke run
    python -m benchmarks.many_fits --million             # also 10^6 groups through gdfit alone: peak RSS

A synthetic screen (configs/make_screen.py: a four-parameter logistic per compound, 8 to 12
points each) is written once as .npz. Each round runs, one after the other, as child processes:

- gdfit: `python -m gdfit run JOB --output results.parquet`, the job's starts from the config;
- scipy: `python -m benchmarks.many_fits scipy DATA`: read the same .npz, group it, and call
  `scipy.optimize.curve_fit` (method lm, MINPACK) on every group from the same starts.

Per side and round: wall time of the whole process (start-up, reading, fitting, writing), fits
per second (by wall time, and by the child's CPU time, which a busy machine disturbs less), peak
memory (ru_maxrss of that child, from wait4), and the share of groups that
converged (gdfit: status converged; scipy: curve_fit returned without an error and with a finite
covariance). The ratio is gdfit's fits/s over scipy's within a round; the row gives the median and
the spread (max - min) / median of the rounds' ratios.
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

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
EXPR = "bottom + (top - bottom) / (1 + (ec50 / dose) ** hill)"
START = {"bottom": 0.0, "top": 100.0, "ec50": 1.0, "hill": 1.0}


def write_job(folder: Path, groups: int, seed: int = 0, max_iters: int = 200) -> tuple[Path, Path]:
    sys.path.insert(0, str(ROOT / "configs"))
    from make_screen import screen

    columns, _ = screen(groups, seed)
    data = folder / f"screen-{groups}.npz"
    np.savez(data, **columns)
    job = folder / f"job-{groups}.yaml"
    job.write_text(json.dumps({"data": {"file": data.name, "group": "compound"}, "target": {"column": "response"},
                               "model": {"expr": EXPR, "params": START}, "optimizer": "lm", "dtype": "float64",
                               "max_iters": max_iters}))
    return data, job


def child(args: list[str]) -> dict:
    """A child process to its end: wall seconds, its peak RSS (MiB) and its stdout."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "NO_COLOR": "1"})
    # wait4 gives this child's own rusage; reading the pipes first keeps it from blocking on them
    # (gdfit writes its summary to stdout and little to stderr; scipy one line)
    out, err = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(args)} exited {proc.returncode}: {err.decode()[-2000:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_mib": usage.ru_maxrss / 1024,
            "stdout": out.decode()}


def gdfit_side(job: Path, folder: Path, groups: int) -> dict:
    results = folder / "results.parquet"
    run = child(["-m", "gdfit", "run", str(job), "--output", str(results)])
    import pyarrow.parquet as pq

    status = pq.read_table(results, columns=["status"]).column("status").to_pylist()
    run["converged"] = sum(s == "converged" for s in status) / groups
    return run


def scipy_side(data: Path, groups: int) -> dict:
    run = child(["-m", "benchmarks.many_fits", "scipy", str(data)])
    run["converged"] = json.loads(run["stdout"].strip().splitlines()[-1])["converged"] / groups
    return run


def scipy_loop(data: Path) -> None:
    """The baseline process: every group through curve_fit from the config's starts."""
    import warnings

    from scipy.optimize import OptimizeWarning, curve_fit

    with np.load(data) as archive:
        compound, dose, response = archive["compound"], archive["dose"], archive["response"]
    order = np.argsort(compound, kind="stable")
    compound, dose, response = compound[order], dose[order], response[order]
    bounds = np.flatnonzero(np.diff(compound)) + 1
    starts = list(START.values())

    def four_pl(x, bottom, top, ec50, hill):
        return bottom + (top - bottom) / (1 + (ec50 / x) ** hill)

    converged = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (OptimizeWarning, RuntimeWarning))
        for x, y in zip(np.split(dose, bounds), np.split(response, bounds)):
            try:
                _, covariance = curve_fit(four_pl, x, y, p0=starts, method="lm", maxfev=200 * 5)
            except RuntimeError:
                continue
            converged += bool(np.isfinite(covariance).all())
    print(json.dumps({"groups": len(bounds) + 1, "converged": converged}))


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}, "
            f"{time.strftime('%Y-%m-%d')}, load {os.getloadavg()[0]:.2f}")


def compare(groups: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data, job = write_job(folder, groups)
        print(f"machine: {machine()}")
        print(f"{groups:,} groups of a 4-parameter logistic, 8-12 points each; {rounds} interleaved rounds\n")
        sides = {"scipy": [], "gdfit": []}
        for r in range(rounds):
            sides["scipy"].append(scipy_side(data, groups))
            sides["gdfit"].append(gdfit_side(job, folder, groups))
            g, s = sides["gdfit"][-1], sides["scipy"][-1]
            print(f"round {r + 1}: gdfit {g['wall_s']:.1f} s ({g['cpu_s']:.1f} s CPU), scipy {s['wall_s']:.1f} s "
                  f"({s['cpu_s']:.1f} s CPU), ratio {s['wall_s'] / g['wall_s']:.2f}x", flush=True)
        print("\n| side | wall s | fits/s (wall) | CPU s | fits per CPU s | peak RSS MiB | converged |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for name, runs in sides.items():
            wall = statistics.median(r["wall_s"] for r in runs)
            cpu = statistics.median(r["cpu_s"] for r in runs)
            print(f"| {name} | {wall:.1f} | {groups / wall:,.0f} | {cpu:.1f} | {groups / cpu:,.0f} | "
                  f"{max(r['peak_mib'] for r in runs):,.0f} | {statistics.median(r['converged'] for r in runs):.1%} |")
        for what in ("wall_s", "cpu_s"):
            ratios = [s[what] / g[what] for g, s in zip(sides["gdfit"], sides["scipy"])]
            median = statistics.median(ratios)
            print(f"\nratio of fits/s by {'wall' if what == 'wall_s' else 'CPU'} time (gdfit over scipy): "
                  f"{median:.2f}x (spread {(max(ratios) - min(ratios)) / median:.0%}); goal >= 50x")


def million(groups: int, max_iters: int) -> None:
    """gdfit alone on `groups` groups: its wall time and peak RSS. With a small `max_iters` the
    memory is a full run's (the same table, batches, statistics and results table), in less time."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _, job = write_job(folder, groups, seed=1, max_iters=max_iters)
        print(f"machine: {machine()}")
        run = gdfit_side(job, folder, groups)
        print(f"\n{groups:,} groups through gdfit (max_iters {max_iters}): {run['wall_s']:.0f} s ({run['cpu_s']:.0f} s CPU), "
              f"{groups / run['wall_s']:,.0f} fits/s, peak RSS {run['peak_mib']:,.0f} MiB (goal: within 4 GiB), "
              f"{run['converged']:.1%} converged")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "scipy":
        scipy_loop(Path(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--million", action="store_true", help="also 10^6 groups through gdfit: time and peak RSS")
    parser.add_argument("--million-groups", type=int, default=1_000_000, help=argparse.SUPPRESS)
    parser.add_argument("--million-iters", type=int, default=200,
                        help="max_iters of the 10^6 run (1 measures its memory in a fraction of the time)")
    parser.add_argument("--skip-compare", action="store_true", help="only the 10^6 run")
    args = parser.parse_args()
    if not args.skip_compare:
        compare(args.groups, args.rounds)
    if args.million:
        print()
        million(args.million_groups, args.million_iters)


if __name__ == "__main__":
    main()
