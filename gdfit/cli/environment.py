"""Failures that come from the machine, not from a bug: an allocation the memory limits refuse,
standard output that cannot encode the report. Each becomes a plain exit-2 error at the CLI edge."""

from __future__ import annotations

from gdfit.errors import GdfitError, OutputError, ResourceError

_ALLOCATION_WORDS = ("can't allocate memory", "out of memory", "std::bad_alloc", "cannot allocate memory")


def as_input_error(err: BaseException) -> GdfitError | None:
    """The plain error for a failure the environment caused, or None for a bug."""
    if isinstance(err, MemoryError) or (isinstance(err, RuntimeError)
                                         and any(w in str(err).lower() for w in _ALLOCATION_WORDS)):
        return ResourceError("not enough memory: an allocation failed (the machine's free memory, the address-space "
                             "limit `ulimit -v` or the cgroup's memory limit)",
                             hint="use a smaller shape, a smaller dtype, or raise the limit")
    if isinstance(err, UnicodeEncodeError):
        return OutputError(f"the output's encoding ({err.encoding}) cannot write {err.object[err.start:err.end]!r}",
                           source="standard output",
                           hint="set PYTHONIOENCODING=utf-8 (or a UTF-8 locale, LANG=C.UTF-8)")
    return None


MIN_COLUMNS = 20  # narrower, a table cannot show a number and its name


def terminal_width_note(environ=None) -> str | None:
    """Make COLUMNS usable for the tables: a value that is not a whole number >= MIN_COLUMNS (`0`,
    `abc`) would make rich print nothing at all; it is dropped (the terminal's own width, or 80,
    is used) or raised to the minimum, and the note says so."""
    import os

    environ = os.environ if environ is None else environ
    value = environ.get("COLUMNS")
    if value is None:
        return None
    text = value.strip()
    if text.isdigit() and int(text) >= MIN_COLUMNS:
        return None
    if text.isdigit() and int(text) > 0:
        environ["COLUMNS"] = str(MIN_COLUMNS)
        return f"COLUMNS={value} is narrower than a table can be; using {MIN_COLUMNS}"
    del environ["COLUMNS"]
    return f"COLUMNS={value!r} is not a terminal width; using the terminal's own width"
