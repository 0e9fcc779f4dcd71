"""Data for curve fits: named 1-D columns from a CSV with a header row, or an .npz of named arrays.

The same guards as target files: no pickles, the memory check before the numbers are held, and
errors that name the file and the column.
"""

from __future__ import annotations

import csv
import io
import re
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from gdfit.errors import InputFileError, ResourceError
from gdfit.reading import TooLarge
from gdfit.words import plural

MAX_COLUMNS = 1000


def read_columns(path: Path, guard: Callable[[int], None], key: str = "data.file") -> dict[str, np.ndarray]:
    """Columns by name, float64; `nan` stays NaN (a missing value), other text is an error."""
    name = str(path)
    if not path.exists():
        from gdfit.files.paths import missing_reason

        raise InputFileError(missing_reason(path), source=name, key=key)
    if not path.is_file():
        raise InputFileError("is not a regular file", source=name, key=key)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".npz"):
        raise InputFileError(f"unsupported data file type {suffix or '(none)'!r}; use .csv (with a header row) or .npz",
                             source=name, key=key)
    try:
        columns = _csv(path, guard) if suffix == ".csv" else _npz(path, guard)
    except (InputFileError, ResourceError) as err:
        err.source, err.key = err.source or name, err.key or key
        raise
    except MemoryError:
        raise ResourceError("not enough memory to read the file", source=name, key=key) from None
    except TooLarge as err:
        raise InputFileError(f"the file {err.describe()}", source=name, key=key) from None
    except Exception as err:  # each format's own errors vary; all mean "bad file"
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise InputFileError(f"cannot read {suffix} file: {reason}", source=name, key=key) from None
    if not columns:
        raise InputFileError("holds no columns", source=name, key=key)
    return columns


def _csv(path: Path, guard: Callable[[int], None]) -> dict[str, np.ndarray]:
    from gdfit.files.dialect import decode, plain_csv
    from gdfit.reading import TEXT_FILE_BYTES, read_file

    guard(path.stat().st_size // 2)  # at least two bytes of text per number
    # a BOM, semicolons or tabs, quoted numbers, a trailing comma: read as the plain table they mean
    lines = plain_csv(decode(read_file(path, TEXT_FILE_BYTES))).splitlines(keepends=True)
    consumed = 0
    while consumed < len(lines) and (not lines[consumed].strip() or lines[consumed].lstrip().startswith("#")):
        consumed += 1
    if consumed == len(lines):
        raise InputFileError("is empty: expected a header row of column names")
    header = [cell.strip() for cell in next(csv.reader([lines[consumed]]))]
    consumed += 1
    _check_names(header)
    text = "".join(lines[consumed:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no rows is our own error below
        try:
            rows = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float64, comments="#", ndmin=2)
        except ValueError as err:
            raise InputFileError(_cell_problem(str(err), text, consumed, header)) from None
    if rows.size == 0:
        raise InputFileError("has a header but no rows of numbers")
    if rows.shape[1] != len(header):
        raise InputFileError(f"has {plural(rows.shape[1], 'value')} per row but {plural(len(header), 'column name')} in its header")
    return {name: np.ascontiguousarray(rows[:, i]) for i, name in enumerate(header)}


_BAD_VALUE = re.compile(r"could not convert string '(.*)' to float\d* at row (\d+), column (\d+)")
_BAD_WIDTH = re.compile(r"number of columns changed from (\d+) to (\d+) at row (\d+)")


def _cell_problem(message: str, text: str, before: int, header: list[str]) -> str:
    """numpy's complaint in the file's own terms: its line number (numpy counts data rows only,
    from 0 for a bad value and from 1 for a bad width) and the column's name."""
    data_lines = [before + i for i, line in enumerate(text.splitlines(), start=1) if line.split("#", 1)[0].strip()]
    value = _BAD_VALUE.search(message)
    if value:
        cell, row, column = value.group(1), int(value.group(2)), int(value.group(3))
        line = data_lines[row] if row < len(data_lines) else None
        name = f" ({header[column - 1]!r})" if 0 < column <= len(header) else ""
        where = f"line {line}, column {column}{name}" if line else f"column {column}{name}"
        if not cell.strip():
            return f"{where} is empty: write nan for a missing value"
        return f"{where}: {cell!r} is not a number"
    width = _BAD_WIDTH.search(message)
    if width:
        first, found, row = (int(g) for g in width.groups())
        line = data_lines[row - 1] if 0 < row <= len(data_lines) else None
        return f"line {line} has {plural(found, 'value')}, the rows before it {first}" if line else message
    return message.splitlines()[0][:200] if message else "not a table of numbers"


def _declared(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Each array's shape and dtype as its .npy header in the archive declares them, read before any
    data: a compressed archive of 1.5 MB can declare gigabytes, so its file size says nothing."""
    import zipfile

    from numpy.lib import format as npy

    declared = {}
    with zipfile.ZipFile(path) as archive:
        for member in archive.infolist():
            with archive.open(member) as stream:
                version = npy.read_magic(stream)
                read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
                shape, _fortran, dtype = read_header(stream, max_header_size=10_000)
            declared[member.filename.removesuffix(".npy")] = (tuple(shape), dtype)
    return declared


def _npz(path: Path, guard: Callable[[int], None]) -> dict[str, np.ndarray]:
    declared = _declared(path)
    for name, (shape, dtype) in declared.items():
        if len(shape) != 1 or dtype.kind not in "fiub":
            raise InputFileError(f"array {name!r} is {dtype} of shape {list(shape)}; expected a 1-D array of numbers",
                                 key=f"data.{name}")
    from gdfit.reading import BINARY_FILE_BYTES

    size = sum(shape[0] * dtype.itemsize for shape, dtype in declared.values())
    if size > BINARY_FILE_BYTES:  # the limit of an .npy file, held to what the archive unpacks to
        raise InputFileError(f"its arrays would unpack to {size / 2**30:.2f} GiB; at most "
                             f"{BINARY_FILE_BYTES / 2**30:g} GiB of .npz data is read")
    guard(sum(shape[0] for shape, _ in declared.values()))  # all columns, as float64, before one is read
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
