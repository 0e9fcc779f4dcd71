"""The command line: flags in, a config built, a renderer chosen, errors mapped to exit codes."""

from gdfit.cli.app import main

__all__ = ["main"]
