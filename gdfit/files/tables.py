"""Tables with a group column (many fits at once): read from .csv, .npz or .parquet, rows sorted
by group; and a results table written as .csv or .parquet.

Each distinct value of the group column is one group, in the order of first appearance. The other
columns are numbers (float64); an empty cell or `nan` (also NaN, NA, N/A, null) is a missing value.
pyarrow reads Parquet, and large CSVs when it is installed (Python's csv module manages about a
million rows a second; pyarrow's reader tens of millions).
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from gdfit.errors import InputFileError, MissingExtraError

SUFFIXES = (".csv", ".npz", ".parquet")
MISSING = frozenset({"", "nan", "NaN", "NAN", "NA", "N/A", "null", "NULL", "-nan"})
_INTEGER = re.compile(r"-?\d+\Z")


@dataclass
class GroupedTable:
    """Rows sorted by group: group g's rows are `columns[name][bounds[g]:bounds[g + 1]]`."""

    labels: list[Any]  # each group's value (int or str), in order of first appearance
    bounds: np.ndarray  # int64 [G + 1]
    columns: dict[str, np.ndarray]  # float64, one entry per row
    source: str
    # the columns that are not numbers (a well or plate ID), each with the error that says where:
    # raised only if the job reads one (`require_numbers`)
    text: dict[str, InputFileError] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """Every column but the group column."""
        return [*self.columns, *self.text]

    def require_numbers(self, names, key: str = "data.file") -> None:
        """Refuse (exit 2) a column among `names` that holds something other than numbers."""
        for name in names:
            if name in self.text:
                err = self.text[name]
                err.source, err.key = err.source or self.source, err.key or key
                raise err

    def __len__(self) -> int:
        return len(self.labels)

    def sizes(self) -> np.ndarray:
        return np.diff(self.bounds)


def require_pyarrow(why: str) -> Any:
    """pyarrow, or the error that says how to install it."""
    try:
        import pyarrow
    except ImportError:
        raise MissingExtraError(f"{why} needs pyarrow, which is not installed",
                                hint="pip install 'gdfit[parquet]'") from None
    return pyarrow


def _has_pyarrow() -> bool:
    try:
        import pyarrow.csv  # noqa: F401
    except ImportError:
        return False
    return True


