"""oplat.units: latency budgets as users type them."""

from __future__ import annotations

import pytest

from oplat.errors import OplatError
from oplat.units import parse_duration_ms


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("40ms", 40.0),
        ("40 ms", 40.0),
        ("0.04s", 40.0),
        ("0.04 s", 40.0),
        ("40000us", 40.0),
        ("40000 us", 40.0),
        ("40000 µs", 40.0),  # micro sign
        ("40000μs", 40.0),  # Greek mu
        ("40", 40.0),  # a bare number is milliseconds
        ("40.5", 40.5),
        ("40MS", 40.0),
        ("0.04S", 40.0),
        ("40000US", 40.0),
        ("0.04 sec", 40.0),
        ("4e1ms", 40.0),
        (".5s", 500.0),
        ("  40 ms  ", 40.0),
        ("+40ms", 40.0),
        ("1e-3", 0.001),
    ],
)
def test_accepted_forms(text: str, ms: float) -> None:
    assert parse_duration_ms(text) == pytest.approx(ms, rel=1e-12)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("-40ms", "negative"),
        ("-0.04 s", "negative"),
        ("0", "zero"),
        ("0ms", "zero"),
        ("0.0 s", "zero"),
        ("0e5us", "zero"),
        ("nan", "finite"),
        ("NaN ms", "finite"),
        ("inf", "finite"),
        ("infms", "finite"),
        ("1e999", "finite"),
        ("1e999 s", "finite"),
        ("40 parsecs", "not a duration"),
        ("40 min", "unknown unit 'min'"),
        ("40 h", "unknown unit"),
        ("ms", "not a duration"),
        ("fast", "not a duration"),
        ("40ms5", "not a duration"),
        ("4 0ms", "not a duration"),
        ("40 m s", "not a duration"),
        ("40 ms ms", "not a duration"),
        ("..", "not a duration"),
        ("40,5ms", "not a duration"),
        ("0x10", "not a duration"),
    ],
)
def test_rejected_forms(text: str, why: str) -> None:
    with pytest.raises(OplatError) as info:
        parse_duration_ms(text)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"budget {text!r} ")
    assert why in message
    assert message.endswith("write e.g. 40ms, 40 ms or 0.04s")


def test_unknown_unit_message_matches_the_documented_form() -> None:
    with pytest.raises(OplatError, match=r"^budget '40 parsecs' is not a duration .*; write e\.g\. 40ms, 40 ms or 0\.04s$"):
        parse_duration_ms("40 parsecs")


def test_not_a_string() -> None:
    with pytest.raises(OplatError, match="not a duration"):
        parse_duration_ms(40)  # type: ignore[arg-type]
