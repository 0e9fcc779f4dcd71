"""A sweep journal's lines checked against its grid before they are trusted: each must be a run
event of a run of this grid (its index in range, its params that index's values), with a known
status, whole-number iters and a numeric loss. The first record of a run is kept; a repeat, or a
line that fails a check, is left out and reported, and a resume runs that run again."""

from __future__ import annotations

import math
from typing import Any

from gdfit import records
from gdfit.errors import InputFileError
from gdfit.sweeps.grid import MAX_RUNS
from gdfit.words import plural


class BadLine(ValueError):
    """Why a journal line is not a record of this sweep (plain words)."""


def check_grid(grid: Any, total: Any, source: str) -> None:
    """The saved grid is a mapping of value lists whose runs number `total`, within the run limit."""
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise InputFileError("config.json: grid is not a mapping of value lists", source=source)
    count = math.prod(len(v) for v in grid.values())
    if count > MAX_RUNS:
        raise InputFileError(f"config.json: the grid has {count:,} runs; at most {MAX_RUNS:,}", source=source)
    if not isinstance(total, int) or isinstance(total, bool) or total != count:
        raise InputFileError(f"config.json: runs is {total!r}, but its grid has {plural(count, 'run')}", source=source)


def params_at(grid: dict[str, list[Any]], index: int) -> dict[str, Any]:
    """The values run `index` takes, in the grid's order (the last key changes fastest)."""
    values = {}
    for key in reversed(list(grid)):
        index, position = divmod(index, len(grid[key]))
        values[key] = grid[key][position]
    return {key: values[key] for key in grid}


def read_line(event: Any, grid: dict[str, list[Any]], total: int) -> tuple[int, dict[str, Any]]:
    """(index, event) of a valid run line; BadLine says what is wrong with any other."""
    if not isinstance(event, dict) or event.get("event") != "run":
        raise BadLine("not a run event")
    index = event.get("index")
    if not isinstance(index, int) or isinstance(index, bool):
        raise BadLine(f"index {index!r} is not a whole number")
    if not 0 <= index < total:
        raise BadLine(f"run index {index} is outside the grid's {plural(total, 'run')}")
    if event.get("params") != params_at(grid, index):
        raise BadLine(f"params {event.get('params')!r} are not run {index}'s {params_at(grid, index)!r}")
    if event.get("status") not in records.STATUSES or event.get("status") == records.INTERRUPTED:
        raise BadLine(f"status {event.get('status')!r} is not one a finished run has")
    iters = event.get("iters")
    if not isinstance(iters, int) or isinstance(iters, bool) or iters < 0:
        raise BadLine(f"iters {iters!r} is not a whole number >= 0")
    loss = event.get("loss")
    if "loss_text" in event:
        try:
            float(event["loss_text"])
        except (TypeError, ValueError):
            raise BadLine(f"loss_text {event['loss_text']!r} is not a number") from None
    elif loss is not None and (not isinstance(loss, (int, float)) or isinstance(loss, bool)):
        raise BadLine(f"loss {loss!r} is not a number")
    return index, event


def left_out(problems: list[str], path: str, limit: int = 3) -> str:
    """One warning for the lines left out: how many, the first few, and what happens to their runs."""
    shown = "; ".join(problems[:limit]) + ("; ..." if len(problems) > limit else "")
    return (f"{path}: {plural(len(problems), 'line')} left out ({shown}); the first record of each run is kept, "
            "and runs without one run again on --resume")
