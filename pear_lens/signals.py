"""SIGINT and SIGTERM as one interruption, and the few steps no signal may split.

The command line runs inside :func:`interruptions_raised` from its first line, so Ctrl-C and ``kill`` (SIGTERM) at any
moment, startup included, raise :class:`Interrupted` (a ``KeyboardInterrupt``): the ``finally`` blocks that remove a
half-built folder run, and the CLI prints one line and exits 128 + the signal's number (130, 143).
:func:`deferred` holds both signals over a step that must not be split (the two renames of a swap) and delivers
them right after. It works by Python handlers, not the thread signal mask: a process-wide signal may be delivered
to any thread (torch starts several), but Python runs its handlers in the main thread only.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""The signals handled as an interruption."""


class Interrupted(KeyboardInterrupt):
    """The process was asked to stop: ``signum`` says by which signal (SIGINT for a plain Ctrl-C)."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        """The shell's code for a process ended by this signal: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum


def exit_code(error: KeyboardInterrupt) -> int:
    """The exit code of an interruption (a plain ``KeyboardInterrupt`` is a Ctrl-C: 130)."""
    return error.exit_code if isinstance(error, Interrupted) else 128 + signal.SIGINT


def _raise(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def interruptions_raised() -> Iterator[None]:
    """Make SIGINT and SIGTERM raise :class:`Interrupted` in the body (main thread); the handlers in place before
    come back after it, so ``main(argv)`` called from a test or a notebook leaves the caller's handlers as they were."""
    if not _main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in SIGNALS}
    try:
        yield
    finally:
        _restore(previous)


def _restore(previous: dict[int, Any]) -> None:
    for s, handler in previous.items():
        signal.signal(s, signal.SIG_DFL if handler is None else handler)  # None: a handler set outside Python


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM for the body; one that arrived meanwhile is delivered, to the handler that was in
    place before, once the body is done (a body that fails is not held up by it)."""
    if not _main_thread():  # signals reach Python in the main thread only: nothing can split the body here
        yield
        return
    pending: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: pending.append(signum)) for s in SIGNALS}
    try:
        yield
    finally:
        _restore(previous)
    if pending:
        signal.raise_signal(pending[0])
