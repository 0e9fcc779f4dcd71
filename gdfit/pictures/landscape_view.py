"""Drawing a `landscape.Landscape`: filled log-scale contours with each run's path, as an image
(.png, .svg), an animation (.gif) or characters in the terminal. Draws only: no torch arithmetic."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from gdfit.errors import MissingExtraError, OutputError
from gdfit.words import plural

FORMATS = (".png", ".svg", ".gif")
RAMP = " .:-=+#%"  # low loss to high, one character per level band
LEVEL_COLOURS = ("#440154", "#46327e", "#365c8d", "#277f8e", "#1fa187", "#4ac16d", "#a0da39", "#fde725")
PATH_COLOURS = ("bold bright_white", "bold bright_red", "bold bright_magenta", "bold orange1", "bold bright_cyan",
                "bold black", "bold hot_pink", "bold gold1")
MPL_COLOURS = ("#e6194b", "#ffffff", "#f58231", "#000000", "#f032e6", "#42d4f4", "#ffe119", "#911eb4")
FRAMES = 60  # of an animation


def check_format(path: Path) -> None:
    if path.suffix.lower() not in FORMATS:
        raise OutputError(f"cannot tell the picture's format from {path.suffix or 'no extension'!r}; use one of "
                          f"{', '.join(FORMATS)} (.gif: an animation)", source=str(path), key="--output")


def require_pillow() -> None:
    try:
        import PIL  # noqa: F401  (matplotlib's PillowWriter; matplotlib itself depends on pillow)
    except ImportError:
        raise MissingExtraError("a .gif animation needs pillow, which is not installed",
                                key="--output", hint="pip install pillow, or write .png or .svg") from None


def letter(i: int) -> str:
    return "abcdefghijklmnpqrstuvwxyz"[i % 25]  # no o: that marks the start


def summary(trace) -> str:
    """A run's status, updates and final loss, for legends."""
    final = float(trace.losses[-1]) if len(trace.losses) else math.nan
    return f"{trace.status}, {plural(trace.iters, 'update')}, loss {final:.4g}"


# ---------------------------------------------------------------- terminal


def levels(loss, count: int = len(RAMP)) -> tuple[list[list[int]], float, float]:
    """Each grid value's band 0..count-1 on a log scale (-1: not finite); and the scale's ends."""
    values = [v for row in loss for v in row if math.isfinite(v) and v > 0]
    low = min(values) if values else 1.0
    high = max(values) if values else 1.0
    span = math.log10(high) - math.log10(low) or 1.0

    def band(v: float) -> int:
        if not math.isfinite(v):
            return -1
        v = max(v, low)
        return min(count - 1, int((math.log10(v) - math.log10(low)) / span * count))

    return [[band(v) for v in row] for row in loss], low, high


def _cell(value: float, start: float, stop: float, cells: int) -> int | None:
    if not math.isfinite(value) or stop == start:
        return None
    i = round((value - start) / (stop - start) * (cells - 1))
    return i if 0 <= i < cells else None


def text_picture(view) -> Text:
    """The contour as characters (RAMP, coloured bands where the console allows), paths as letters
    (lower case along the path, upper case at its end), o the start, * the best point."""
    grid = view.grid
    a, b = grid.a.tolist(), grid.b.tolist()
    bands, low, high = levels(grid.loss.tolist())
    width, height = len(a), len(b)
    chars = [[RAMP[k] if k >= 0 else "?" for k in row] for row in bands]
    marks: dict[tuple[int, int], str] = {}

    def place(x: float, y: float, char: str, style: str) -> None:
        i, j = _cell(x, a[0], a[-1], width), _cell(y, b[0], b[-1], height)
        if i is not None and j is not None:
            chars[j][i] = char
            marks[(j, i)] = style

    for n, trace in reversed(list(enumerate(view.traces))):  # the first run's path on top
        for x, y in trace.coords.tolist():
            place(x, y, letter(n), PATH_COLOURS[n % len(PATH_COLOURS)])
    for n, trace in enumerate(view.traces):
        if len(trace.coords):
            x, y = trace.coords[-1].tolist()
            place(x, y, letter(n).upper(), PATH_COLOURS[n % len(PATH_COLOURS)])
    start = view.traces[0].coords[0].tolist()
    place(*start, "o", "bold bright_white")
    place(view.best[0], view.best[1], "*", "bold yellow")
    text = Text()
    for j in reversed(range(height)):  # the highest b on top
        for i in range(width):
            band = bands[j][i]
            background = f" on {LEVEL_COLOURS[band]}" if band >= 0 else ""
            style = marks.get((j, i), "white" if band < 4 else "black")
            text.append(chars[j][i], style=style + background)
        text.append("\n")
    return text


