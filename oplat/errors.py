"""The one exception type for mistakes a user can fix.

The CLI prints ``OplatError`` as one line (``oplat: error: ...``) and exits non-zero;
anything else is a bug and keeps its traceback under ``--debug``.
"""

from __future__ import annotations

__all__ = ["OplatError", "warn"]


class OplatError(Exception):
    """A user-facing error: the message says what is wrong and how to fix it."""


def warn(message: str) -> None:
    """Print a one-line warning on stderr (results go to stdout)."""
    import sys

    print(f"oplat: warning: {message}", file=sys.stderr)
