"""Checked values the config models are built from: numbers, names and inline tensors.

Each check is a plain function raising ValueError with the user's wording; pydantic reports it
at the key it belongs to. YAML booleans and text are never read as numbers.
"""

from __future__ import annotations

import difflib
import math
from typing import Annotated, Any

from pydantic import BeforeValidator

from gdfit.config.yamlsource import type_name
from gdfit.words import plural

MAX_INLINE_ELEMENTS = 10_000
MAX_RANK = 8


# ---------------------------------------------------------------- numbers


def _number(value: Any) -> float:
    """Accept ints and floats only; YAML booleans and text are errors, not 1.0 or NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {type_name(value)}")
    return float(value)


def integer(value: Any) -> int:
    """An int; a float only when it is a whole number (YAML reads `1e3` as a float)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {type_name(value)}")
    return value


def finite(value: Any) -> float:
    """A number that is neither NaN nor infinite."""
    number = _number(value)
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {number}")
    return number


def positive(value: Any) -> float:
    number = finite(value)
    if number <= 0:
        raise ValueError(f"must be a number > 0, got {number:g}")
    return number


def non_negative(value: Any) -> float:
    number = finite(value)
    if number < 0:
        raise ValueError(f"must be >= 0, got {number:g}")
    return number + 0.0  # -0.0 becomes 0.0, so the config never prints "-0"


def unit_interval(value: Any) -> float:
    number = finite(value)
    if not 0 <= number < 1:
        raise ValueError(f"must be in [0, 1), got {number:g}")
    return number


def non_negative_int(value: Any) -> int:
    n = integer(value)
    if n < 0:
        raise ValueError(f"must be an integer >= 0, got {n}")
    return n


def positive_int(value: Any) -> int:
    n = integer(value)
    if n <= 0:
        raise ValueError(f"must be an integer > 0, got {n}")
    return n


SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed accepts


def seed(value: Any) -> int:
    n = integer(value)
    if not SEED_RANGE[0] <= n <= SEED_RANGE[1]:
        raise ValueError(f"must be an integer from -2**63 to 2**64 - 1 (torch's range), got {n}")
    return n


def greater_than_one(value: Any) -> float:
    n = finite(value)
    if n <= 1:
        raise ValueError(f"must be a number > 1, got {n:g}")
    return n


Number = Annotated[float, BeforeValidator(finite)]
Integer = Annotated[int, BeforeValidator(integer)]
Seed = Annotated[int, BeforeValidator(seed)]
PositiveNumber = Annotated[float, BeforeValidator(positive)]
NonNegativeNumber = Annotated[float, BeforeValidator(non_negative)]
UnitInterval = Annotated[float, BeforeValidator(unit_interval)]
NonNegativeInt = Annotated[int, BeforeValidator(non_negative_int)]
PositiveInt = Annotated[int, BeforeValidator(positive_int)]


# ---------------------------------------------------------------- names


def choose(what: str, name: Any, choices: tuple[str, ...]) -> str:
    """`name` if it is one of `choices`; otherwise a message listing them, with a did-you-mean."""
    if not isinstance(name, str):
        raise ValueError(f"expected one of {', '.join(choices)}; got {type_name(name)}")
    if name not in choices:
        close = difflib.get_close_matches(name, choices, n=1)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown {what} {name!r}{guess}; choose one of: {', '.join(choices)}")
    return name


# ---------------------------------------------------------------- tensors


def _where(index: tuple[int, ...]) -> str:
    """`row 2, column 3` for matrices, `element 4` for vectors, `[1][2][3]` beyond (1-based)."""
    if len(index) == 1:
        return f"element {index[0] + 1}"
    if len(index) == 2:
        return f"row {index[0] + 1}, column {index[1] + 1}"
    return "".join(f"[{i + 1}]" for i in index)


def _shape_of(value: Any, index: tuple[int, ...] = (), missing_ok: bool = False) -> tuple[int, ...]:
    """Shape of a rectangular nested list of finite numbers (and NaN, with `missing_ok`); raises
    ValueError saying where not."""
    if not isinstance(value, list):
        try:
            # null is missing only inside a matrix: `target:` alone means nothing was written
            if not (missing_ok and ((value is None and index) or (isinstance(value, float) and math.isnan(value)))):
                finite(value)
        except ValueError as err:
            raise ValueError(f"{_where(index)}: {err}" if index else str(err)) from None
        return ()
    if not value:
        raise ValueError(f"{_where(index) + ' ' if index else 'the matrix '}is empty")
    shapes = [_shape_of(item, index + (i,), missing_ok) for i, item in enumerate(value)]
    first = shapes[0]
    for i, shape in enumerate(shapes[1:], start=2):
        if shape != first:
            if len(shape) == len(first) == 1 and not index:
                raise ValueError(f"ragged matrix: row {i} has {plural(shape[0], 'value')}, row 1 has {first[0]}")
            raise ValueError(f"ragged nesting: item {i} has shape {list(shape)}, item 1 has {list(first)}")
    return (len(value),) + first


def inline_tensor(value: Any, missing_ok: bool = False) -> Any:
    """Check an inline matrix, vector or scalar: rectangular, finite, small enough to write inline.
    With `missing_ok` (a target), NaN and null are missing entries, and come back as NaN."""
    shape = _shape_of(value, missing_ok=missing_ok)
    if len(shape) > MAX_RANK:
        raise ValueError(f"has {len(shape)} dimensions, at most {MAX_RANK} are supported")
    if math.prod(shape) > MAX_INLINE_ELEMENTS:
        raise ValueError(
            f"inline data has {math.prod(shape):,} elements, more than {MAX_INLINE_ELEMENTS:,}; "
            "put it in a file and use {file: PATH}"
        )
    return _nulls_as_nan(value) if missing_ok else value


def inline_target(value: Any) -> Any:
    """An inline target: NaN (`.nan`) or null marks a missing entry (models decide whether they take any)."""
    return inline_tensor(value, missing_ok=True)


def _nulls_as_nan(value: Any) -> Any:
    if isinstance(value, list):
        return [_nulls_as_nan(item) for item in value]
    return math.nan if value is None else value


def first_missing(value: Any, index: tuple[int, ...] = ()) -> tuple[int, ...] | None:
    """Where the first NaN of a validated inline tensor is, or None."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = first_missing(item, index + (i,))
            if found is not None:
                return found
        return None
    return index if isinstance(value, float) and math.isnan(value) else None


def where(index: tuple[int, ...]) -> str:
    return _where(index)


def shape_of(value: Any) -> tuple[int, ...]:
    """Shape of an already validated inline tensor (NaN entries allowed: a target's missing ones)."""
    return _shape_of(value, missing_ok=True)


def shape_list(value: Any) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ValueError(f"shape must be a list of positive integers like [3, 3], got {type_name(value)}")
    dims = [integer(v) for v in value]
    if any(d <= 0 for d in dims) or len(dims) > MAX_RANK:
        raise ValueError(f"shape must be 1 to {MAX_RANK} positive integers, got {dims}")
    return dims