def read_grouped(path: Path, group: str, guard: Callable[[int], None], key: str = "data.file") -> GroupedTable:
    """The table at `path` grouped by the column `group` (errors name the file and the column)."""
    name = str(path)
    if not path.is_file():
        raise InputFileError("no such file" if not path.exists() else "is not a regular file", source=name, key=key)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputFileError(f"unsupported data file type {suffix or '(none)'!r} for grouped data; use .csv, .npz "
                             "or .parquet", source=name, key=key)
    if suffix == ".parquet":
        require_pyarrow("reading .parquet")
    guard(path.stat().st_size // 2 if suffix == ".csv" else path.stat().st_size // 8)
    try:
        if suffix == ".npz":
            labels, columns = _npz(path, group)
        elif suffix == ".parquet":
            labels, columns = _arrow(_parquet(path), group)
        elif _has_pyarrow():
            labels, columns = _arrow(_arrow_csv(path, group), group)
        else:
            labels, columns = _python_csv(path, group)
    except InputFileError as err:
        err.source, err.key = err.source or name, err.key or key
        raise
    except MissingExtraError:
        raise
    except Exception as err:  # each format's own errors vary; all mean "bad file"
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise InputFileError(f"cannot read {suffix} file: {reason}", source=name, key=key) from None
    if not columns:
        raise InputFileError(f"holds no column beside the group column {group!r}", source=name, key=key)
    empty = _missing_label(labels)
    if empty is not None:  # a row of no group: not merged with a group named "None" or "nan"
        raise InputFileError(f"the group column {group!r} has no value in data row {empty + 1}; give every row "
                             "its group", source=name, key="data.group")
    text = {column: value for column, value in columns.items() if isinstance(value, InputFileError)}
    table = _sorted(labels, {column: value for column, value in columns.items() if column not in text}, name)
    table.text = text
    return table


def _missing_label(labels: np.ndarray) -> int | None:
    """The first row whose group value is missing (None, or a float NaN), if any."""
    if labels.dtype.kind == "f":
        missing = np.flatnonzero(np.isnan(labels))
    elif labels.dtype == object:
        missing = np.flatnonzero([v is None or (isinstance(v, float) and math.isnan(v)) for v in labels])
    else:
        return None
    return int(missing[0]) if len(missing) else None


def _missing_group(group: str, names: list[str]) -> InputFileError:
    return InputFileError(f"no group column {group!r}; the columns are {', '.join(names)}", key="data.group")


def _npz(path: Path, group: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as archive:
        names = list(archive.files)
        if group not in names:
            raise _missing_group(group, names)
        labels = archive[group]
        columns, arrays = {}, {}
        for name in names:
            array = archive[name]
            if array.ndim != 1:
                raise InputFileError(f"array {name!r} has shape {list(array.shape)}; expected a 1-D array")
            if name != group:
                arrays[name] = array
                columns[name] = np.asarray(array, dtype=np.float64) if array.dtype.kind in "fiub" else \
                    InputFileError(f"array {name!r} is {array.dtype}; expected numbers")
    _same_length(labels, arrays)
    return labels, columns


def _same_length(labels: np.ndarray, columns: dict[str, np.ndarray]) -> None:
    lengths = {name: len(c) for name, c in columns.items()}
    if any(n != len(labels) for n in lengths.values()):
        raise InputFileError(f"arrays differ in length (group: {len(labels)}, "
                             + ", ".join(f"{n}: {k}" for n, k in lengths.items()) + ")")


def _parquet(path: Path):
    import pyarrow.parquet as pq

    return pq.read_table(path)


def _arrow_csv(path: Path, group: str):
    import pyarrow as pa
    import pyarrow.csv as pcsv

    header, delimiter = _header(path)
    if group not in header:
        raise _missing_group(group, header)
    # every column as text first: a cell that is not a number is then found and named (below);
    # the header as read here (without a byte-order mark), in whichever of , ; or tab it uses
    convert = pcsv.ConvertOptions(column_types={name: pa.string() for name in header}, strings_can_be_null=False)
    return pcsv.read_csv(path, read_options=pcsv.ReadOptions(column_names=header, skip_rows=1, encoding="utf8"),
                         parse_options=pcsv.ParseOptions(delimiter=delimiter), convert_options=convert)


def _header(path: Path) -> tuple[list[str], str]:
    """The header's column names and the delimiter it uses (a spreadsheet's ; or tab, as for one
    fit's CSV: files.dialect); a UTF-8 byte-order mark is no part of the first name."""
    from gdfit.files.dialect import delimiter_of

    with open(path, encoding="utf-8-sig", newline="") as handle:
        first = handle.readline()
    if not first.strip():
        raise InputFileError("is empty: expected a header row of column names")
    delimiter = delimiter_of(first)
    return [cell.strip() for cell in next(csv.reader([first], delimiter=delimiter))], delimiter


def _arrow(table, group: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A pyarrow table's group column (as numpy) and its other columns as float64."""
    import pyarrow as pa
    import pyarrow.compute as pc

    names = [str(n).strip() for n in table.column_names]
    if group not in names:
        raise _missing_group(group, names)
    columns = {}
    for name, column in zip(names, table.columns):
        if name == group:
            continue
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            text = pc.utf8_trim_whitespace(column)
            missing = pc.is_in(text, value_set=pa.array(sorted(MISSING)))
            text = pc.if_else(missing, pa.scalar("nan"), text)
            try:
                column = pc.cast(text, pa.float64())
            except pa.ArrowInvalid:
                columns[name] = _bad_cell(name, text.to_pylist(), table.column(group).to_pylist())
                continue
        elif not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)
                  or pa.types.is_boolean(column.type) or pa.types.is_null(column.type)):
            columns[name] = InputFileError(f"column {name!r} holds {column.type}; expected numbers")
            continue
        columns[name] = column.to_numpy(zero_copy_only=False).astype(np.float64)
    labels = table.column(names.index(group))
    if pa.types.is_string(labels.type) or pa.types.is_large_string(labels.type):
        labels = pc.utf8_trim_whitespace(labels)
    return np.asarray(labels.to_numpy(zero_copy_only=False)), columns


def _bad_cell(name: str, cells: list[str], groups: list[Any]) -> InputFileError:
    """The first cell of a column that is not a number, by its line in the file and its group."""
    for row, cell in enumerate(cells):
        try:
            float(cell)
        except (TypeError, ValueError):
            return InputFileError(f"line {row + 2}, column {name!r} (group {groups[row]!r}): {cell!r} is not a number")
    return InputFileError(f"column {name!r} holds a value that is not a number")


def _python_csv(path: Path, group: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Without pyarrow: the csv module, a row at a time."""
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=_header(path)[1] if path.stat().st_size else ",")
        header = [cell.strip() for cell in next(reader, [])]
        if not header:
            raise InputFileError("is empty: expected a header row of column names")
        if group not in header:
            raise _missing_group(group, header)
        at = header.index(group)
        labels: list[str] = []
        values: list[list[float]] = [[] for _ in header]
        text: dict[int, InputFileError] = {}  # a column's first cell that is not a number
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise InputFileError(f"line {line} has {len(row)} values, the header {len(header)}")
            for i, cell in enumerate(row):
                cell = cell.strip()
                if i == at:
                    labels.append(cell)
                    continue
                if i in text:
                    continue
                try:
                    values[i].append(math.nan if cell in MISSING else float(cell))
                except ValueError:
                    text[i] = InputFileError(f"line {line}, column {header[i]!r} (group {row[at].strip()!r}): "
                                             f"{cell!r} is not a number")
    return np.array(labels, dtype=object), {name: text[i] if i in text else np.array(values[i], dtype=np.float64)
                                            for i, name in enumerate(header) if i != at}


def _sorted(labels: np.ndarray, columns: dict[str, np.ndarray], source: str) -> GroupedTable:
    """Rows sorted (stably) by group, groups in the order of first appearance."""
    if len(labels) == 0:
        raise InputFileError("has a header but no rows", source=source, key="data.file")
    keys = labels.astype(str) if labels.dtype == object else labels
    distinct, first, codes = np.unique(keys, return_index=True, return_inverse=True)
    rank = np.empty(len(distinct), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(distinct))
    codes = rank[codes.reshape(-1)]
    order = np.argsort(codes, kind="stable")
    bounds = np.zeros(len(distinct) + 1, dtype=np.int64)
    np.cumsum(np.bincount(codes, minlength=len(distinct)), out=bounds[1:])
    values = [_label(labels[i]) for i in np.sort(first)]
    return GroupedTable(values, bounds, {name: np.ascontiguousarray(c[order]) for name, c in columns.items()}, source)


def _label(value: Any) -> Any:
    """A group's value as JSON shows it: an integer stays one (also when written as text), a
    whole float becomes an integer, anything else is text."""
    if isinstance(value, (bytes, np.bytes_)):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return int(value) if float(value).is_integer() else float(value)
    text = str(value)
    # "42" is the integer 42; "007" and "+7" stay text, as written
    return int(text) if _INTEGER.match(text) and len(text) < 19 and str(int(text)) == text else text


# ---------------------------------------------------------------- writing


def table_bytes(path: Path, columns: dict[str, list], metadata: dict[str, str] | None = None) -> Callable:
    """A writer of `columns` (name -> values, one per row) as .csv or .parquet (with `metadata` in
    its schema), for write_atomic."""
    if path.suffix.lower() == ".parquet":
        pa = require_pyarrow("writing .parquet")

        def write_parquet(handle) -> None:
            import pyarrow.parquet as pq

            table = pa.table({name: pa.array(values, from_pandas=True) if isinstance(values, np.ndarray)
                              else pa.array(_one_type(values)) for name, values in columns.items()})
            pq.write_table(table.replace_schema_metadata(metadata or {}), handle)

        return write_parquet

    def write_csv(handle) -> None:
        import io

        text = io.TextIOWrapper(handle, encoding="utf-8", newline="")
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(zip(*(_cells(values) for values in columns.values())))
        text.flush()
        text.detach()

    return write_csv


def _one_type(values: list) -> list:
    """A column Parquet can type: values of mixed kinds (group labels 7 and '007') as their text,
    which keeps them apart as a CSV does; None stays missing."""
    kinds = {type(v) for v in values if v is not None}
    if len(kinds) <= 1 or kinds <= {int, float}:
        return values
    return [None if v is None else str(v) for v in values]


def _cells(values) -> list:
    """CSV cells: a missing number (None, NaN, an infinity) is empty, a float keeps every digit (repr)."""
    if isinstance(values, np.ndarray):
        values = values.tolist()
    return ["" if v is None or (isinstance(v, float) and not math.isfinite(v)) else repr(v) if isinstance(v, float)
            else v for v in values]
