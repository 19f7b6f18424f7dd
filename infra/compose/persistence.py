"""What the compose stack's Redis keeps, read from its container, and the two ways the
persistence lesson changes it: a persistence mode, and Redis without its named volume.

- The mode is the file of ``infra/redis/`` mounted at :data:`REDIS_CONF_MOUNT`
  (``${MESH_REDIS_PERSISTENCE:-everysec}.conf`` in docker-compose.yml).
- Without the named volume (:data:`WITHOUT_VOLUME`, an override in the project's state
  folder): ``/data`` on an anonymous volume, what Docker gives the official image's ``VOLUME
  /data`` when a compose file has no volume line. ``down`` leaves that volume behind and the
  next ``up`` makes a new, empty one: the lesson removes the ones it made.
"""

from __future__ import annotations

import time
from pathlib import Path

from infra.compose.project import REDIS_CONF_MOUNT, Container, docker
from infra.runtime.base import RuntimeFailure

REDIS_DATA = "/data"
WITHOUT_VOLUME = (
    "# Written by meshctl for the persistence lesson: Redis's /data on an anonymous volume\n"
    "# (what a compose file without the volume lines gets); removed again after it.\n"
    "services:\n"
    "  redis:\n"
    "    volumes:\n"
    f"      - {REDIS_DATA}\n"
)


def redis_keeps(c: Container) -> dict[str, str]:
    """``persistence`` (always, everysec, off; unknown when no mode file is mounted) and,
    unless off, ``data``: where the append-only file is."""
    _, conf = c.mounts.get(REDIS_CONF_MOUNT, ("", ""))
    mode = Path(conf).stem if conf else "unknown"
    row = {"persistence": mode}
    if mode != "off":
        kind, name = c.mounts.get(REDIS_DATA, ("", ""))
        if kind == "volume":
            row["data"] = f"volume {name}" if not is_anonymous(name) else "an anonymous volume"
        else:
            row["data"] = f"{kind} mount {name}" if kind else "the container (no volume)"
    return row


def is_anonymous(volume: str) -> bool:
    """Docker names an anonymous volume by 64 hex digits."""
    return len(volume) == 64 and all(ch in "0123456789abcdef" for ch in volume)


def anonymous_data_volume(c: Container) -> str | None:
    kind, name = c.mounts.get(REDIS_DATA, ("", ""))
    return name if kind == "volume" and is_anonymous(name) else None


def redis_aof_now(c: Container, mode: str, timeout: float = 60.0) -> None:
    """Turn the append-only file on in the running Redis (inside its container, so from any
    engine) and return once Redis has written it from what it holds."""

    def cli(*args: str) -> str:
        return docker("exec", c.id, "redis-cli", *args, what=f"redis-cli {args[0]} in {c.name}")

    cli("CONFIG", "SET", "appendfsync", mode)
    cli("CONFIG", "SET", "appendonly", "yes")
    deadline = time.monotonic() + timeout
    while True:
        info = dict(
            line.strip().partition(":")[::2]
            for line in cli("INFO", "persistence").splitlines()
            if ":" in line
        )
        if info.get("aof_last_bgrewrite_status") == "err":
            raise RuntimeFailure("redis: rewriting the append-only file failed (see its log)")
        idle = (
            info.get("aof_rewrite_in_progress") == "0" and info.get("aof_rewrite_scheduled") == "0"
        )
        if info.get("aof_enabled") == "1" and idle:
            return
        if time.monotonic() > deadline:
            raise RuntimeFailure(f"redis: the append-only file not written in {timeout:.0f}s")
        time.sleep(0.1)
