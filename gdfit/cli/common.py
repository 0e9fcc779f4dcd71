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


def check_backend(backend: str, address: str | None) -> None:
    """Before anything runs: the backend is known, Dask is installed where it is asked for, a
    scheduler address answers (a malformed or silent one fails in seconds), and Dask's own lines
    are kept off the terminal; --address without --backend dask is refused."""
    from gdfit.errors import UsageError

    if backend not in ("local", "dask"):
        raise UsageError(f"unknown backend {backend!r}; choose local or dask", key="--backend")
    if backend == "dask":
        import os

        from gdfit.sweeps.backends import ADDRESS_ENV, require_dask
        from gdfit.sweeps.dask_env import check_address, quiet

        require_dask()
        joined = address or os.environ.get(ADDRESS_ENV)
        if joined:
            check_address(joined, "--address" if address else ADDRESS_ENV)
        quiet()
    elif address is not None:
        raise UsageError("--address names a Dask scheduler: give --backend dask with it", key="--address")
