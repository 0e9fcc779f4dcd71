"""`gdfit plot`: draw saved results."""

from __future__ import annotations

from pathlib import Path

from gdfit.cli.common import warn
from gdfit.errors import OutputError


def plot_files(files: list[Path], out: Path) -> None:
    from gdfit.render.plotting import check_format, plot_saved, require_matplotlib
    from gdfit.files.paths import reads, refuse_clashes, writes
    from gdfit.files.writing import check_writable

    refuse_clashes([use for path in files for use in reads("FILE", path)] + writes("--output", out))
    from gdfit.files.locks import hold_all

    try:
        check_writable(out)
        check_format(out)
        require_matplotlib()
        with hold_all([(out, "--output", False)]):
            plot_saved(files, out)
    except OutputError as err:  # the drawing code speaks of run's --plot; here the flag is --output
        err.key = "--output"
        raise
    warn(f"wrote {out}")