def show_text(view, console: Console) -> None:
    """The picture, its axes and a legend, for a terminal (or any text stream)."""
    grid = view.grid
    console.print(Text(view.title, style="bold"))
    console.print(text_picture(view), end="")
    a0, a1, b0, b1 = float(grid.a[0]), float(grid.a[-1]), float(grid.b[0]), float(grid.b[-1])
    console.print(f"across: {view.plane.labels[0]}, {a0:.4g} to {a1:.4g}")
    console.print(f"up:     {view.plane.labels[1]}, {b0:.4g} to {b1:.4g}")
    _, low, high = levels(grid.loss.tolist())
    console.print(f"levels: {RAMP!r} low to high, log scale from {low:.3g} to {high:.3g}")
    legend(view, console, letters=True)


def legend(view, console: Console, letters: bool = False) -> None:
    """One line per run, the start, the best point, and the parameters held fixed."""
    for n, trace in enumerate(view.traces):
        mark = Text(f"{letter(n)}/{letter(n).upper()} ", style=PATH_COLOURS[n % len(PATH_COLOURS)]) if letters else Text()
        console.print(mark + Text(f"{trace.label}: {summary(trace)}"))
    console.print(("o  " if letters else "") + f"start: loss {float(view.traces[0].losses[0]):.4g}")
    console.print(("*  " if letters else "") + f"best: loss {view.best[2]:.4g} ({view.best[3]})")
    if view.held:
        console.print("held at the first run's fitted values: "
                      + ", ".join(f"{k} = {v:.6g}" for k, v in view.held.items()))


# ---------------------------------------------------------------- matplotlib


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        from gdfit.pictures.plotting import INSTALL_HINT

        raise MissingExtraError("drawing to a file needs matplotlib, which is not installed", key="--output",
                                hint=INSTALL_HINT) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _surface(ax, view):
    """Filled contours on log-spaced levels; returns the mappable for a colour bar."""
    import numpy as np
    from matplotlib.colors import LogNorm

    loss = view.grid.loss.numpy().copy()
    finite = np.isfinite(loss) & (loss > 0)
    low = loss[finite].min() if finite.any() else 1e-12
    high = loss[finite].max() if finite.any() else 1.0
    high = max(high, low * 10)
    loss = np.where(finite, loss, np.nan).clip(low, high)
    edges = np.logspace(np.log10(low), np.log10(high), 25)
    filled = ax.contourf(view.grid.a.numpy(), view.grid.b.numpy(), loss, levels=edges, norm=LogNorm(low, high),
                         cmap="viridis", extend="neither")
    ax.contour(view.grid.a.numpy(), view.grid.b.numpy(), loss, levels=edges[::3], colors="k", linewidths=0.3,
               alpha=0.35)
    ax.set_xlim(float(view.grid.a[0]), float(view.grid.a[-1]))
    ax.set_ylim(float(view.grid.b[0]), float(view.grid.b[-1]))
    ax.set_xlabel(view.plane.labels[0])
    ax.set_ylabel(view.plane.labels[1])
    return filled


