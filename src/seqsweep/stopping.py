"""How the stage process stops on Ctrl-C or SIGTERM.

A signal raises KeyboardInterrupt wherever the main thread is. Inside a write to the MLflow
store it leaves the store's session unusable, and then the interrupted repeats cannot be marked KILLED;
inside a library it may be swallowed (a destructor, a callback); and it may leave a JAX computation
running, which crashes the process when XLA is torn down at exit (a segfault after the error message).
So the stage process remembers the signal, holds it during writes (`stop_deferred`), checks it again
at safe points (`check_stop`), and exits without the teardown (`exit_now`). A second signal during a
held write stops at once."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

_stop_signal: str | None = None
_deferred = 0
_before_exit_now: list = []


def stop_on_signals() -> None:
    """In the stage's own process: SIGINT (Ctrl-C) and SIGTERM (a killed `dvc repro`) stop training."""

    def handler(signum, frame):
        global _stop_signal
        again = _stop_signal is not None
        _stop_signal = "Ctrl-C" if signum == signal.SIGINT else f"signal {signal.Signals(signum).name}"
        if not _deferred or again:
            raise KeyboardInterrupt(_stop_signal)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)


def check_stop() -> None:
    """Raise KeyboardInterrupt if this process was asked to stop (see `stop_on_signals`)."""
    if _stop_signal is not None:
        raise KeyboardInterrupt(_stop_signal)


@contextlib.contextmanager
def stop_deferred(then_check: bool = True):
    """Hold a stop request until the block is done, then raise it (unless `then_check` is False: the
    block is the clean-up after a stop) when no enclosing block still holds it."""
    global _deferred
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    _deferred += 1
    try:
        yield
    finally:
        _deferred -= 1
    if then_check and not _deferred:
        check_stop()


def exit_now(code: int):
    """Flush what was printed and exit at once, without Python's and XLA's teardown (see above)."""
    sys.stdout.flush()
    sys.stderr.flush()
    for restore in _before_exit_now:
        restore()
    os._exit(code)


def before_exit_now(flush) -> None:
    """Have `exit_now` call `flush` (e.g. a stderr filter's restore) before the process ends."""
    _before_exit_now.append(flush)
