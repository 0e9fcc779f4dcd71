"""Many fits at once, as the user sees them: a `group` event per finished group and the `end`
event (JSON Lines), or a progress bar and a summary (rich); and the results table (--output).

The results table has one row per group, in the table's order: `group`, `status`, `iters`,
`loss`, each parameter as NAME and NAME_stderr, then `n`, `dof`, `chi2`, `reduced_chi2`, `r2`,
`aic`, `bic`. A missing number is empty in CSV, null in Parquet and JSON.
"""

from __future__ import annotations

import math
import sys
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any, Callable

import numpy as np

from gdfit.render.jsonl import dumps

TABLE_FIT = ("n", "dof", "chi2", "reduced_chi2", "r2", "aic", "bic")
EVENT_FIT = ("n", "p", "dof", "rss", "residual_std", "chi2", "reduced_chi2", "r2", "aic", "bic")
INTEGERS = ("n", "p", "dof")
SHOWN_FAILURES = 20  # groups listed by name in the human summary; the rest are counted


def _number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _fit_value(name: str, value: float) -> int | float | None:
    if not math.isfinite(value):
        return None
    return int(value) if name in INTEGERS else float(value)


def group_event(label: Any, order: tuple[str, ...], results, i: int) -> dict[str, Any]:
    """The `group` event of row i of a GroupResults."""
    params = {name: {"value": _number(results.values[i, j]), "stderr": _number(results.stderr[i, j])}
              for j, name in enumerate(order)}
    return {"event": "group", "group": label, "status": results.status[i], "iters": int(results.iters[i]),
            "loss": _number(results.loss[i]), "params": params,
            "fit": {name: _fit_value(name, results.fit[name][i]) for name in EVENT_FIT}}


def end_event(by_status: dict[str, int], groups: int, elapsed_s: float, fitted: int) -> dict[str, Any]:
    """The `end` event: counts by status, the time in the fits, and fits per second (of the groups
    this process fitted)."""
    return {"event": "end", "groups": groups, "by_status": dict(sorted(by_status.items())),
            "elapsed_s": elapsed_s, "fits_per_s": fitted / elapsed_s if elapsed_s > 0 else None}


def results_columns(labels: list[Any], order: tuple[str, ...], results) -> dict[str, Any]:
    """The results table as columns (results merged and in the table's order): lists for the
    group, status and counts, float64 arrays (NaN where missing) for the figures, so that a
    million groups do not become twenty million Python floats."""
    columns: dict[str, Any] = {
        "group": [labels[g] for g in results.indices],
        "status": list(results.status),
        "iters": [int(k) for k in results.iters],
        "loss": _finite(np.asarray(results.loss, dtype=np.float64)),
    }
    for j, name in enumerate(order):
        columns[name] = _finite(results.values[:, j])
        columns[f"{name}_stderr"] = _finite(results.stderr[:, j])
    for name in TABLE_FIT:
        values = results.fit[name]
        columns[name] = [None if not math.isfinite(v) else int(v) for v in values.tolist()] if name in INTEGERS \
            else _finite(values)
    return columns


def _finite(values: np.ndarray) -> np.ndarray:
    """Non-finite numbers as NaN: missing in every format (JSON has no infinities)."""
    return np.where(np.isfinite(values), values, math.nan)


def _plain(values: Any) -> list:
    """A column as JSON values: NaN and infinities are null."""
    if isinstance(values, np.ndarray):
        return [v if math.isfinite(v) else None for v in values.tolist()]
    return list(values)


def write_results(path: Path, columns: dict[str, list], document: dict[str, Any]) -> None:
    """The results table at `path` (.csv, .parquet or .json), atomically. `document` (the config and
    the end event) goes inside a .json and a .parquet (its schema metadata `gdfit`), and beside a
    .csv as PATH.json, so that `gdfit plot` finds the data."""
    from gdfit.files.tables import table_bytes
    from gdfit.files.writing import write_atomic

    suffix = path.suffix.lower()
    if suffix == ".json":
        rows = [dict(zip(columns, row)) for row in zip(*(_plain(values) for values in columns.values()))]
        write_atomic(path, dumps({**document, "groups": rows}) + "\n")
        return
    write_atomic(path, table_bytes(path, columns, {"gdfit": dumps(document)}))
    if suffix == ".csv":
        write_atomic(sidecar(path), dumps(document) + "\n")


def sidecar(path: Path) -> Path:
    """Where a CSV results table's config and summary are kept."""
    return path.with_name(path.name + ".json")


# ---------------------------------------------------------------- JSON Lines