ARCS = 24  # the first steps of a path, drawn as arcs (see `_path`)


class Drawn:
    """A path's artists, each shown from its update on: what an animation reveals frame by frame."""

    def __init__(self, line, updates, coords) -> None:
        self.timed: list[tuple[int, Any]] = []  # (update, artist)
        self.line, self.updates, self.coords = line, updates, coords  # the path's line, drawn up to k

    def show_until(self, k: int) -> None:
        for update, artist in self.timed:
            artist.set_visible(update <= k)
        upto = int((self.updates <= k).sum())
        self.line.set_data(self.coords[:upto, 0], self.coords[:upto, 1])


def _path(ax, trace, n: int, label: bool = True) -> Drawn:
    """One run's path in its colour: a line through every recorded point, and its first ARCS steps
    also as arrows along slight arcs, so that steps back and forth along one line (gd overshooting
    on a bowl) stay apart. Every point is exact; only the connecting curves are drawn bent."""
    import numpy as np
    from matplotlib.patches import FancyArrowPatch

    coords = trace.coords.numpy()
    updates = np.asarray(trace.updates)
    colour = MPL_COLOURS[n % len(MPL_COLOURS)]
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    inside = (coords[:, 0] >= x0) & (coords[:, 0] <= x1) & (coords[:, 1] >= y0) & (coords[:, 1] <= y1)
    many = len(coords) > 60
    line = ax.plot(coords[:, 0], coords[:, 1], "-", color=colour, linewidth=1.0 if many else 0.6,
                   alpha=1.0 if many else 0.7, marker="." if len(coords) <= 400 else None, markersize=4,
                   label=f"{trace.label}: {summary(trace)}" if label else None, zorder=3)[0]
    drawn = Drawn(line, updates, coords)
    for i in range(1, min(len(coords), ARCS + 1)):
        if not (inside[i - 1] and inside[i]):  # a step that leaves the frame: its arc would fill it
            continue
        arrow = FancyArrowPatch(coords[i - 1], coords[i], arrowstyle="-|>", connectionstyle="arc3,rad=0.25",
                                color=colour, linewidth=1.1, shrinkA=0, shrinkB=0, mutation_scale=8, zorder=3)
        ax.add_patch(arrow)
        drawn.timed.append((int(updates[i]), arrow))
    end = ax.plot(coords[-1:, 0], coords[-1:, 1], marker="X", color=colour, markeredgecolor="k", markersize=10,
                  linestyle="none", zorder=4)[0]
    drawn.timed.append((trace.iters, end))
    return drawn


def _marks(ax, view, best: bool = True) -> None:
    x, y = view.traces[0].coords[0].tolist()
    ax.plot([x], [y], marker="o", color="white", markeredgecolor="k", markersize=9, linestyle="none",
            label=f"start (loss {float(view.traces[0].losses[0]):.3g})", zorder=5)
    if best and math.isfinite(view.best[0]):
        ax.plot([view.best[0]], [view.best[1]], marker="*", color="gold", markeredgecolor="k", markersize=16,
                linestyle="none", label=f"best: loss {view.best[2]:.3g} ({view.best[3]})", zorder=6)


def _caption(fig, view) -> None:
    notes = []
    if view.held:
        notes.append("others held at the first run's fitted values: "
                     + ", ".join(f"{k} = {v:.6g}" for k, v in view.held.items()))
    if view.plane.kind == "slice":
        notes.append("paths projected onto the plane")
    if any(t.status == "diverged" for t in view.traces):
        notes.append("diverged paths leave the frame")
    if notes:
        fig.text(0.01, 0.005, "; ".join(notes), fontsize=8, color="dimgrey", va="bottom")


