"""``meshctl logs NAME [-f]``: the log of an infrastructure part, the supervisor, the
autoscaler's decisions, or every replica of a service interleaved by time.

Replica logs are JSON lines with a ``ts``; lines without one (a traceback) stay under the
line before them. Each line is prefixed with the replica (``v1:41234``). ``-f`` keeps
following, and picks up replicas that start later.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from infra.meshctl.output import CommandError

FOLLOW_EVERY = 0.3
TAIL_LINES = 40


@dataclass
class _Source:
    path: Path
    label: str
    offset: int = 0
    partial: str = field(default="")


def replica_logs(logs: Path, service: str) -> list[_Source]:
    """``<service>-<version>-<port>.log`` files, labelled ``<version>:<port>``."""
    sources = []
    for path in sorted(logs.glob(f"{service}-v*-*.log")):
        rest = path.stem[len(service) + 1 :]
        version, _, port = rest.partition("-")
        if version[1:].isdigit() and port.isdigit():
            sources.append(_Source(path, f"{version}:{port}"))
    return sources


def _key(line: str, previous: str) -> str:
    if line.startswith("{"):
        try:
            ts = json.loads(line).get("ts")
        except ValueError:
            ts = None
        if isinstance(ts, str):
            return ts
    return previous


def interleave(sources: list[_Source]) -> list[str]:
    entries: list[tuple[str, int, str]] = []
    order = 0
    for source in sources:
        key = ""
        for line in source.path.read_text(errors="replace").splitlines():
            key = _key(line, key)
            entries.append((key, order, f"[{source.label}] {line}"))
            order += 1
        source.offset = source.path.stat().st_size
    entries.sort(key=lambda e: (e[0], e[1]))
    return [text for _, _, text in entries]


def _read_new(source: _Source) -> list[str]:
    try:
        size = source.path.stat().st_size
    except OSError:
        return []
    if size < source.offset:  # truncated
        source.offset = 0
    if size == source.offset:
        return []
    with open(source.path, encoding="utf-8", errors="replace") as fh:
        fh.seek(source.offset)
        chunk = fh.read()
        source.offset = fh.tell()
    text = source.partial + chunk
    lines = text.split("\n")
    source.partial = lines.pop()
    return [f"[{source.label}] {line}" for line in lines]


def show_service(logs: Path, service: str, follow: bool) -> int:
    sources = replica_logs(logs, service)
    if not sources and not follow:
        raise CommandError(f"no logs for {service!r} yet in {logs}")
    lines = interleave(sources)
    print("\n".join(lines[-TAIL_LINES:] if follow else lines), flush=True)
    if not follow:
        return 0
    known = {s.path for s in sources}
    try:
        while True:
            for source in replica_logs(logs, service):
                if source.path not in known:
                    known.add(source.path)
                    sources.append(source)
            for source in sources:
                for line in _read_new(source):
                    print(line, flush=True)
            time.sleep(FOLLOW_EVERY)
    except KeyboardInterrupt:
        return 0


def show_file(path: Path, follow: bool) -> int:
    if not follow:
        sys.stdout.write(path.read_text(errors="replace"))
        return 0
    os.execvp("tail", ["tail", "-n", "50", "-F", str(path)])
    return 0  # pragma: no cover - exec does not return