class GroupJsonLines:
    """`start`, a `group` event per finished group, `end`: strict JSON, one object a line."""

    def __init__(self, out: IO[str] = sys.stdout) -> None:
        self.out = out

    def start(self, event: dict[str, Any]) -> None:
        self._write(dumps(event) + "\n")

    def progress(self, done: int, total: int) -> None:
        """Nothing: every group gets its own event."""

    def groups(self, labels: list[Any], order: tuple[str, ...], results) -> None:
        self._write("".join(dumps(group_event(labels[g], order, results, i)) + "\n"
                            for i, g in enumerate(results.indices)))

    def end(self, event: dict[str, Any], summary: dict[str, Any]) -> None:
        self._write(dumps(event) + "\n")

    def abort(self) -> None:
        """Nothing to close."""

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()


# ---------------------------------------------------------------- rich


class GroupHuman:
    """A progress bar (groups done, fits per second, time left), then the summary: counts by
    status, each parameter's median and interquartile range over the converged groups, and the
    groups that did not converge."""

    def __init__(self, console=None, clock: Callable[[], float] = time.monotonic) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = console or Console()
        self.progress_bar = Progress(TextColumn("fitting"), BarColumn(), MofNCompleteColumn(), TextColumn("groups"),
                                     TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=self.console,
                                     transient=True, get_time=clock)
        self.task = None
        self.clock, self.started, self.base = clock, clock(), 0
        self.failed: list[tuple[Any, str]] = []
        self.failed_count = 0

    def start(self, event: dict[str, Any]) -> None:
        self.total = event["groups"]
        self.base = event.get("resumed", 0)
        self.console.print(f"[bold]{event['groups']:,} groups[/] of {event['source']} "
                           f"({event['fitted']:,} to fit, in {event['batches']:,} batches of up to "
                           f"{event['batch_size']:,}) on {event['device']}, {event['dtype']}"
                           + (f"; {event['resumed']:,} done before" if event.get("resumed") else ""))
        self.task = self.progress_bar.add_task("fit", total=self.total, completed=self.base, rate="")
        self.progress_bar.start()

    def progress(self, done: int, total: int) -> None:
        elapsed = self.clock() - self.started
        rate = f"{(done - self.base) / elapsed:,.0f} fits/s" if elapsed > 0 and done > self.base else ""
        self.progress_bar.update(self.task, completed=done, rate=rate)

    def groups(self, labels: list[Any], order: tuple[str, ...], results) -> None:
        for i, status in enumerate(results.status):
            if status != "converged":
                self.failed_count += 1
                if len(self.failed) < SHOWN_FAILURES:
                    self.failed.append((labels[results.indices[i]], status))

    def end(self, event: dict[str, Any], summary: dict[str, Any]) -> None:
        self.progress_bar.stop()
        self.console.print(summary_tables(event, summary, self.failed, self.failed_count))

    def abort(self) -> None:
        self.progress_bar.stop()


def parameter_summary(order: tuple[str, ...], results) -> dict[str, dict[str, float | None]]:
    """Each parameter's median, first and third quartile over the converged groups."""
    converged = np.array([s == "converged" for s in results.status], dtype=bool)
    summary = {}
    for j, name in enumerate(order):
        values = results.values[converged, j]
        values = values[np.isfinite(values)]
        if len(values):
            q1, median, q3 = np.percentile(values, [25, 50, 75]).tolist()
        else:
            q1 = median = q3 = None
        summary[name] = {"median": median, "q1": q1, "q3": q3}
    return summary


def summary_tables(event: dict[str, Any], summary: dict[str, Any], failed: list[tuple[Any, str]], failed_count: int):
    """The closing summary as rich renderables."""
    from rich.console import Group
    from rich.table import Table

    counts = Table(title="groups by status", title_justify="left")
    counts.add_column("status")
    counts.add_column("groups", justify="right")
    counts.add_column("share", justify="right")
    total = max(event["groups"], 1)
    for status, count in Counter(event["by_status"]).most_common():
        counts.add_row(status, f"{count:,}", f"{100 * count / total:.1f}%")
    params = Table(title="parameters over the converged groups", title_justify="left")
    for name in ("parameter", "median", "q1", "q3", "IQR"):
        params.add_column(name, justify="left" if name == "parameter" else "right")
    for name, row in summary["params"].items():
        cells = [row["median"], row["q1"], row["q3"],
                 row["q3"] - row["q1"] if row["q1"] is not None else None]
        params.add_row(name, *("-" if v is None else f"{v:.6g}" for v in cells))
    rate = event.get("fits_per_s")
    lines = [counts, params]
    if failed:
        listed = ", ".join(f"{label} ({status})" for label, status in failed)
        more = f" and {failed_count - len(failed):,} more" if failed_count > len(failed) else ""
        lines.append(f"not converged: {listed}{more}")
    lines.append(f"{event['groups']:,} groups in {event['elapsed_s']:.2f} s"
                 + (f", {rate:,.0f} fits/s" if rate else ""))
    return Group(*lines)
