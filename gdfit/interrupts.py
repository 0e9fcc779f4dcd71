"""Ctrl-C and SIGTERM: the first asks the run to stop after the current update; a second
Ctrl-C aborts at once. A failed stdout (`| head`, `> /dev/full`) asks the same as a first Ctrl-C."""

from __future__ import annotations

import signal
import threading
from types import FrameType

from gdfit import stdout


class StopRequest:
    """A context manager whose `requested` flag the descent loop reads once per update."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}
        self._unlisten = lambda: None

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: abort now
        self.requested = True

    def _stdout_failed(self) -> None:
        self.requested = True

    def __enter__(self) -> StopRequest:
        self._unlisten = stdout.on_failure(self._stdout_failed)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self._unlisten()
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
