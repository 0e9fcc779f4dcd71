"""Standard output that never takes the run down with it.

A reader that goes away (`| head`), a full disk (`> /dev/full`) or a closed descriptor (`>&-`) must
not lose what matters: the `--output` document, the plot, the checkpoint and the sweep folder. The
CLI puts this guard in front of stdout: the first failed write is remembered, later output is
dropped, and the running command is asked to stop as Ctrl-C would ask it (finish the update, save,
exit). The CLI edge then exits 141 for a closed pipe, or 2 with a message for any other failure.
"""

from __future__ import annotations

import errno
import io
import os
import select
import stat
import sys
from typing import Any, Callable

_listeners: list[Callable[[], None]] = []


def on_failure(callback: Callable[[], None]) -> Callable[[], None]:
    """Call `callback` when stdout fails; returns a function that removes it again."""
    _listeners.append(callback)
    return lambda: _listeners.remove(callback) if callback in _listeners else None


class GuardedStdout(io.TextIOBase):
    """A text stream around stdout whose writes never raise."""

    def __init__(self, stream: Any) -> None:
        super().__init__()
        self.stream = stream
        self.problem: OSError | None = None

    @property
    def broken_pipe(self) -> bool:
        return isinstance(self.problem, BrokenPipeError)

    def write(self, text: str) -> int:
        if self.problem is None:
            try:
                self.stream.write(text)
            except OSError as err:
                self._failed(err)
        return len(text)

    def flush(self) -> None:
        if self.problem is None:
            try:
                self.stream.flush()
            except OSError as err:
                self._failed(err)

    def write_all(self, text: str) -> None:
        """Write `text` (whole lines) straight to the descriptor, after what the stream holds: one
        write call for many lines however stdout is buffered (PYTHONUNBUFFERED makes the stream's
        own writes one call per line). A write the kernel cuts short (a signal while a pipe is
        full) goes on where it stopped, and a second Ctrl-C still finishes the line it cut, so no
        line is ever torn. A stream without a descriptor (a test's StringIO) gets write and flush."""
        if self.problem is not None:
            return
        try:
            fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError):
            self.write(text)
            self.flush()
            return
        data = memoryview(text.encode(self.encoding, self.errors or "strict"))
        done = 0
        try:
            self.stream.flush()
            while done < len(data):
                done += os.write(fd, data[done:])
        except OSError as err:
            self._failed(err)
        except BaseException:
            if data[done - 1] != ord("\n"):  # `text` ends a line: nothing written ends one too
                self._finish_line(fd, data[done:])
            raise

    def _finish_line(self, fd: int, rest: memoryview) -> None:
        end = bytes(rest).find(b"\n") + 1
        try:
            while end > 0:
                written = os.write(fd, rest[:end])
                rest, end = rest[written:], end - written
        except OSError as err:
            self._failed(err)

    def check_reader(self) -> None:
        """Notice a pipe whose reader went away before anything is written to it. Human mode on a
        pipe writes nothing between the start panel and the end, so `gdfit run long.yaml | head`
        would otherwise run to the end; Linux marks such a pipe's write end with POLLERR."""
        if self.problem is not None:
            return
        try:
            fd = self.stream.fileno()
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                return
            poller = select.poll()
            poller.register(fd, select.POLLOUT)
            events = poller.poll(0)
        except (AttributeError, OSError, ValueError):
            return
        if any(mask & select.POLLERR for _, mask in events):
            self._failed(BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE)))

    def _failed(self, err: OSError) -> None:
        self.problem = err
        silence(self.stream)
        for callback in list(_listeners):
            callback()

    # what rich and click ask of a stream; `buffer` is left out so that nothing writes around us
    def isatty(self) -> bool:
        try:
            return self.stream.isatty()
        except (AttributeError, OSError, ValueError):
            return False

    def fileno(self) -> int:
        return self.stream.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.stream, "errors", None)


def check_reader() -> None:
    """Renderers that stay quiet on a pipe call this now and then (see GuardedStdout.check_reader)."""
    if isinstance(sys.stdout, GuardedStdout):
        sys.stdout.check_reader()


def silence(stream: Any) -> None:
    """Point the descriptor under `stream` at /dev/null, so later flushes (the interpreter's last
    one included) succeed quietly. Streams without a descriptor (tests' StringIO) are left alone."""
    try:
        fd = stream.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
    except (AttributeError, OSError, ValueError):
        return
    try:
        os.dup2(devnull, fd)
    except OSError:
        pass
    finally:
        os.close(devnull)


def guard() -> GuardedStdout:
    """Put the guard in front of sys.stdout. A closed stdout (`>&-`) becomes /dev/null, as the user
    asked for no output; descriptor 1 is taken so that no file gdfit opens can land on it."""
    stream = sys.stdout
    if stream is None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        if devnull != 1:
            os.dup2(devnull, 1)
            os.close(devnull)
        stream = open(1, "w", encoding="utf-8", closefd=False)
    guarded = GuardedStdout(stream)
    sys.stdout = guarded
    return guarded
