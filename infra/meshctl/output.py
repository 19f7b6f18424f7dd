"""How ``meshctl`` talks to people: progress on stderr, tables and results on stdout, and
one line for any failure."""

from __future__ import annotations

import sys
from collections.abc import Sequence


class CommandError(Exception):
    """A failure to report as one line and exit 1."""


def progress(message: str) -> None:
    # Progress goes to stderr so that stdout stays machine-readable with --json.
    print(f"  {message}", file=sys.stderr, flush=True)


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    table = [list(header), *[list(row) for row in rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
