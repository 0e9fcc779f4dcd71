"""Click's usage errors (unknown option, missing argument, a flag's bad value) in gdfit's words.

typer parses the command line with Click (vendored since typer 0.2x); its messages say
"Error: Invalid value for '--every': Input should be a valid integer, ...". The CLI edge turns
each into a `UsageError` that reads like every other gdfit error: `--every: must be an integer,
got 'abc'`, with the help command as the hint.
"""

from __future__ import annotations

import difflib
from typing import Any

from gdfit.errors import UsageError

# pydantic's error types (typer >= 0.2x coerces flag values with it) -> plain words
EXPECTED = {
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_parsing": "must be a number",
    "bool_parsing": "must be true or false",
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
}


def click_exceptions() -> Any:
    """The module that holds Click's exception classes, wherever this typer keeps it."""
    try:
        from typer._click import exceptions  # typer >= 0.2x vendors Click
    except ImportError:  # older typer: Click itself
        from click import exceptions
    return exceptions


def from_click(err: Exception) -> UsageError:
    """gdfit's UsageError for one of Click's UsageErrors."""
    exceptions = click_exceptions()
    ctx = getattr(err, "ctx", None)
    command = getattr(ctx, "command_path", None) or "gdfit"
    hint = f"see '{command} --help'"
    if isinstance(err, exceptions.NoSuchOption):
        return UsageError(_unknown_option(err), hint=hint)
    if isinstance(err, exceptions.MissingParameter):
        return UsageError("is required", key=_param_name(err.param), hint=hint)
    if isinstance(err, exceptions.BadParameter) and err.param is not None:
        return UsageError(_bad_value(err), key=_param_name(err.param), hint=hint)
    return UsageError(_plain(err.format_message()), hint=hint)


def _unknown_option(err: Any) -> str:
    close = difflib.get_close_matches(err.option_name, sorted(err.possibilities or ()), n=1)
    guess = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown option {err.option_name}{guess}"


def _param_name(param: Any) -> str:
    opts = getattr(param, "opts", None)
    if getattr(param, "param_type_name", "") == "option" and opts:
        return max(opts, key=len)  # --output, not -o
    return param.metavar or param.name.upper()


def _bad_value(err: Any) -> str:
    cause = err.__cause__
    errors = cause.errors() if hasattr(cause, "errors") else []
    if errors and errors[0].get("type") in EXPECTED:
        first = errors[0]
        expected = EXPECTED[first["type"]].format(**first.get("ctx", {}))
        return f"{expected}, got {first.get('input')!r}"
    return _plain(err.message)


def _plain(message: str) -> str:
    """Click's sentence as a gdfit clause: lower-case start, no full stop."""
    text = message.strip().rstrip(".")
    if text.startswith("Got unexpected extra argument"):
        return "unexpected extra argument: " + text.rpartition("(")[2].rstrip(")")
    text = text.replace(". Did you mean", " (did you mean").replace("?", "?)") if ". Did you mean" in text else text
    return text[:1].lower() + text[1:]
