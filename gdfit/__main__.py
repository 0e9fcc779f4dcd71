"""`python -m gdfit` and the `gdfit` console script.

The CLI is imported inside `entry`, so a Ctrl-C while Python loads typer, rich and gdfit ends as a
Ctrl-C anywhere else does (exit 130, an `error` event under --json), not with a traceback.
"""

import sys


def entry() -> None:
    try:
        from gdfit.cli.app import entry as cli_entry
    except KeyboardInterrupt:
        print("gdfit: interrupted", file=sys.stderr, flush=True)
        if "--json" in sys.argv[1:]:  # the arguments are not parsed yet; --json is all that matters here
            print('{"event":"error","kind":"interrupted","message":"interrupted by Ctrl-C (SIGINT)"}', flush=True)
        sys.exit(130)
    cli_entry()


if __name__ == "__main__":  # Dask's spawned workers import this module; they must not run the CLI
    entry()
