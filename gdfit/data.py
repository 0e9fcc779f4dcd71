"""Data for curve fits: named 1-D columns from a CSV with a header row, or an .npz of named arrays.

The same guards as target files: no pickles, the memory check before the numbers are held, and
errors that name the file and the column.
"""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from gdfit.errors import InputFileError
from gdfit.words import plural

MAX_COLUMNS = 1000


def read_columns(path: Path, guard: Callable[[int], None], key: str = "data.file") -> dict[str, np.ndarray]:
    """Columns by name, float64; `nan` stays NaN (a missing value), other text is an error."""
    name = str(path)
    if not path.exists():
        raise InputFileError("no such file", source=name, key=key)
    if not path.is_file():
        raise InputFileError("is not a regular file", source=name, key=key)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".npz"):
        raise InputFileError(f"unsupported data file type {suffix or '(none)'!r}; use .csv (with a header row) or .npz",
                             source=name, key=key)
    try:
        columns = _csv(path, guard) if suffix == ".csv" else _npz(path, guard)
    except InputFileError as err:
        err.source, err.key = err.source or name, err.key or key
        raise
    except Exception as err:  # each format's own errors vary; all mean "bad file"
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise InputFileError(f"cannot read {suffix} file: {reason}", source=name, key=key) from None
    if not columns:
        raise InputFileError("holds no columns", source=name, key=key)
    return columns


def _csv(path: Path, guard: Callable[[int], None]) -> dict[str, np.ndarray]:
    guard(path.stat().st_size // 2)  # at least two bytes of text per number
    with open(path, encoding="utf-8", newline="") as handle:
        header_line = ""
        while not header_line.strip() or header_line.lstrip().startswith("#"):
            header_line = handle.readline()
            if not header_line:
                raise InputFileError("is empty: expected a header row of column names")
        header = [cell.strip() for cell in next(csv.reader([header_line]))]
        _check_names(header)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no rows is our own error below
            rows = np.loadtxt(io.StringIO(handle.read()), delimiter=",", dtype=np.float64, comments="#", ndmin=2)
    if rows.size == 0:
        raise InputFileError("has a header but no rows of numbers")
    if rows.shape[1] != len(header):
        raise InputFileError(f"has {plural(rows.shape[1], 'value')} per row but {plural(len(header), 'column name')} in its header")
    return {name: np.ascontiguousarray(rows[:, i]) for i, name in enumerate(header)}


def _npz(path: Path, guard: Callable[[int], None]) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        names = list(archive.files)
        _check_names(names)
        columns = {}
        for name in names:
            array = archive[name]
            guard(int(array.size))
            if array.ndim != 1 or array.dtype.kind not in "fiub":
                raise InputFileError(f"array {name!r} is {array.dtype} of shape {list(array.shape)}; "
                                     "expected a 1-D array of numbers", key=f"data.{name}")
            columns[name] = np.asarray(array, dtype=np.float64)
    lengths = {len(c) for c in columns.values()}
    if len(lengths) > 1:
        raise InputFileError(f"arrays differ in length ({', '.join(f'{n}: {len(c)}' for n, c in columns.items())})")
    return columns


def _check_names(names: list[str]) -> None:
    if len(names) > MAX_COLUMNS:
        raise InputFileError(f"has {len(names)} columns; at most {MAX_COLUMNS} are allowed")
    for name in names:
        if not name.isidentifier() or name == "pi":
            raise InputFileError(f"column name {name!r} cannot be used in an expression: use letters, digits "
                                 "and _, not starting with a digit (and not pi)")
    seen = {name for name in names if names.count(name) > 1}
    if seen:
        raise InputFileError(f"column name {sorted(seen)[0]!r} appears twice")
