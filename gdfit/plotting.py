"""Loss curves and sweep plots with matplotlib (the optional `plot` extra), Agg backend.

The series functions are plain data transformations, tested against the run's history;
the drawing functions only draw them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from gdfit.errors import InputFileError, MissingExtraError, OutputError

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


def sweep_series(document: dict[str, Any]) -> dict[str, Any]:
    """Updates to converge against the first numeric swept key; diverged and unfinished runs apart."""
    runs = document["runs"]
    key = next((k for k, values in document["grid"].items()
                if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)), None)
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    from gdfit.render.document import write_atomic
    import io

    check_format(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lower().lstrip("."), bbox_inches="tight")
    write_atomic(path, buffer.getvalue())


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
        ax.plot(iters, losses, marker="." if len(iters) <= 60 else None, label=run["label"])
    ax.set_yscale("log")
    ax.set_xlabel("update")
    ax.set_ylabel("loss")
    thresholds = {run["config"]["threshold"] for run in runs if run.get("config")}
    for threshold in thresholds:
        if threshold > 0:
            ax.axhline(threshold, color="grey", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    if len(runs) == 1:
        run = runs[0]
        ax.set_title(f"gdfit: {run['status']} after {run['iters']} updates")
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


def plot_run(path: Path, result, config: dict[str, Any], holdout: list[tuple[int, float]] | None = None) -> None:
    """The loss curve of a finished run (a FitResult); with held-out entries, their RMSE at the
    reported updates on a second axis."""
    run = {"label": "loss", "history": result.history, "config": config, "status": result.status,
           "iters": result.iters}
    if holdout:
        run["holdout"] = holdout
    plot_runs(path, [run])


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
    ax.set_title(f"gdfit sweep: {len(document['runs'])} runs over {series['key']}")
    fig.text(0.01, -0.02, _caption(document["config"], tuple(document["grid"])), fontsize=9, color="dimgrey")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    _save(fig, path)
    plt.close(fig)


def read_saved(path: Path) -> dict[str, Any]:
    """A saved result: an --output document (run or sweep), or --json JSON Lines captured to a file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputFileError("no such file", source=str(path)) from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputFileError(f"cannot read: {err}", source=str(path)) from None
    try:
        document = json.loads(text)
        if isinstance(document, dict) and ("history" in document or "runs" in document):
            return document
    except json.JSONDecodeError:
        pass
    return _from_json_lines(text, path)


def _from_json_lines(text: str, path: Path) -> dict[str, Any]:
    events = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                raise InputFileError(f"line {number} is not JSON; expected an --output document or "
                                     "gdfit --json output", source=str(path)) from None
    start = next((e for e in events if isinstance(e, dict) and e.get("event") == "start"), None)
    end = next((e for e in events if isinstance(e, dict) and e.get("event") == "end"), None)
    if start is None or end is None or "loss" not in start:
        raise InputFileError("holds no gdfit run (needs its start and end events)", source=str(path))
    steps = [e for e in events if e.get("event") == "step"]
    iters = [0] + [e["iter"] for e in steps]
    losses = [start["loss"]] + [e["loss"] for e in steps]
    return {**end, "config": start["config"], "history": {"iter": iters, "loss": losses}}


def plot_saved(paths: list[Path], out: Path) -> None:
    """`gdfit plot`: overlay saved runs, or draw a saved sweep."""
    documents = [read_saved(p) for p in paths]
    sweeps = [d for d in documents if "runs" in d]
    if sweeps:
        if len(documents) > 1:
            raise InputFileError("draw one sweep at a time", source=str(paths[0]))
        plot_sweep(out, sweeps[0])
        return
    runs = []
    for path, doc in zip(paths, documents):
        config = doc.get("config") or {}
        label = path.stem
        if config:
            label += f" (lr {config['learning_rate']:g}, {config['optimizer']['name']})"
        runs.append({"label": label, "history": doc["history"], "config": config, "status": doc.get("status"),
                     "iters": doc.get("iters")})
    plot_runs(out, runs)
