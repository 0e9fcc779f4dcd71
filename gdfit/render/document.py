"""The --output result document, written atomically (temp file in the same folder + os.replace)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gdfit import records
from gdfit.files.writing import write_atomic
from gdfit.render.jsonl import dumps, end_fields

HISTORY_POINTS = 100_000


def thin(history: list[float], limit: int = HISTORY_POINTS) -> dict[str, list]:
    """Iteration numbers and losses; past `limit` points, evenly spaced ones, first and last kept."""
    n = len(history)
    if n <= limit:
        return {"iter": list(range(n)), "loss": list(history)}
    picks = sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})
    return {"iter": picks, "loss": [history[i] for i in picks]}


def result_document(result: records.FitResult, config: dict[str, Any]) -> dict[str, Any]:
    """The end event's fields at top level, plus the resolved config and the loss history."""
    return {**end_fields(result), "config": config, "history": thin(result.history)}


def write_document(path: Path, result: records.FitResult, config: dict[str, Any]) -> None:
    write_atomic(path, dumps(result_document(result, config)) + "\n")
