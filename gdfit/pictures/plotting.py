"""Loss curves and sweep plots with matplotlib (the optional `plot` extra), Agg backend.

The series functions are plain data transformations, tested against the run's history;
the drawing functions only draw them.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from gdfit.config.curves import curve_text
from gdfit.errors import InputFileError, MissingExtraError, OutputError
from gdfit.render.saved import check_saved
from gdfit.words import plural

FORMATS = (".png", ".svg", ".pdf")
INSTALL_HINT = "pip install 'gdfit[plot]'   (in a checkout: .venv/bin/pip install -e '.[plot]')"


def require_matplotlib() -> None:
    """Exit 2 with the install command when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MissingExtraError("plotting needs matplotlib, which is not installed", key="--plot",
                                hint=INSTALL_HINT) from None


def check_format(path: Path) -> None:
    if path.suffix.lower() not in FORMATS:
        raise OutputError(f"cannot tell the image format from {path.suffix or 'no extension'!r}; "
                          f"use one of {', '.join(FORMATS)}", source=str(path), key="--plot")


def loss_series(history: Any) -> tuple[list[int], list[float]]:
    """(iterations, losses) from a history: a list (index = update) or {"iter": [...], "loss": [...]}.
    Points a log axis cannot show (loss <= 0, NaN, infinite) are left out."""
    if isinstance(history, dict):
        iters, losses = history["iter"], history["loss"]
    else:
        iters, losses = list(range(len(history))), history
    keep = [(i, v) for i, v in zip(iters, losses) if isinstance(v, (int, float)) and math.isfinite(v) and v > 0]
    return [i for i, _ in keep], [float(v) for _, v in keep]


def numeric_key(grid: dict[str, list]) -> str | None:
    """The first swept key whose every value is a number: the sweep plot's x axis."""
    return next((k for k, values in grid.items()
                 if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)), None)


def sweep_series(document: dict[str, Any]) -> dict[str, Any]:
    """Updates to converge against the first numeric swept key; diverged and unfinished runs apart."""
    runs = document["runs"]
    key = numeric_key(document["grid"])
    if key is None:
        raise InputFileError("the sweep has no numeric key to put on the x axis", key="grid")
    series: dict[str, Any] = {"key": key, "converged": ([], []), "diverged": [], "other": []}
    for run in sorted(runs, key=lambda r: r["params"][key]):
        x = run["params"][key]
        if run["status"] == "converged":
            series["converged"][0].append(x)
            series["converged"][1].append(run["iters"])
        elif run["status"] == "diverged":
            series["diverged"].append(x)
        else:
            series["other"].append(x)
    values = [v for v in document["grid"][key] if v > 0]
    series["log_x"] = bool(values) and min(values) > 0 and max(values) / min(values) >= 100
    return series


def _pyplot():
    require_matplotlib()
    # matplotlib's (and numpy's) remarks on odd data, with their source lines, are not the user's
    # to read: what gdfit draws was checked before (gdfit.render.saved); this runs at a command's end
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    from gdfit.files.writing import write_atomic
    import io

    from gdfit.engine.interrupts import pause_point

    check_format(path)
    pause_point("plot")
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # matplotlib's remarks on odd data are not the user's to read
        warnings.simplefilter("ignore")
        fig.savefig(buffer, format=path.suffix.lower().lstrip("."), bbox_inches="tight")
    write_atomic(path, buffer.getvalue(), key="--plot")  # `gdfit plot` says --output (commands.plot)


def _caption(config: dict[str, Any], swept: tuple[str, ...] = ()) -> str:
    parts = [] if "learning_rate" in swept else [f"lr {config['learning_rate']:g}"]
    parts += [f"optimizer {config['optimizer']['name']}", f"loss {config['loss']['name']}",
              f"threshold {config['threshold']:g}"]
    return ", ".join(parts)


