"""Setting types and their error line, without pydantic-settings: the console, the
supervisor and meshctl read durations from their own files and need no environment loader
(pydantic-settings and its sources cost each process about 6 MB)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, ValidationError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def _parse_duration(value: Any) -> Any:
    """Accept seconds as a number or a Go-style duration ("500ms", "2s", "1m")."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError("expected seconds or a duration such as 500ms, 2s, 1m")
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return value


# Seconds, written in the environment as "2", "2s", "500ms" or "1m".
Duration = Annotated[float, BeforeValidator(_parse_duration), Field(ge=0)]


_BYTES = re.compile(r"^\s*(\d+)\s*(Ki|Mi|Gi)?\s*$")
_UNIT_BYTES = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, None: 1}


def _parse_bytes(value: Any) -> Any:
    """Accept bytes as a number or with a binary unit ("4Mi", "512Ki", "1Gi")."""
    if isinstance(value, str):
        match = _BYTES.match(value)
        if match is None:
            raise ValueError("expected bytes or a size such as 512Ki, 4Mi, 1Gi")
        return int(match.group(1)) * _UNIT_BYTES[match.group(2)]
    return value


# Bytes, written in the environment as "4194304", "4Mi", "512Ki" or "1Gi".
ByteSize = Annotated[int, BeforeValidator(_parse_bytes), Field(ge=0)]


def describe_errors(error: ValidationError, secrets: frozenset[str] = frozenset()) -> str:
    """One line for all problems: ``PORT: input should be ..., got 'abc'``."""
    parts = []
    for item in error.errors():
        name = ".".join(str(part) for part in item["loc"]) or "settings"
        message = item["msg"].removeprefix("Value error, ")
        message = message[:1].lower() + message[1:]
        if item["type"] == "missing":
            parts.append(f"{name}: required but not set")
        elif name in secrets:
            parts.append(f"{name}: {message}")
        else:
            parts.append(f"{name}: {message}, got {item['input']!r}")
    return "; ".join(parts)
