"""Errors a user can act on, and the wrapper that turns them into one clear line and exit status 1."""

from __future__ import annotations

import functools
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
    """Run a stage's main(); a SeqsweepError becomes `error: <message>` on stderr and exit status 1."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except SeqsweepError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(1)

    return wrapper
