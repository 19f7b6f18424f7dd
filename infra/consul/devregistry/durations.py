"""Go-style durations ("10s", "500ms", "1m30s"), as Consul parses and prints them.

Consul is written in Go, so every duration it accepts goes through ``time.ParseDuration`` and
every duration it prints goes through ``Duration.String()``. Matching both exactly keeps
answers such as a check's ``Interval`` byte-for-byte like a real agent's.
"""

from __future__ import annotations

import re

NANOSECOND = 1
MICROSECOND = 1_000 * NANOSECOND
MILLISECOND = 1_000 * MICROSECOND
SECOND = 1_000 * MILLISECOND
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE

_UNITS = {
    "ns": NANOSECOND,
    "us": MICROSECOND,
    "µs": MICROSECOND,  # U+00B5 micro sign
    "μs": MICROSECOND,  # U+03BC greek small letter mu
    "ms": MILLISECOND,
    "s": SECOND,
    "m": MINUTE,
    "h": HOUR,
}
_NUMBER = re.compile(r"\d+\.?\d*|\.\d+")
_UNIT = re.compile(r"[^\d.]*")
_MAX_NANOS = 2**63 - 1


class DurationError(ValueError):
    """The text is not a Go duration; the message reads like Go's."""


def parse_duration_ns(text: str) -> int:
    """Parse a Go duration into integer nanoseconds (may be negative, like Go)."""
    original = text
    if not isinstance(text, str) or not text:
        raise DurationError(f'time: invalid duration "{original}"')
    sign = 1
    if text[0] in "+-":
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    if text == "0":
        return 0
    if not text:
        raise DurationError(f'time: invalid duration "{original}"')
    total = 0
    pos = 0
    while pos < len(text):
        number_match = _NUMBER.match(text, pos)
        if number_match is None:
            raise DurationError(f'time: invalid duration "{original}"')
        unit_match = _UNIT.match(text, number_match.end())
        assert unit_match is not None  # the pattern matches the empty string
        number, unit = number_match.group(), unit_match.group()
        if not unit:
            raise DurationError(f'time: missing unit in duration "{original}"')
        if unit not in _UNITS:
            raise DurationError(f'time: unknown unit "{unit}" in duration "{original}"')
        whole, _, fraction = number.partition(".")
        scale = _UNITS[unit]
        value = int(whole or "0") * scale
        if fraction:
            # Integer arithmetic keeps "1.1s" exact (float would give 1099999999ns).
            value += int(fraction) * scale // 10 ** len(fraction)
        total += value
        if total > _MAX_NANOS:
            raise DurationError(f'time: invalid duration "{original}"')
        pos = unit_match.end()
    return sign * total


def parse_duration(text: str) -> float:
    """Parse a Go duration into seconds."""
    return parse_duration_ns(text) / SECOND


def duration_from_json(value: object) -> int:
    """A duration field of a JSON payload: a Go string, or a number of nanoseconds.

    Consul decodes ``time.Duration`` fields from either form, so both are accepted.
    """
    if isinstance(value, bool):
        raise DurationError(f"time: invalid duration {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return parse_duration_ns(value)
    raise DurationError(f"time: invalid duration {value!r}")


def _format_fraction(value: int, precision: int) -> str:
    """``value`` as a decimal with ``precision`` digits after the point, zeros trimmed."""
    whole, rest = divmod(value, 10**precision)
    if rest == 0:
        return str(whole)
    digits = str(rest).rjust(precision, "0").rstrip("0")
    return f"{whole}.{digits}"


def format_duration(nanos: int) -> str:
    """Print integer nanoseconds the way Go's ``Duration.String()`` does."""
    if nanos == 0:
        return "0s"
    sign = "-" if nanos < 0 else ""
    n = abs(nanos)
    if n < SECOND:
        if n < MICROSECOND:
            return f"{sign}{n}ns"
        if n < MILLISECOND:
            return f"{sign}{_format_fraction(n, 3)}µs"
        return f"{sign}{_format_fraction(n, 6)}ms"
    hours, n = divmod(n, HOUR)
    minutes, n = divmod(n, MINUTE)
    seconds = _format_fraction(n, 9)
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{sign}{minutes}m{seconds}s"
    return f"{sign}{seconds}s"
