"""Errors a user can act on, and the wrapper that turns them into one clear line and exit status 1 (and
ends a stage's process without a last garbage collection)."""

from __future__ import annotations

import atexit
import functools
import gc
import sys


class SeqsweepError(Exception):
    """Base for every error whose message is meant for the user as it stands."""


class ParamsError(SeqsweepError):
    """params.yaml has an unknown key, a wrong type or an out-of-range value."""


class DownloadError(SeqsweepError):
    """The archive could not be fetched completely."""


class ChecksumError(DownloadError):
    """The fetched bytes do not have the configured SHA-256."""


class ArchiveError(SeqsweepError):
    """An archive is corrupt, unsafe (traversal, links, bombs) or lacks an expected member."""


class DataFormatError(SeqsweepError):
    """A data file does not have the documented format; the message names file and line."""


class MissingInputError(SeqsweepError):
    """An upstream output is missing; the message names the stage that makes it."""


def exit_on_error(main):
    """Run a stage's main(); a SeqsweepError becomes `error: <message>` on stderr and exit status 1. The
    process then ends without a last garbage collection (`freeze_at_exit`)."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        freeze_at_exit()
        try:
            return main(*args, **kwargs)
        except SeqsweepError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(1)

    return wrapper


_freezing = False


def freeze_at_exit() -> None:
    """Have this process freeze every object (`gc.freeze`) after its atexit handlers, so that Python's
    teardown does not run the garbage collector over all the objects the libraries created: 1.0-1.2
    CPU-s per process with Keras on JAX and MLflow loaded, 1.3-1.8 s with TensorFlow, against 0.1-0.2 s
    (bench/bench_exit.py), in every stage, pool worker and calibration. Every atexit handler still runs
    and every module is still torn down; only objects left in reference cycles go to the operating
    system uncollected, and nothing of seqsweep's waits on them: its files are written and closed
    (atomically) before the process ends."""
    global _freezing
    if not _freezing:
        atexit.register(gc.freeze)  # registered first, it runs after every handler registered later
        _freezing = True
