"""`gdfit plot RESULTS` for many fits: a histogram of each parameter over the converged groups,
or (`--group G`) one group's data with its fitted curve.

RESULTS is the results table of `gdfit run --output` (.csv, .parquet or .json). Its config and
the data file's path come with it (inside a .json and a .parquet; beside a .csv as RESULTS.json),
so that `--group` finds the group's points.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from gdfit.errors import InputFileError

SUFFIXES = (".csv", ".parquet", ".json")
GRID_POINTS = 400


def is_results_table(path: Path) -> bool:
    """A many-fits results table (a run's or sweep's .json document is not one)."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".parquet"):
        return True
    if suffix != ".json" or not path.is_file():
        return False
    try:
        head = path.read_text(encoding="utf-8", errors="replace")[:1_000_000]
        return '"groups":[' in head.replace(" ", "")
    except OSError:
        return False


def read_results(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The table's rows and its document (config, data path, end event)."""
    if not path.is_file():
        raise InputFileError("no such file", source=str(path))
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            document = json.loads(path.read_text(encoding="utf-8"))
            return document.pop("groups"), document
        if suffix == ".parquet":
            from gdfit.files.tables import require_pyarrow

            require_pyarrow("reading .parquet")
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            metadata = (table.schema.metadata or {}).get(b"gdfit")
            return table.to_pylist(), json.loads(metadata) if metadata else {}
        with open(path, encoding="utf-8", newline="") as handle:
            # the group column as written: its labels are text ("007" is not the group 7)
            rows = [{k: v if k == "group" else _cell(v) for k, v in row.items()} for row in csv.DictReader(handle)]
        side = path.with_name(path.name + ".json")
        return rows, json.loads(side.read_text(encoding="utf-8")) if side.is_file() else {}
    except (OSError, ValueError, KeyError) as err:
        raise InputFileError(f"not a results table: {err}", source=str(path)) from None


def _cell(text: str) -> Any:
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def parameter_names(rows: list[dict[str, Any]]) -> list[str]:
    """The parameters: the columns that have a NAME_stderr beside them."""
    names = list(rows[0]) if rows else []
    return [name for name in names if f"{name}_stderr" in names]


def plot_histograms(out: Path, rows: list[dict[str, Any]], source: str) -> None:
    """One histogram per parameter over the converged groups; a log axis for a positive
    parameter that spans two decades or more."""
    from gdfit.pictures.plotting import _pyplot, _save

    names = parameter_names(rows)
    if not names:
        raise InputFileError("holds no parameter columns (NAME and NAME_stderr)", source=source)
    converged = [row for row in rows if row.get("status") == "converged"]
    plt = _pyplot()
    columns = min(len(names), 2)
    lines = math.ceil(len(names) / columns)
    fig, axes = plt.subplots(lines, columns, figsize=(5 * columns, 3.4 * lines), squeeze=False)
    for ax, name in zip(axes.flat, names):
        values = [row[name] for row in converged if isinstance(row[name], (int, float)) and math.isfinite(row[name])]
        log = bool(values) and min(values) > 0 and max(values) / min(values) >= 100
        if log:
            import numpy as np

            bins = np.logspace(math.log10(min(values)), math.log10(max(values)), 40)
            ax.set_xscale("log")
        else:
            bins = 40
        ax.hist(values, bins=bins, color="tab:blue", alpha=0.8)
        ax.set_xlabel(name)
        ax.set_ylabel("groups")
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    fig.suptitle(f"{len(converged):,} of {len(rows):,} groups converged")
    fig.tight_layout()
    _save(fig, out)
    plt.close(fig)


def plot_group(out: Path, rows: list[dict[str, Any]], document: dict[str, Any], group: str, source: str) -> None:
    """One group's observed points and its fitted curve on a fine grid over its x range."""
    import numpy as np

    from gdfit.expr.derivatives import NUMPY_FUNCTIONS
    from gdfit.expr.language import compile_model, names_in, parse
    from gdfit.pictures.plotting import _pyplot, _save

    row = next((r for r in rows if str(r.get("group")) == group), None)
    if row is None:
        raise InputFileError(f"no group {group!r} in the results", source=source, key="--group")
    config = document.get("config")
    if not config or "data" not in document:
        raise InputFileError("the results do not say which data they fitted (for a .csv, RESULTS.json beside it)",
                             source=source, key="--group")
    from gdfit.files.tables import read_grouped

    names = parameter_names(rows)
    table = read_grouped(Path(document["data"]), config["data"]["group"], lambda n: None)
    tree = parse(config["model"]["expr"], key="model.expr", names=set(names) | set(table.names))
    used = [name for name in table.columns if name in names_in(tree)]
    if len(used) != 1:
        raise InputFileError(f"--group draws curves of one data column; the expression uses {', '.join(used)}",
                             source=source, key="--group")
    position = next(i for i, label in enumerate(table.labels) if str(label) == group)
    rows_of = slice(table.bounds[position], table.bounds[position + 1])
    x, y = table.columns[used[0]][rows_of], table.columns[config["target"]["column"]][rows_of]
    keep = ~np.isnan(y)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(x[keep], y[keep], "o", color="tab:blue", label="data")
    finite = x[keep][np.isfinite(x[keep])]
    values = {name: row[name] for name in names}
    if len(finite) and all(isinstance(v, (int, float)) for v in values.values()):
        low, high = float(finite.min()), float(finite.max())
        log = low > 0 and high / low >= 100
        grid = np.logspace(math.log10(low), math.log10(high), GRID_POINTS) if log else np.linspace(low, high, GRID_POINTS)
        fn = compile_model(tree, NUMPY_FUNCTIONS)
        with np.errstate(all="ignore"):
            curve = np.broadcast_to(fn({**values, used[0]: grid}), grid.shape)
        ax.plot(grid, curve, color="tab:red", label="fit")
        if log:
            ax.set_xscale("log")
    ax.set_xlabel(used[0])
    ax.set_ylabel(config["target"]["column"])
    fitted = ", ".join(f"{n} {values[n]:.4g}" for n in names if isinstance(values[n], (int, float)))
    ax.set_title(f"group {group}: {row['status']}" + (f" ({fitted})" if fitted else ""), fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    _save(fig, out)
    plt.close(fig)