def figure(view, panels: bool = False):
    """The picture: one axes with every path, or with `panels` one axes per run on the same
    surface. Returns (figure, pyplot, the drawn paths in run order)."""
    from matplotlib.ticker import LogFormatterSciNotation

    plt = _pyplot()
    count = len(view.traces) if panels else 1
    columns = min(count, 4)
    rows = math.ceil(count / columns)
    size = (4.0 * columns + 1.4, 4.0 * rows + 0.8) if panels else (6.6, 6.4 + 0.16 * len(view.traces))
    fig, axes = plt.subplots(rows, columns, figsize=size, squeeze=False,
                             constrained_layout=True)
    flat = axes.flatten()
    filled, drawn = None, []
    for k in range(count):
        ax = flat[k]
        filled = _surface(ax, view)
        if view.plane.kind == "slice":
            ax.set_aspect("equal")  # u and v have one norm
        if panels:
            trace = view.traces[k]
            drawn.append(_path(ax, trace, k, label=False))
            _marks(ax, view, best=view.best[3] == trace.label)
            ax.set_title(f"{trace.label}\n{summary(trace)}", fontsize=9)
        else:
            drawn = [_path(ax, trace, n) for n, trace in enumerate(view.traces)]
            _marks(ax, view)
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), facecolor="#d9d9d9", framealpha=0.95)
            ax.set_title(view.title, fontsize=10)
    for ax in flat[count:]:
        ax.set_visible(False)
    bar = fig.colorbar(filled, ax=flat[:count].tolist(), label="loss (log scale)", shrink=0.9,
                       format=LogFormatterSciNotation())
    low, high = filled.norm.vmin, filled.norm.vmax
    bar.set_ticks([10.0**e for e in range(math.ceil(math.log10(low)), math.floor(math.log10(high)) + 1)] or [low, high])
    if panels:
        fig.suptitle(view.title, fontsize=11)
    _caption(fig, view)
    return fig, plt, drawn


def draw(path: Path, view, panels: bool = False) -> None:
    """Write the picture (.png, .svg) or the animation (.gif) atomically."""
    import io

    from gdfit.files.writing import write_atomic

    check_format(path)
    if path.suffix.lower() == ".gif":
        write_atomic(path, animation(view, panels))
        return
    fig, plt, _ = figure(view, panels)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lower().lstrip("."), dpi=110)
    plt.close(fig)
    write_atomic(path, buffer.getvalue())


def frame_updates(view, frames: int = FRAMES) -> list[int]:
    """The update shown at each frame: spaced evenly in log(1 + update), so fast runs are seen."""
    last = max(t.iters for t in view.traces)
    if last < frames:
        return list(range(last + 1))
    return sorted({round(math.expm1(math.log1p(last) * f / (frames - 1))) for f in range(frames)})


def animation(view, panels: bool = False) -> bytes:
    """A .gif: each path drawn up to update k, frame by frame, with matplotlib's PillowWriter."""
    import os
    import tempfile

    from matplotlib.animation import FuncAnimation, PillowWriter

    require_pillow()
    fig, plt, drawn = figure(view, panels)
    updates = frame_updates(view)
    note = fig.text(0.99, 0.005, "", ha="right", va="bottom", fontsize=9)

    def show(f: int):
        for path in drawn:
            path.show_until(updates[f])
        note.set_text(f"update {updates[f]}")
        return []

    movie = FuncAnimation(fig, show, frames=len(updates) + 6, blit=False)  # a pause on the last frame
    updates += [updates[-1]] * 6
    folder = tempfile.mkdtemp(prefix="gdfit-landscape-")
    target = os.path.join(folder, "landscape.gif")
    try:
        movie.save(target, writer=PillowWriter(fps=6), dpi=70)
        with open(target, "rb") as handle:
            return handle.read()
    finally:
        plt.close(fig)
        if os.path.exists(target):
            os.unlink(target)
        os.rmdir(folder)


def describe_written(path: Path, view: Any) -> str:
    return f"wrote {path}: {len(view.traces)} path{'s' if len(view.traces) != 1 else ''} on a " \
           f"{len(view.grid.a)}x{len(view.grid.b)} grid"