def plot_runs(path: Path, runs: list[dict[str, Any]]) -> None:
    """Loss against update (log y) for one or more runs: {label, history, config, status}."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for run in runs:
        iters, losses = loss_series(run["history"])
        # a run saved with --every 0 has only its start and end: points, not a made-up path
        style = {"marker": "o", "linestyle": ":"} if run.get("sparse") else {"marker": "." if len(iters) <= 60 else None}
        ax.plot(iters, losses, label=run["label"], **style)
    ax.set_yscale("log")
    ax.set_xlabel("update")
    ax.set_ylabel("loss")
    thresholds = {run["config"]["threshold"] for run in runs if run.get("config")}
    for threshold in thresholds:
        if threshold > 0:
            ax.axhline(threshold, color="grey", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    if len(runs) == 1:
        run = runs[0]
        ax.set_title(f"gdfit: {run['status']} after {plural(run['iters'], 'update')}")
        if run.get("config"):
            fig.text(0.01, -0.02, _caption(run["config"]), fontsize=9, color="dimgrey")
    else:
        ax.set_title("gdfit: loss curves")
    if len(runs) == 1 and runs[0].get("holdout"):
        _holdout_axis(ax, runs[0]["holdout"])
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    _save(fig, path)
    plt.close(fig)


def _holdout_axis(ax, points: list[tuple[int, float]]) -> None:
    """The held-out RMSE at the reported updates, on its own log axis at the right."""
    keep = [(k, v) for k, v in points if math.isfinite(v) and v > 0]
    if not keep:
        return
    right = ax.twinx()
    right.plot([k for k, _ in keep], [v for _, v in keep], color="tab:orange", marker="." if len(keep) <= 60 else None,
               label="held-out RMSE")
    right.set_yscale("log")
    right.set_ylabel("held-out RMSE", color="tab:orange")
    right.legend(fontsize=8, loc="upper center")


def plot_run(path: Path, result, config: dict[str, Any], problem: Any = None,
             holdout: list[tuple[int, float]] | None = None) -> str | None:
    """A finished run (a FitResult): the loss curve, with held-out entries' RMSE at the reported
    updates on a second axis; for a curve fit of one data column, the data, the fitted curve and
    the residuals above it. Returns a note for the user when a curve fit could only be drawn as
    its loss curve."""
    run = {"label": "loss", "history": result.history, "config": config, "status": result.status,
           "iters": result.iters}
    if holdout:
        run["holdout"] = holdout
    model = getattr(problem, "model", None)
    columns = getattr(model, "columns", None)  # only a curve fit's model has data columns
    if columns is None or result.fit is None:
        plot_runs(path, [run])
        return None
    if hasattr(model, "parts"):  # a global fit: a panel per dataset
        return _plot_global(path, model, problem.target, result, run)
    if len(columns) != 1:
        plot_runs(path, [run])
        used = ", ".join(columns) or "none"
        return (f"--plot draws the data and the fitted curve for one-variable data only; the expression uses "
                f"{len(columns)} data columns ({used}), so {path} holds the loss curve")
    plot_curve_fit(path, curve_series(model, problem.target, result.params), run)
    return None


GRID_POINTS = 400


def curve_series(model: Any, target: Any, params: dict[str, Any], grid_points: int = GRID_POINTS
                 ) -> dict[str, Any]:
    """What a one-variable curve fit's figure shows, as plain lists: the observed points (x, y,
    sigma), the fit and residuals there, and the fitted curve on a fine grid over x's range.

    The grid is the same model evaluated on a dense column. An expression with `sum` or `mean`
    reduces over its column, so a grid would change its value: then the curve is drawn through
    the fitted values at the data points instead. `target` is the problem's: over the observed
    points, divided by sigma when sigma is given."""
    (name, column), = model.columns.items()
    if isinstance(column, np.ndarray):  # a fit computed on the host: the same figure from its numpy form
        return _host_series(model, target, params, grid_points)
    import torch

    theta = torch.tensor([[params[n]["value"] for n in model.names]], dtype=column.dtype, device=column.device)
    with torch.no_grad():
        fitted = model.curve(theta)[0]
        y = target * model.sigma if model.sigma is not None else target
        if model.pointwise:
            grid = torch.linspace(float(column.min()), float(column.max()), grid_points, dtype=column.dtype,
                                  device=column.device)
            curve_x, curve_y = grid, model.curve_on({name: grid}, theta)[0]
        else:
            order = torch.argsort(column)
            curve_x, curve_y = column[order], fitted[order]
    return {"column": name, "x": column.tolist(), "y": y.tolist(), "fit": fitted.tolist(),
            "residual": (y - fitted).tolist(),
            "sigma": model.sigma.tolist() if model.sigma is not None else None,
            "curve_x": curve_x.tolist(), "curve_y": curve_y.tolist()}


def _host_series(model: Any, target: Any, params: dict[str, Any], grid_points: int) -> dict[str, Any]:
    """`curve_series` for a fit computed on the host, through its numpy form (no torch)."""
    (name, column), = model.columns.items()
    host = model.host(column.dtype)
    theta = np.array([[params[n]["value"] for n in model.names]], dtype=column.dtype)
    fitted = host.curve(theta)[0]
    y = target * model.sigma if model.sigma is not None else target
    if model.pointwise:
        curve_x = np.linspace(float(column.min()), float(column.max()), grid_points, dtype=column.dtype)
        curve_y = host.curve_on({name: curve_x}, theta)[0]
    else:
        order = np.argsort(column, kind="stable")
        curve_x, curve_y = column[order], fitted[order]
    return {"column": name, "x": column.tolist(), "y": y.tolist(), "fit": fitted.tolist(),
            "residual": (y - fitted).tolist(),
            "sigma": model.sigma.tolist() if model.sigma is not None else None,
            "curve_x": curve_x.tolist(), "curve_y": curve_y.tolist()}


def plot_curve_fit(path: Path, series: dict[str, Any], run: dict[str, Any]) -> None:
    """Three panels: data with the fitted curve, the residuals below it (same x axis), and the
    loss curve at the bottom."""
    plt = _pyplot()
    fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(7, 8.4), gridspec_kw={"height_ratios": [3, 1.3, 2]})
    middle.sharex(top)
    errors = series["sigma"]
    marker = {"fmt": "o", "markersize": 3.5, "color": "tab:blue", "ecolor": "lightsteelblue", "elinewidth": 1}
    top.errorbar(series["x"], series["y"], yerr=errors, label="data" + (" ± sigma" if errors else ""), **marker)
    top.plot(series["curve_x"], series["curve_y"], color="tab:red", linewidth=1.6, label="fit", zorder=3)
    top.set_ylabel("target")
    top.set_title(f"gdfit: {run['status']} after {plural(run['iters'], 'update')}")
    top.legend(fontsize=8)
    middle.errorbar(series["x"], series["residual"], yerr=errors, **marker)
    middle.axhline(0, color="tab:red", linewidth=1)
    middle.set_xlabel(series["column"])
    middle.set_ylabel("residual")
    iters, losses = loss_series(run["history"])
    bottom.plot(iters, losses, marker="." if len(iters) <= 60 else None, color="tab:grey")
    bottom.set_yscale("log")
    bottom.set_xlabel("update")
    bottom.set_ylabel("loss")
    for ax in (top, middle, bottom):
        ax.grid(True, which="both", alpha=0.3)
    config = run["config"]
    fig.text(0.01, -0.01, f"{series['column']} -> {curve_text(config['model'])}, optimizer {config['optimizer']['name']}",
             fontsize=9, color="dimgrey")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _plot_global(path: Path, model: Any, target: Any, result, run: dict[str, Any]) -> str | None:
    wide = [i for i, part in enumerate(model.parts) if len(part.columns) != 1]
    if wide:
        plot_runs(path, [run])
        return (f"--plot draws each dataset's data and fitted curve for one-variable data only; dataset {wide[0]} "
                f"uses {len(model.parts[wide[0]].columns)} data columns, so {path} holds the loss curve")
    series = [curve_series(part, part_target, result.params) for part, part_target in
              zip(model.parts, model.split(target))]
    plot_global_fit(path, series, run)
    return None


def plot_global_fit(path: Path, panels: list[dict[str, Any]], run: dict[str, Any]) -> None:
    """A global fit: one panel per dataset (its data and fitted curve, as `curve_series` gives
    them), then the loss curve."""
    plt = _pyplot()
    datasets = run["config"]["datasets"]
    fig, axes = plt.subplots(len(panels) + 1, 1, figsize=(7, 3.0 * len(panels) + 2.4),
                             gridspec_kw={"height_ratios": [3] * len(panels) + [2]})
    marker = {"fmt": "o", "markersize": 3.5, "color": "tab:blue", "ecolor": "lightsteelblue", "elinewidth": 1}
    for i, (ax, series, dataset) in enumerate(zip(axes, panels, datasets)):
        errors = series["sigma"]
        ax.errorbar(series["x"], series["y"], yerr=errors, label="data" + (" ± sigma" if errors else ""), **marker)
        ax.plot(series["curve_x"], series["curve_y"], color="tab:red", linewidth=1.6, label="fit", zorder=3)
        ax.set_title(f"dataset {i} ({dataset['data']['file']}): {dataset['model']['expr']}", fontsize=9)
        ax.set_xlabel(series["column"])
        ax.set_ylabel("target")
        ax.legend(fontsize=8)
    axes[0].figure.suptitle(f"gdfit: global fit, {run['status']} after {plural(run['iters'], 'update')}")
    iters, losses = loss_series(run["history"])
    axes[-1].plot(iters, losses, marker="." if len(iters) <= 60 else None, color="tab:grey")
    axes[-1].set_yscale("log")
    axes[-1].set_xlabel("update")
    axes[-1].set_ylabel("loss")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_sweep(path: Path, document: dict[str, Any]) -> None:
    """Updates to converge against the swept value; diverged runs marked along the top."""
    plt = _pyplot()
    series = sweep_series(document)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    xs, ys = series["converged"]
    ax.plot(xs, ys, marker="o", color="tab:blue", label="converged: updates")
    top = max(ys) if ys else document["config"]["max_iters"]
    if series["diverged"]:
        ax.scatter(series["diverged"], [top] * len(series["diverged"]), marker="x", color="tab:red", s=60,
                   label="diverged", zorder=3)
    if series["other"]:
        ax.scatter(series["other"], [top] * len(series["other"]), marker="s", color="grey", s=30,
                   label="not converged (limit)", zorder=3)
    stable = (document.get("advice") or {}).get("max_stable_lr")
    if series["key"] == "learning_rate" and stable and document["config"]["optimizer"]["name"] == "gd":
        ax.axvline(stable, color="tab:red", linestyle=":", linewidth=1, label=f"gd stable below lr = {stable:.4g}")
    if series["log_x"]:
        ax.set_xscale("log")
    if ys and min(ys) > 0 and max(ys) / max(min(ys), 1) >= 100:
        ax.set_yscale("log")
    ax.set_xlabel(series["key"])
    ax.set_ylabel("updates to converge")
    ax.set_title(f"gdfit sweep: {plural(len(document['runs']), 'run')} over {series['key']}")
    fig.text(0.01, -0.02, _caption(document["config"], tuple(document["grid"])), fontsize=9, color="dimgrey")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    _save(fig, path)
    plt.close(fig)


def read_saved(path: Path) -> list[dict[str, Any]]:
    """The saved results in a file: an --output document (run or sweep), or --json JSON Lines
    captured to a file, one result per run when several runs were appended to it. At most
    SAVED_RESULT_BYTES are read."""
    from gdfit.reading import SAVED_RESULT_BYTES, TooLarge, read_file

    try:
        text = read_file(path, SAVED_RESULT_BYTES).decode("utf-8-sig")
    except FileNotFoundError:
        from gdfit.files.paths import missing_reason

        raise InputFileError(missing_reason(path), source=str(path)) from None
    except TooLarge as err:
        raise InputFileError(f"the file {err.describe()} for a saved result", source=str(path)) from None
    except UnicodeDecodeError:
        raise InputFileError("is not UTF-8 text; expected an --output document or gdfit --json output",
                             source=str(path)) from None
    except OSError as err:
        raise InputFileError(f"cannot read: {err.strerror or err}", source=str(path)) from None
    try:
        document = json.loads(text)
        if isinstance(document, dict) and ("history" in document or "runs" in document):
            return [check_saved(document, path)]
    except (json.JSONDecodeError, RecursionError):
        pass
    return [check_saved(document, path) for document in _from_json_lines(text, path)]


def _from_json_lines(text: str, path: Path) -> list[dict[str, Any]]:
    """One result per start..end run in captured --json output; a run that reported only its start
    and end (`--every 0`) has those two points, and is marked so."""
    runs: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            raise InputFileError(f"line {number} is not JSON; expected an --output document or "
                                 "gdfit --json output", source=str(path)) from None
        kind = event.get("event") if isinstance(event, dict) else None
        if kind == "start" and isinstance(event.get("loss"), (int, float, type(None))):
            current = {"config": event.get("config") or {}, "iter": [0], "loss": [event.get("loss")]}
        elif kind == "step" and current is not None:
            current["iter"].append(event.get("iter"))
            current["loss"].append(event.get("loss"))
        elif kind == "end" and current is not None:
            runs.append(_finished(current, event))
            current = None
    if not runs:
        raise InputFileError("holds no gdfit run (needs its start and end events)", source=str(path))
    return runs


def _finished(run: dict[str, Any], end: dict[str, Any]) -> dict[str, Any]:
    iters, losses = run["iter"], run["loss"]
    sparse = len(iters) == 1
    if isinstance(end.get("iters"), int) and end["iters"] > iters[-1]:
        iters.append(end["iters"])
        losses.append(end.get("loss"))
    return {**end, "config": run["config"], "history": {"iter": iters, "loss": losses}, "start_end_only": sparse}


def plot_saved(paths: list[Path], out: Path) -> None:
    """`gdfit plot`: overlay saved runs, or draw a saved sweep."""
    found = [(path, doc) for path in paths for doc in read_saved(path)]
    sweeps = [doc for _, doc in found if "runs" in doc]
    if sweeps:
        if len(found) > 1:
            raise InputFileError("draw one sweep at a time", source=str(paths[0]))
        plot_sweep(out, sweeps[0])
        return
    runs = []
    counts = {path: sum(1 for p, _ in found if p == path) for path in paths}
    seen: dict[Path, int] = {}
    for path, doc in found:
        config = doc.get("config") or {}
        seen[path] = seen.get(path, 0) + 1
        label = path.stem + (f" #{seen[path]}" if counts[path] > 1 else "")
        if config:
            label += f" (lr {config['learning_rate']:g}, {config['optimizer']['name']})"
        if doc.get("start_end_only"):
            label += ", start and end only"
        runs.append({"label": label, "history": doc["history"], "config": config, "status": doc.get("status"),
                     "iters": doc.get("iters"), "sparse": doc.get("start_end_only", False)})
    plot_runs(out, runs)
