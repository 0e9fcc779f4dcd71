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
in brackets the spread of the per-round ratios, (max - min) / median. A second row gives the
same rounds' CPU time (user + system) of each gdfit process: on a busy shared machine it moves
less with the neighbours' load than the wall-clock time does (the goal is read on the first).
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

from benchmarks.run import GDFIT, ROOT, SEED, Times, Timer, interleave, machine, print_table, row

GOAL = "<= 1.3x"


def command(every: int, updates: int, lr: str) -> list[str]:
    return GDFIT + ["run", SEED, "--set", "threshold=0", "--set", f"learning_rate={lr}", "--max-iters", str(updates),
                    "--json", "--every", str(every)]


def streamed(cmd: list[str], expected: int, updates: int, sink: str, folder: Path, cpu: list[float]) -> Timer:
    """A timer for one whole process (wall-clock seconds; its CPU seconds, user and system, go to
    `cpu`); its output is checked: the number of lines, and the run's length from its end event."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def timer() -> float:
        started = time.perf_counter()
        if sink == "pipe":
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
            lines, last = _drain(proc.stdout.fileno())
        else:
            path = folder / "stdout.jsonl"
            with open(path, "wb") as out:
                proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.DEVNULL, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        cpu.append(usage.ru_utime + usage.ru_stime)
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
    cpu: dict[str, list[float]] = {"quiet": [], "stream": []}
    with tempfile.TemporaryDirectory() as tmp:
        times = interleave({
            "quiet": streamed(command(0, args.updates, args.lr), 2, args.updates, args.sink, Path(tmp), cpu["quiet"]),
            "stream": streamed(command(1, args.updates, args.lr), args.updates + 2, args.updates, args.sink, Path(tmp),
                               cpu["stream"]),
        }, args.rounds)
    run = f"3x3, {args.updates:,} updates, lr {args.lr}: `--json --every 1` (PYTHONUNBUFFERED=1, {args.sink})"
    rows = [row(times, run, "stream", "quiet", "`--every 0`", GOAL),
            row(Times({name: seconds[1:] for name, seconds in cpu.items()}),  # the warm-up round left out
                "  the same rounds, CPU time (user + system)", "stream", "quiet", "`--every 0`", "(context)")]
    print_table(rows, before, f"{args.rounds} interleaved rounds after one warm-up")


if __name__ == "__main__":
    main()
