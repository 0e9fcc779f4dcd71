"""What `gdfit plot` accepts as a saved result: a run's history of numbers, or a sweep's runs with
their swept values, statuses and update counts. Anything else is refused with the field it is in,
before matplotlib sees it (and says so in its own words, or draws an empty picture)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from gdfit.errors import InputFileError


def _number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def check_saved(document: dict[str, Any], path: Path) -> dict[str, Any]:
    """The document itself when its fields can be drawn; an InputFileError naming the field if not."""
    source = str(path)
    if "runs" in document:
        _check_sweep(document, source)
    else:
        _check_history(document.get("history"), source)
    return document


def _check_history(history: Any, source: str) -> None:
    if isinstance(history, dict):
        iters, losses = history.get("iter"), history.get("loss")
        if not isinstance(iters, list) or not isinstance(losses, list) or len(iters) != len(losses):
            raise InputFileError("history must hold lists iter and loss of one length", source=source, key="history")
        bad = next((i for i in iters if not isinstance(i, int) or isinstance(i, bool)), None)
        if bad is not None:
            raise InputFileError(f"history.iter holds {bad!r}; expected update numbers", source=source, key="history")
    elif isinstance(history, list):
        losses = history
    else:
        raise InputFileError(f"history is {type(history).__name__}; expected a list of losses", source=source,
                             key="history")
    bad = next((v for v in losses if not _number(v)), None)
    if bad is not None:
        raise InputFileError(f"history holds {bad!r}; expected losses (numbers)", source=source, key="history")
    if not any(v is not None and math.isfinite(v) and v > 0 for v in losses):
        raise InputFileError("history holds no finite loss above 0 to draw on a log axis", source=source,
                             key="history")


def _check_sweep(document: dict[str, Any], source: str) -> None:
    runs, grid = document.get("runs"), document.get("grid")
    if not isinstance(grid, dict) or not all(isinstance(v, list) for v in grid.values()):
        raise InputFileError("grid must map each swept key to its list of values", source=source, key="grid")
    if not isinstance(runs, list) or not runs:
        raise InputFileError("runs must be a list of the sweep's runs", source=source, key="runs")
    for number, run in enumerate(runs):
        where = f"runs[{number}]"
        if not isinstance(run, dict) or not isinstance(run.get("params"), dict):
            raise InputFileError("is not a run with its params", source=source, key=where)
        missing = [key for key in grid if key not in run["params"]]
        if missing:
            raise InputFileError(f"params lack the swept key {missing[0]!r}", source=source, key=where)
        if not isinstance(run.get("status"), str):
            raise InputFileError(f"status is {run.get('status')!r}; expected a status name", source=source, key=where)
        iters = run.get("iters")
        if iters is not None and (not isinstance(iters, int) or isinstance(iters, bool)):
            raise InputFileError(f"iters is {iters!r}; expected an update count", source=source, key=where)
    config = document.get("config")
    if not isinstance(config, dict):
        raise InputFileError("config must be the sweep's resolved config", source=source, key="config")
