"""SIGINT/SIGTERM -> finish the current optimizer step, save a checkpoint, exit cleanly.

The handler only records the signal; the loop checks :attr:`StopRequest.signal_name` after each
optimizer step, so a checkpoint is never taken halfway through an accumulation window. A second
SIGINT while stopping falls back to Python's KeyboardInterrupt. Outside the loop (loading, the
final save) :func:`sigterm_exits` turns SIGTERM into :class:`Terminated`, a clean exit 143.
"""

from __future__ import annotations

import contextlib
import signal
import threading

EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}


class Terminated(SystemExit):
    """SIGTERM outside the training loop. A SystemExit, so even uncaught it exits 143 with no traceback."""

    def __init__(self):
        super().__init__(EXIT_CODES["SIGTERM"])


def _raise_terminated(signum, frame):
    raise Terminated


@contextlib.contextmanager
def sigterm_exits():
    """While inside, SIGTERM raises :class:`Terminated` (the default action would kill with no message)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class StopRequest:
    """Context manager that installs the handlers and remembers which signal arrived."""

    def __init__(self):
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = name

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @property
    def exit_code(self) -> int:
        """Shell convention 128 + signal number (0 when no signal arrived)."""
        return EXIT_CODES.get(self.signal_name, 0) if self.signal_name else 0
