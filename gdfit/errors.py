"""Every error gdfit raises on purpose, and the exit code each one maps to.

Only the CLI edge turns these into messages; everything below it raises them with enough
context (file, line, key) for the user to fix the input without reading code.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit status, as the documentation's exit codes promise."""

    OK = 0
    NOT_CONVERGED = 1
    CHECK_FAILED = 1  # grad-demo: autograd and finite differences disagree, or a value is not finite
    BAD_INPUT = 2
    DIVERGED = 3
    INTERRUPTED = 130


class GdfitError(Exception):
    """Base of all expected failures: bad input, missing device, unwritable output."""

    kind = "error"
    exit_code = ExitCode.BAD_INPUT

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        column: int | None = None,
        key: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.source = source
        self.line = line
        self.column = column
        self.key = key
        self.hint = hint
        self.also: list[GdfitError] = []  # further problems found at the same time (every one in a config)

    def located(self) -> str:
        """`file:line:col: key: message`, leaving out what is unknown."""
        where = ""
        if self.source:
            where = self.source
            if self.line is not None:
                where += f":{self.line}"
                if self.column is not None:
                    where += f":{self.column}"
            where += ": "
        key = f"{self.key}: " if self.key else ""
        return f"{where}{key}{self.message}"

    def __str__(self) -> str:
        text = "\n".join([self.located(), *(f"  also: {other.located()}" for other in self.also)])
        return f"{text}\n  hint: {self.hint}" if self.hint else text


class UsageError(GdfitError):
    """The command line itself is wrong: an unknown option, a missing argument, a flag's bad value."""

    kind = "usage"


class ConfigError(GdfitError):
    """The config (file, stdin or --set) is unreadable or invalid."""

    kind = "config"


class InputFileError(GdfitError):
    """A target or init file is missing, unreadable or holds the wrong data."""

    kind = "input_file"


class ResourceError(GdfitError):
    """The problem would not fit in the memory of the chosen device."""

    kind = "resource"


class DeviceError(GdfitError):
    """The requested device or dtype is not available."""

    kind = "device"


class ExpressionError(GdfitError):
    """A grad-demo expression is not in the safe expression language."""

    kind = "expression"


class OutputError(GdfitError):
    """A result, plot or graph file could not be written."""

    kind = "output"


class MissingExtraError(GdfitError):
    """An optional dependency (matplotlib) is not installed."""

    kind = "missing_dependency"
