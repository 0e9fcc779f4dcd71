"""CSV files as people have them: a UTF-8 byte-order mark (Excel's "CSV UTF-8"), semicolons or tabs
between values (spreadsheets in locales with a decimal comma), quoted numbers, a trailing comma on
every line. Each is read as the comma-separated numbers it means; what cannot be read (Latin-1
bytes, a decimal comma) is refused with the line it is on and what was expected."""

from __future__ import annotations

import csv
import io
import re

from gdfit.errors import InputFileError

DELIMITERS = (",", ";", "\t")
_DECIMAL_COMMA = re.compile(r"^\s*[-+]?\d+,\d+(?:[eE][-+]?\d+)?\s*$")


def decode(raw: bytes) -> str:
    """UTF-8 text without its byte-order mark; other bytes are refused with their line."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise InputFileError(f"line {line}, column {column}: byte 0x{raw[err.start]:02x} is not UTF-8 text (a "
                             "Latin-1 or Windows file?); save the file as UTF-8 (in Excel: CSV UTF-8)") from None


def delimiter_of(line: str) -> str:
    """The delimiter a header or first row uses: the most frequent of comma, semicolon and tab."""
    counts = {d: line.count(d) for d in DELIMITERS}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def needs_rewrite(text: str, delimiter: str) -> bool:
    """Whether the text is anything but plain comma-separated cells (the fast reader's input)."""
    return delimiter != "," or '"' in text or bool(re.search(r",[ \t]*\r?$", text, re.MULTILINE))


def rewrite(text: str, delimiter: str, header: bool = True) -> str:
    """The same table as plain comma-separated text: quotes removed, cells stripped, and, in a
    table with a header row, a trailing empty column (a comma at the end of every line, the
    header's too) dropped; without a header an empty last cell is a missing entry and stays.
    Comment and blank lines stay, so line numbers in later messages are the file's own."""
    lines = text.splitlines()
    rows: list[list[str] | None] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            rows.append(None)
            continue
        cells = [cell.strip() for cell in next(csv.reader([line], delimiter=delimiter, skipinitialspace=True))]
        if delimiter != ",":
            for cell in cells:
                if _DECIMAL_COMMA.match(cell):
                    raise InputFileError(f"line {number}: {cell!r} has a decimal comma; gdfit reads numbers with a "
                                         "decimal point (1.5, not 1,5)")
        rows.append(cells)
    filled = [r for r in rows if r is not None]
    if header and filled and all(len(r) > 1 and r[-1] == "" for r in filled):
        filled_rows = [r[:-1] if r is not None else None for r in rows]
    else:
        filled_rows = rows
    out = io.StringIO()
    for line, cells in zip(lines, filled_rows):
        out.write((line if cells is None else ",".join(cells)) + "\n")
    return out.getvalue()


def plain_csv(text: str, header: bool = True) -> str:
    """Any of the dialects above as plain comma-separated text (unchanged when it already is)."""
    first = next((line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")), "")
    delimiter = delimiter_of(first)
    return rewrite(text, delimiter, header) if needs_rewrite(text, delimiter) else text
