"""Building problems in tests without the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gdfit.config import build_config
from gdfit.engine import Descent, every_n, prepare


def resolved(**data: Any):
    data.setdefault("device", "cpu")
    return build_config(data, source="test", base_dir=Path("."))


def fit(engine: str = "fused", every: int = 1, **data: Any):
    """Run a config dict to the end; returns (steps, result, descent)."""
    problem = prepare(resolved(engine=engine, **data))
    descent = Descent(problem, report=every_n(every))
    steps = list(descent.steps())
    return steps, descent.result, descent


def run_to_end(loop):
    """Run a loop, ignoring what the host sees on the way; returns its outcome."""
    for _ in loop.chunks():
        pass
    return loop.outcome
