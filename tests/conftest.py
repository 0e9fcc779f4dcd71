"""Shared helpers: run the real CLI in-process (captured streams) or as a subprocess."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# tests elsewhere reuse test_curvefit's helpers (run_fit, write_data): importable whatever runs first
sys.path.insert(0, str(Path(__file__).resolve().parent / "curves"))
SEED_TARGET = [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]]
# The tutorial's printed tensor at count 1 (4 decimals as printed).
COUNT_1 = [[0.2943, 0.1191, 0.7827], [0.3981, 0.4318, 0.5430], [0.5266, 0.1810, 0.5937]]


def strict_json(line: str):
    """json.loads that refuses NaN and Infinity tokens, as RFC 8259 does."""

    def refuse(token: str):
        raise ValueError(f"non-strict JSON token {token}")

    return json.loads(line, parse_constant=refuse)


@dataclass
class CliResult:
    exit_status: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[dict]:
        return [strict_json(line) for line in self.stdout.splitlines() if line.strip()]

    @property
    def json(self):
        return strict_json(self.stdout)


def run_cli(*args: str, stdin: str = "", monkeypatch=None) -> CliResult:
    """The real `main()` with injected stdin/stdout/stderr."""
    from gdfit.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = io.StringIO(stdin), out, err
    try:
        status = main(list(args))
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
    return CliResult(status, out.getvalue(), err.getvalue())


def run_process(*args: str, stdin: str | None = None, timeout: float = 120, env: dict | None = None) -> CliResult:
    """`python -m gdfit ARGS` as a real process."""
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "gdfit", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=full_env,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def write_config(tmp_path):
    """Write YAML text to a file and return its path as a string."""

    def write(text: str, name: str = "config.yaml") -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return write
