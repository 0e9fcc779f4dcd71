"""`fit_groups`: many fits at once (a config whose data has a `group` column), as `gdfit run`
runs them, without printing."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from gdfit.api.source import ConfigLike, SetLike, resolve
from gdfit.errors import ConfigError


@dataclass(frozen=True)
class GroupsResult:
    """The outcome of `gdfit.fit_groups`: one `group` event per group, in the table's order, as
    `gdfit run --json` streams them (`group`, `status`, `iters`, `loss`, `params` with `value`
    and `stderr`, `fit`), and the `end` event's counts and speed."""

    groups: list[dict[str, Any]]
    by_status: dict[str, int]
    elapsed_s: float
    fits_per_s: float | None
    columns: dict[str, Any] = field(repr=False)  # the --output table as columns

    def to_dict(self) -> dict[str, Any]:
        """The end event's fields and the group events."""
        return {"groups": len(self.groups), "by_status": self.by_status, "elapsed_s": self.elapsed_s,
                "fits_per_s": self.fits_per_s, "results": self.groups}


def fit_groups(config: ConfigLike, *, set: SetLike = None, backend: str = "local", address: str | None = None,
               **overrides: Any) -> GroupsResult:
    """One independent fit per group of a grouped table (`data: {file, group: COLUMN}`).

    Args:
        config: as for `fit`; its `data` names a `group` column.
        set: dotted-key overrides, as for `fit`.
        backend: `local` (this process) or `dask` (a cluster on 127.0.0.1, or `address`).
        **overrides: top-level config keys.

    Raises:
        ConfigError: the config is invalid or has no group column.
        InputFileError: the table cannot be read (a missing group column, text in a number column).
    """
    from gdfit.render.groups_view import end_event, group_event, results_columns
    from gdfit.sweeps.groups import UNFITTED, execute, load_job, merge

    resolved = resolve(config, set, overrides)
    data = resolved.config.data
    if data is None or data.group is None:
        raise ConfigError("fit_groups needs a grouped table: data: {file: PATH, group: COLUMN}",
                          source=resolved.source, key="data.group")
    with resolved.locating():
        job = load_job(resolved)
    parts, fitted = [], 0
    started = time.perf_counter()
    for item in execute(job, lambda: False, frozenset(), backend, address):
        if not isinstance(item, int):  # ints are progress counts
            parts.append(item)
            fitted += sum(status not in UNFITTED for status in item.status)
    elapsed = time.perf_counter() - started
    results = merge(parts)
    labels, order = job.table.labels, job.spec.order
    end = end_event(dict(Counter(results.status)), job.total, elapsed, fitted)
    events = [group_event(labels[g], order, results, i) for i, g in enumerate(results.indices)]
    return GroupsResult(events, end["by_status"], elapsed, end["fits_per_s"], results_columns(labels, order, results))
