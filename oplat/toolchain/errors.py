"""Errors of the toolchain layer: every one is an :class:`~oplat.errors.OplatRuntimeError`.

A :class:`ToolchainError` carries the command line that failed (``argv``) and the tail of
its output (``output_tail``) so a caller can write an ``error`` row that shows both. Its
message stays one line: the multi-line tail is quoted with ``repr``.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from oplat.errors import OplatRuntimeError

__all__ = ["ParseError", "StepTimeout", "ToolchainError", "tail"]

#: How much of a tool's output an error keeps and quotes.
TAIL_CHARS = 300


def tail(text: str, chars: int = TAIL_CHARS) -> str:
    """The last ``chars`` characters of ``text`` without surrounding blank space."""
    text = text.strip()
    return text if len(text) <= chars else "…" + text[-chars:]


class ToolchainError(OplatRuntimeError):
    """A toolchain step failed (the environment's failure: exit status 3).

    Attributes:
        argv: the command that failed (empty when no command was involved).
        output_tail: the last ~300 characters of its output.
        step: which step failed (``compile``, ``push``, ``run``, ``parse``, ...).
    """

    def __init__(self, message: str, *, argv: Sequence[str] = (), output_tail: str = "", step: str = ""):
        self.argv = tuple(str(a) for a in argv)
        self.output_tail = output_tail
        self.step = step
        parts = [message]
        if self.argv:
            parts.append(f"command: {shlex.join(self.argv)}")
        if output_tail:
            parts.append(f"output tail: {output_tail!r}")
        super().__init__("; ".join(parts))

    @property
    def command(self) -> str:
        """The failed command as one shell-quoted string."""
        return shlex.join(self.argv)


class StepTimeout(ToolchainError):
    """A step ran past its ``timeout_s`` and was killed."""


class ParseError(ToolchainError):
    """A parser did not find its tool's timing lines in the output."""
