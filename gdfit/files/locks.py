"""One writer per file: an exclusive `fcntl.flock` on a checkpoint, an output or a sweep folder
while a run writes it. A second gdfit that would write the same file is refused (exit 2) with the
holder's PID, instead of two runs interleaving their records or replacing each other's results.

A file that is replaced atomically changes its inode at every write, so the lock is a small file
beside it (`.NAME.lock`, removed when the run ends); a sweep folder's lock is `.lock` inside it.
"""

from __future__ import annotations

import os
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from gdfit.errors import OutputError

FOLDER_LOCK = ".lock"


def lock_path(path: Path, folder: bool = False) -> Path:
    """Where the lock of `path` lives: beside the file it names (through symlinks), or in the folder."""
    real = Path(os.path.realpath(path))
    return real / FOLDER_LOCK if folder else real.parent / f".{real.name}.lock"


@contextmanager
def hold(path: Path, key: str, folder: bool = False) -> Iterator[None]:
    """Hold `path`'s lock while the block runs; refuse when another process holds it. A lock that
    cannot be made (a missing or read-only folder) is left to the write itself to report."""
    import fcntl

    where = lock_path(path, folder)
    while True:
        try:
            fd = os.open(where, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _holder(fd)
            os.close(fd)
            raise OutputError(f"is being written by another gdfit process{f' (PID {holder})' if holder else ''}; "
                              "wait for it to end, or choose another path", source=str(path), key=key) from None
        if _same_file(fd, where):  # not a lock file its last holder removed while we opened it
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        if not folder:
            try:
                os.unlink(where)
            except OSError:
                pass
        os.close(fd)


def hold_all(uses: Iterable[tuple[Path | None, str, bool]]) -> ExitStack:
    """Hold the locks of several (path, key, is_folder) at once, each file once; release them together."""
    stack = ExitStack()
    seen = set()
    try:
        for path, key, folder in uses:
            if path is None or lock_path(path, folder) in seen:
                continue
            seen.add(lock_path(path, folder))
            stack.enter_context(hold(path, key, folder))
    except BaseException:
        stack.close()
        raise
    return stack


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""


def _same_file(fd: int, where: Path) -> bool:
    try:
        opened, named = os.fstat(fd), os.stat(where)
    except OSError:
        return False
    return (opened.st_dev, opened.st_ino) == (named.st_dev, named.st_ino)
