"""`sweep`: many runs of a config over a grid of keys, in batched tensors, as `gdfit sweep` runs them."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from gdfit import records
from gdfit.api.result import SweepResult
from gdfit.api.source import ConfigLike, SetLike, merge
from gdfit.config import RawConfig
from gdfit.errors import GdfitError


def grid_runs(raw: RawConfig, items: list[str] = (), values: Mapping[str, Any] | None = None) -> tuple[list, dict]:
    """The runs of a merged config's grid (its `sweep:` section < `--grid` items < `grid=` values),
    each validated, in grid order; and the grid. `gdfit sweep` builds its runs here too."""
    from gdfit.sweeps.grid import expand, parse_grid

    grid = parse_grid(list(items), raw.data.get("sweep"), raw.source, dict(values or {}))
    return list(expand(raw.data, grid, raw.source, raw.base_dir)), grid


def sweep(
    config: ConfigLike,
    grid: Mapping[str, Any] | None = None,
    *,
    set: SetLike = None,
    backend: str = "local",
    address: str | None = None,
    **overrides: Any,
) -> SweepResult:
    """Run every combination of `grid` (and of the config's `sweep:` section) and return them all.

    Args:
        config: as for `fit`.
        grid: key (dotted for nested ones) to values: a list, or the text `--grid` takes
            (`"logspace(1e-2,10,16)"`, `"0..15"`, `"0.5,1,4.5"`).
        set: as for `fit`.
        backend: `"local"` (batches in this process) or `"dask"` (needs `gdfit[dask]`).
        address: a Dask scheduler to join; without one, `dask` starts a cluster on 127.0.0.1.
        **overrides: top-level config keys.

    Returns:
        A `SweepResult`; `to_dict()` is what `gdfit sweep ... --output result.json` writes.
    """
    from gdfit.render.sweep_view import document
    from gdfit.sweeps.backends import execute, require_dask
    from gdfit.sweeps.grid import best_run, fits_parameters

    if backend not in ("local", "dask"):
        raise GdfitError(f"unknown backend {backend!r}; choose local or dask", key="backend")
    if backend == "dask":
        require_dask()
    runs, parsed = grid_runs(merge(config, set, overrides), values=grid)
    started = time.perf_counter()
    items = execute(runs, records.X_LIMIT, lambda: False, backend=backend, address=address)
    plan: records.SweepPlan = next(items)
    results: list[records.RunRecord] = []
    for item in items:
        if isinstance(item, list):
            results = item
    elapsed = time.perf_counter() - started
    resolved = runs[0].resolved.config.model_dump(mode="json")
    best = best_run(results, fits_parameters(resolved))
    return SweepResult(results, parsed, resolved, plan, best, elapsed,
                       document(plan, resolved, parsed, results, best, elapsed))
