"""Ctrl-C and SIGTERM: the first asks the run to stop after the current update; a second
Ctrl-C aborts at once. A failed stdout (`| head`, `> /dev/full`) asks the same as a first Ctrl-C."""

from __future__ import annotations

import signal
import threading
from types import FrameType

from gdfit.files import stdout


_listening: StopRequest | None = None  # the innermost StopRequest in force, for pause_point


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
        global _listening
        self._outer, _listening = _listening, self
        self._unlisten = stdout.on_failure(self._stdout_failed)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                # a signal this process was started ignoring stays ignored, as Python leaves it: a
                # shell without job control starts `gdfit ... &` so that Ctrl-C spares it
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        global _listening
        _listening = self._outer
        self._unlisten()
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


PAUSE_ENV = "GDFIT_PAUSE_AT"


def pause_point(phase: str) -> None:
    """A named phase where tests make a Ctrl-C land for certain: with GDFIT_PAUSE_AT=phase the
    process says so on stderr and waits until the signal ends the wait (a KeyboardInterrupt, or
    the stop flag of the StopRequest in force). Without the variable it does nothing."""
    import os

    if os.environ.get(PAUSE_ENV) != phase:
        return
    import sys
    import time

    print(f"gdfit: paused at {phase}", file=sys.stderr, flush=True)
    while _listening is None or not _listening():
        time.sleep(0.01)
