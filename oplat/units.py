"""Units users type on the command line.

``parse_duration_ms`` reads a latency budget such as ``40ms``, ``40 ms``, ``0.04s`` or
``40000us`` and returns it in milliseconds. A bare number is milliseconds.
"""

from __future__ import annotations

import math
import re

from oplat.errors import OplatError

__all__ = ["DURATION_UNITS_MS", "parse_duration_ms"]

#: Milliseconds per unit; keys are lower case (units are matched case-insensitively).
DURATION_UNITS_MS: dict[str, float] = {
    "s": 1000.0,
    "sec": 1000.0,
    "ms": 1.0,
    "us": 1e-3,
    "µs": 1e-3,  # U+00B5 MICRO SIGN
    "μs": 1e-3,  # U+03BC GREEK SMALL LETTER MU
}

# A plain decimal number (no sign: a negative budget is refused with its own message),
# optional exponent, optional blanks, then an optional unit.
_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE]([+-]?[0-9]+))?\s*([^\s0-9.+-]*)$")


def _bad(text: str, why: str = "is not a duration") -> OplatError:
    return OplatError(f"budget {text!r} {why}; write e.g. 40ms, 40 ms or 0.04s")


def parse_duration_ms(text: str) -> float:
    """A duration as milliseconds (float, > 0 and finite).

    Accepts a number followed by an optional unit, with or without a blank between them:
    ``s`` (or ``sec``), ``ms``, ``us`` / ``µs`` / ``μs`` (microseconds), case-insensitive —
    ``40ms``, ``40 ms``, ``0.04s``, ``0.04 S``, ``40000us``, ``40000 µs``, ``4e1ms``.
    **A bare number is milliseconds** (``40`` is 40 ms).

    Raises :class:`OplatError` (one line, with an example of the accepted forms) for an
    empty string, a negative, zero, NaN or infinite value, an unknown unit, or anything
    else that is not a number with a unit.
    """
    if not isinstance(text, str):
        raise _bad(str(text))
    raw = text.strip()
    if not raw:
        raise _bad(text, "is empty")
    if raw.startswith("-"):
        raise _bad(text, "is negative; a latency budget must be > 0")
    if raw.startswith("+"):
        raw = raw[1:].lstrip()
    match = _DURATION.match(raw)
    if match is None:
        lowered = raw.lower()
        if any(word in lowered for word in ("nan", "inf")):
            raise _bad(text, "is not a finite number")
        raise _bad(text)
    number, exponent, unit = match.groups()
    key = unit.lower()
    if key and key not in DURATION_UNITS_MS:
        if key in ("nan", "inf", "infinity"):
            raise _bad(text, "is not a finite number")
        known = ", ".join(u for u in DURATION_UNITS_MS if u != "μs")
        raise _bad(text, f"is not a duration (unknown unit {unit!r}; known: {known}; a bare number is ms)")
    value = float(number + (f"e{exponent}" if exponent is not None else "")) * (DURATION_UNITS_MS[key] if key else 1.0)
    if not math.isfinite(value):
        raise _bad(text, "is not a finite number")
    if value <= 0.0:
        raise _bad(text, "is zero; a latency budget must be > 0")
    return value
