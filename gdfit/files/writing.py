"""Files written whole or not at all (a temp file in the same folder + fsync + os.replace), and
the checks that make an unwritable output fail before a run rather than after it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from gdfit.errors import OutputError


def _target(path: Path, key: str) -> Path:
    """Where a write lands: through a symlink to its target; never onto a device, FIFO or socket,
    which an atomic rename would replace with a regular file."""
    if path.is_symlink():
        from gdfit.files.paths import missing_reason

        if "loop" in missing_reason(path):
            raise OutputError(missing_reason(path), source=str(path), key=key)
    real = Path(os.path.realpath(path)) if path.is_symlink() else path
    if real.exists() and not real.is_file() and not real.is_dir():
        raise OutputError("is not a regular file (a device, FIFO or socket); gdfit writes only regular files",
                          source=str(path), key=key)
    return real


def check_writable(path: Path, key: str = "--output") -> None:
    """Fail before a run, not after it, when the output folder is missing or read-only."""
    path = _target(path, key)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError("is a directory", source=str(path), key=key)
    if not folder.is_dir():
        raise OutputError(f"folder {str(folder)!r} does not exist", source=str(path), key=key)
    if not os.access(folder, os.W_OK):
        raise OutputError(f"folder {str(folder)!r} is not writable", source=str(path), key=key)


def write_atomic(path: Path, text: str | bytes | Callable[[BinaryIO], None], key: str = "--output") -> None:
    """Write `text` (or what a writer function writes) so that readers see the old file or the
    new one, never half of one. A symlink is written through: its target is replaced."""
    path = _target(path, key)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        try:
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
            with os.fdopen(fd, "wb") as handle:
                if callable(text):
                    text(handle)
                else:
                    handle.write(text.encode("utf-8") if isinstance(text, str) else text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as err:
        raise OutputError(f"cannot write: {err.strerror or err}", source=str(path), key=key) from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
