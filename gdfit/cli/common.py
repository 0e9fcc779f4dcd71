"""What each command does once its flags are parsed: build, run, render. The CLI declares them."""

from __future__ import annotations

from pathlib import Path


def warn(message: str) -> None:
    import sys

    print(f"gdfit: {message}", file=sys.stderr, flush=True)


def stdout_gone() -> bool:
    """Whether stdout failed (a closed pipe, a full disk): then a stop is no news to report."""
    import sys

    return getattr(sys.stdout, "problem", None) is not None


def check_outputs(output: Path | None, plot: Path | None) -> None:
    """Fail before the run, not after it: folders must exist, the plot needs its extra."""
    from gdfit.files.writing import check_writable

    for path, key in ((output, "--output"), (plot, "--plot")):
        if path is not None:
            check_writable(path, key=key)
    if plot is not None:
        from gdfit.pictures.plotting import check_format, require_matplotlib

        check_format(plot)
        require_matplotlib()
