"""What streaming every update as JSON Lines costs a whole `gdfit run` process (issue 17).

usage: python -m benchmarks.streaming [--rounds N] [--updates N] [--lr RATE] [--sink pipe|file]

The seed's problem (configs/seed.yaml) with threshold 0, so that it never converges and makes
exactly `--updates` updates (checked from each run's `end` event), at learning rate 1e-4 (as
benchmarks/run.py's 3x3 figures), so that x still moves in every update: at the seed's rate
1.0, x stops changing in float32 after a few hundred updates, and the rest of the run would
stream the same x over and over. It runs as two processes:
`--json --every 1` (a step line per update) against `--json --every 0` (start and end only),
both with PYTHONUNBUFFERED=1 (what `python -u`, many process supervisors and CI runners set:
without gdfit's own buffering every line would cost a write call). Their stdout goes to a pipe
that this script drains as a reader such as `jq` would (`--sink pipe`, the default), or to a file
(`--sink file`). Rounds are interleaved as in benchmarks/run.py (one untimed warm-up, then
`--every 0`, `--every 1`, `--every 0`, ...); the row gives each side's median, their ratio and
in brackets the spread of the per-round ratios, (max - min) / median.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.run import GDFIT, ROOT, SEED, Row, Timer, interleave, machine, row

GOAL = "<= 1.3x"


def command(every: int, updates: int, lr: str) -> list[str]:
    return GDFIT + ["run", SEED, "--set", "threshold=0", "--set", f"learning_rate={lr}", "--max-iters", str(updates),
                    "--json", "--every", str(every)]


def streamed(every: int, updates: int, lr: str, sink: str, folder: Path) -> Timer:
    """A timer for one whole process; its output is checked: every line, and the run's length."""
    expected = updates + 2 if every == 1 else 2  # start, a step per update, end
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def timer() -> float:
        started = time.perf_counter()
        if sink == "pipe":
            proc = subprocess.Popen(command(every, updates, lr), cwd=ROOT, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, env=env)
            lines, last = _drain(proc.stdout.fileno())
            proc.wait()
        else:
            path = folder / f"every{every}.jsonl"
            with open(path, "wb") as out:
                proc = subprocess.run(command(every, updates, lr), cwd=ROOT, stdout=out, stderr=subprocess.DEVNULL,
                                      env=env, check=False)
        elapsed = time.perf_counter() - started
        if sink == "file":
            text = path.read_bytes()
            lines, last = text.count(b"\n"), text.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        _check(proc.returncode, lines, last, expected, updates)
        return elapsed

    return timer


def _drain(fd: int) -> tuple[int, bytes]:
    """Read a pipe to its end as a line reader would; the number of lines and the last one."""
    lines, tail = 0, b""
    while chunk := os.read(fd, 1 << 16):
        lines += chunk.count(b"\n")
        tail = (tail + chunk)[-4096:]
    os.close(fd)
    return lines, tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]


def _check(code: int, lines: int, last: bytes, expected: int, updates: int) -> None:
    end = json.loads(last)
    if code != 1 or lines != expected or end.get("event") != "end" or end.get("iters") != updates:
        raise SystemExit(f"unexpected run: exit {code}, {lines} lines (expected {expected}), last line {last[:200]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds after one warm-up (default 7)")
    parser.add_argument("--updates", type=int, default=100_000, help="updates per run (default 100,000)")
    parser.add_argument("--lr", default="1e-4", help="learning rate (default 1e-4; the seed's own is 1.0)")
    parser.add_argument("--sink", choices=("pipe", "file"), default="pipe",
                        help="where stdout goes: a pipe this script drains (default), or a file")
    args = parser.parse_args()
    before = machine()
    with tempfile.TemporaryDirectory() as tmp:
        times = interleave({
            "quiet": streamed(0, args.updates, args.lr, args.sink, Path(tmp)),
            "stream": streamed(1, args.updates, args.lr, args.sink, Path(tmp)),
        }, args.rounds)
    measure = f"3x3, {args.updates:,} updates, lr {args.lr}: `--json --every 1` (PYTHONUNBUFFERED=1, {args.sink})"
    result: Row = row(times, measure, "stream", "quiet", "`--every 0`", GOAL)
    after = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"{before} (at the start; {after} at the end); {args.rounds} interleaved rounds after one warm-up")
    print()
    print("| measure | gdfit | baseline | baseline time | ratio (spread) | goal | met |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {result.measure} | {result.ours} | {result.baseline} | {result.baseline_time} | "
          f"{result.ratio:.2f}x ({result.spread:.0%}) | {result.goal} | {result.met()} |")


if __name__ == "__main__":
    main()
