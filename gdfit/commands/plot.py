"""`gdfit plot`: draw saved results."""

from __future__ import annotations

from pathlib import Path

from gdfit.commands import warn


def plot_files(files: list[Path], out: Path) -> None:
    from gdfit.plotting import check_format, plot_saved, require_matplotlib
    from gdfit.render.document import check_writable

    check_writable(out)
    check_format(out)
    require_matplotlib()
    plot_saved(files, out)
    warn(f"wrote {out}")
