"""Every SIGINT/SIGTERM rule of a training process, and its exit codes (shell convention: 128 + signal number).

A run passes through four phases, each with its handler from here:

- starting (``train.py`` importing torch and the packages): :func:`exit_on_sigterm_while_starting` makes
  SIGTERM exit 143 at once with one line;
- loading and finishing (inside ``training.run.main``): :func:`sigterm_exits` turns SIGTERM into
  :class:`Terminated`, a clean exit 143;
- training steps (inside the loop): :func:`stop_after_step` only records the signal; the loop checks
  :attr:`StopRequest.signal_name` after each optimizer step, so a checkpoint is never taken halfway through
  an accumulation window, and the process exits with ``EXIT_CODES[signal_name]``. A second SIGINT while
  stopping falls back to Python's KeyboardInterrupt;
- exiting: :func:`ignore_sigterm`.

This module imports only the standard library: ``train.py`` imports it before torch.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator

EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}


class Terminated(SystemExit):
    """SIGTERM outside the training loop. A SystemExit, so even uncaught it exits 143 with no traceback."""

    message = (
        "terminated by SIGTERM outside the training steps (while loading or finishing); "
        "checkpoints already written are complete"
    )

    def __init__(self):
        super().__init__(EXIT_CODES["SIGTERM"])


def _exit_while_starting(signum, frame):
    # Exit at once rather than raise: an exception raised inside a library's import can be swallowed
    # there (the run then went on training) or leave it half imported. Nothing is written before main().
    os.write(2, b"terminated by SIGTERM while starting; nothing to save\n")
    os._exit(EXIT_CODES["SIGTERM"])


def exit_on_sigterm_while_starting() -> None:
    """From now on SIGTERM exits 143 with one line; call it before importing torch (the default would kill silently)."""
    signal.signal(signal.SIGTERM, _exit_while_starting)


def ignore_sigterm() -> None:
    """Ignore SIGTERM from now on: the process is exiting, and a late one (torchrun stopping the other
    ranks) must not raise in atexit callbacks."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


@contextlib.contextmanager
def _handlers(handlers: dict[int, Callable]) -> Iterator[None]:
    """Install ``handlers`` while inside, then put the previous ones back (a no-op outside the main thread,
    the only one where handlers can be set)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _raise_terminated(signum, frame):
    raise Terminated


def sigterm_exits() -> contextlib.AbstractContextManager[None]:
    """While inside, SIGTERM raises :class:`Terminated` (the default action would kill with no message)."""
    return _handlers({signal.SIGTERM: _raise_terminated})


class StopRequest:
    """Which stop signal arrived during the training steps (``signal_name`` None until one does)."""

    def __init__(self):
        self.signal_name: str | None = None

    def handle(self, signum, frame) -> None:
        """Signal handler: remember the signal; a second SIGINT raises KeyboardInterrupt."""
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name


@contextlib.contextmanager
def stop_after_step() -> Iterator[StopRequest]:
    """While inside, SIGINT and SIGTERM only set the yielded request's ``signal_name``."""
    request = StopRequest()
    with _handlers({signal.SIGINT: request.handle, signal.SIGTERM: request.handle}):
        yield request
