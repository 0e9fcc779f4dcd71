"""Bounded reads: every file or stream gdfit reads stops at a documented size, in bounded memory.

A regular file is measured with fstat before a byte is read; anything else (a pipe, stdin,
/dev/zero, /dev/urandom) is read in blocks and refused as soon as it passes its limit, so no input
can make gdfit read more than its limit plus one block.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import IO, AnyStr, Callable

CONFIG_BYTES = 2_000_000  # a config file or stdin; inline data beyond this belongs in {file: ...}
TEXT_FILE_BYTES = 256 * 2**20  # a .csv/.txt target or init
BINARY_FILE_BYTES = 2 * 2**30  # a .npy/.pt target or init
SAVED_RESULT_BYTES = 256 * 2**20  # an input of `gdfit plot`
JOURNAL_FILE_BYTES = 2**30  # a sweep folder's config.json and summary.json
JOURNAL_LINE_BYTES = 64 * 2**20  # one line of a sweep folder's runs.jsonl
BLOCK = 1 << 20


class TooLarge(Exception):
    """Raised with the size found (None when unknown: a stream that passed the limit)."""

    def __init__(self, size: int | None, limit: int) -> None:
        super().__init__(size, limit)
        self.size, self.limit = size, limit

    def describe(self, unit: str = "bytes") -> str:
        found = f"is {self.size:,} {unit}" if self.size is not None else f"holds more than {self.limit:,} {unit}"
        return f"{found}; the limit is {self.limit:,} {unit}"


def read_stream(handle: IO[AnyStr], limit: int) -> AnyStr:
    """At most `limit` bytes (or characters, for a text stream) of `handle`; TooLarge past that."""
    parts, total = [], 0
    while True:
        part = handle.read(min(BLOCK, limit + 1 - total))
        if not part:
            break
        parts.append(part)
        total += len(part)
        if total > limit:
            raise TooLarge(None, limit)
    return parts[0][:0].join(parts) if parts else handle.read(0)


def read_file(path: str | Path, limit: int) -> bytes:
    """The bytes of `path`, refused by fstat (regular files) or while reading (anything else)."""
    with open(path, "rb", buffering=0) as handle:
        info = os.fstat(handle.fileno())
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(21, "Is a directory", str(path))
        check_size(info, limit)
        return read_stream(handle, limit)


def check_size(info: os.stat_result, limit: int) -> None:
    """TooLarge when a regular file's recorded size is over `limit`."""
    if stat.S_ISREG(info.st_mode) and info.st_size > limit:
        raise TooLarge(info.st_size, limit)


def opened_regular(path: str | Path, limit: int, refuse: Callable[[str], Exception]) -> IO[bytes]:
    """`path` opened for reading, when it is a regular file of at most `limit` bytes."""
    handle = open(path, "rb")
    try:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise refuse("is not a regular file")
        check_size(info, limit)
    except BaseException:
        handle.close()
        raise
    return handle
