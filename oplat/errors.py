"""The one exception type for mistakes a user can fix.

The CLI prints ``OplatError`` as one line (``oplat: error: ...``) and exits non-zero;
anything else is a bug and keeps its traceback under ``--debug``.
"""

from __future__ import annotations

__all__ = ["EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_PIPE", "EXIT_RUNTIME", "EXIT_USAGE", "OplatError", "OplatRuntimeError", "warn"]

#: Exit statuses of the ``oplat`` command (the README lists them too).
EXIT_INTERNAL = 1  # a bug: "internal error" (``--debug`` shows the traceback)
EXIT_USAGE = 2  # bad input: an option, a file, an op set, a table line
EXIT_RUNTIME = 3  # the environment failed: disk full, table locked by another run, device unreachable
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGINT; every finished row or trial is kept
EXIT_PIPE = 141  # stdout was closed early (``oplat table … | head``); quiet


class OplatError(Exception):
    """A user-facing error: the message says what is wrong and how to fix it."""

    exit_code = EXIT_USAGE


class OplatRuntimeError(OplatError):
    """A user-facing error of the environment, not the input (exit status 3)."""

    exit_code = EXIT_RUNTIME


def warn(message: str) -> None:
    """Print a one-line warning on stderr (results go to stdout)."""
    import sys

    print(f"oplat: warning: {message}", file=sys.stderr)
