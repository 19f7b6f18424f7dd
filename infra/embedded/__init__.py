"""The embedded infrastructure: Kafka (tansu), Redis (redis/valkey) and Consul (or the
development registry), each on a free loopback port, as one Python API.

    with Infra(home) as infra:          # starts all parts, waits until each answers
        infra.endpoints.env()           # KAFKA_BOOTSTRAP_SERVERS, REDIS_URL, CONSUL_HTTP_ADDR

``meshctl infra up|down|status`` is a thin command line over this class.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from infra.embedded import persistence, probes
from infra.embedded.parts import (
    CONSUL,
    EXTERNAL,
    KAFKA,
    REDIS,
    SPECS,
    PartRecord,
    Started,
    restart_part,
    start_part,
)
from infra.local.files import write_json
from infra.process import StartError, pid_alive, terminate_group, wait_until

__all__ = ["Endpoints", "Infra", "StartError", "mesh_home"]

STATE_FILE = "infra.json"


async def _ensure_topics(bootstrap: str) -> list[str]:
    # Imported here: the supervisor and the console import this module and never create
    # topics, and aiokafka costs them about 3 MB each.
    from infra.kafka.admin import ensure_topics

    return await ensure_topics(bootstrap)


def mesh_home(environ: Mapping[str, str] | None = None) -> Path:
    """Where run-time state lives: ``$MESH_HOME`` or ``.mesh/`` in the current directory."""
    env = os.environ if environ is None else environ
    return Path(env.get("MESH_HOME") or Path.cwd() / ".mesh").resolve()


@dataclass(frozen=True)
class Endpoints:
    kafka_bootstrap: str
    redis_url: str
    consul_addr: str

    def env(self) -> dict[str, str]:
        """The environment a service needs to reach every part."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "REDIS_URL": self.redis_url,
            "CONSUL_HTTP_ADDR": self.consul_addr,
        }


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C while starting, so both clean up what was started."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Infra:
    """Start, find, check and stop the three infrastructure parts under one state folder."""

    def __init__(
        self,
        home: Path,
        *,
        detached: bool = False,
        environ: Mapping[str, str] | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.home = home
        self.detached = detached
        self.environ = dict(os.environ if environ is None else environ)
        self.progress = progress or (lambda _msg: None)
        self._started: list[Started] = []

    # -- state -----------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.home / STATE_FILE

    def records(self) -> dict[str, PartRecord]:
        try:
            data = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}
        return {name: PartRecord.from_json(rec) for name, rec in data.get("parts", {}).items()}

    def _save(self) -> None:
        self._write({s.record.name: s.record for s in self._started})

    def _write(self, records: Mapping[str, PartRecord]) -> None:
        parts = {name: rec.to_json() for name, rec in records.items()}
        # 0600: a part's environment may hold a secret (a storage URL with its password).
        write_json(self.state_path, {"parts": parts}, mode=0o600)

    @property
    def endpoints(self) -> Endpoints:
        recs = {s.record.name: s.record for s in self._started} or self.records()
        missing = [spec.name for spec in SPECS if spec.name not in recs]
        if missing:
            raise StartError(f"infrastructure is not running (missing: {', '.join(missing)})")
        return Endpoints(
            recs[KAFKA.name].address, recs[REDIS.name].address, recs[CONSUL.name].address
        )

    def running(self) -> bool:
        """True when a state file names parts and every embedded one is still alive."""
        recs = self.records()
        return bool(recs) and all(r.pid is None or _owns(r) for r in recs.values())

    # -- outages (the broker-restart drill) --------------------------------------------------
    def stop_part(self, name: str, timeout: float = 10.0) -> None:
        """Stop one embedded part as an outage would; :meth:`start_part` brings it back at
        the same address. The other parts and the platform keep running."""
        records = self.records()
        rec = self._record(records, name)
        if rec.source == EXTERNAL:
            raise StartError(f"{name} is external ({rec.env_var}): stop it where it runs")
        if rec.stopped:
            return
        if _owns(rec):
            assert rec.pid is not None
            terminate_group(rec.pid, timeout)
        rec.pid, rec.stopped = None, True
        self._started = [s for s in self._started if s.record.name != name]
        self._write(records)

    def crash_part(self, name: str, timeout: float = 10.0) -> None:
        """SIGKILL one embedded part, as a crash would (no shutdown, no last fsync), and
        return once it is gone; it stays down until :meth:`start_part` starts it again at
        the same address, with the same command line (so the same persistence)."""
        records = self.records()
        rec = self._record(records, name)
        if rec.source == EXTERNAL:
            raise StartError(f"{name} is external ({rec.env_var}): crash it where it runs")
        if rec.stopped or not _owns(rec):
            raise StartError(f"{name} is not running: nothing to crash")
        assert rec.pid is not None
        pid = rec.pid
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        wait_until(lambda: not pid_alive(pid), timeout=timeout, what=f"{name} gone after SIGKILL")
        rec.pid, rec.stopped = None, True
        self._started = [s for s in self._started if s.record.name != name]
        self._write(records)

    def redis_persistence(self) -> str | None:
        """The persistence the running Redis has (asked of Redis itself)."""
        rec = self.records().get(REDIS.name)
        return None if rec is None or rec.stopped else persistence.live_redis_mode(rec.address)

    def set_redis_persistence(self, mode: str) -> None:
        """Change the embedded Redis's persistence while it runs, and keep the change for its
        restarts (the recorded command line); the next ``up`` reads MESH_REDIS_PERSISTENCE."""
        mode = persistence.redis_mode({persistence.REDIS_PERSISTENCE_VAR: mode})
        records = self.records()
        rec = self._record(records, REDIS.name)
        if rec.source == EXTERNAL:
            raise StartError(f"redis is external ({rec.env_var}): set its persistence there")
        if rec.stopped:
            raise StartError("redis is stopped: start it first")
        persistence.switch_redis_mode(rec.address, mode)
        rec.argv = persistence.with_redis_mode(rec.argv, mode)
        self._write(records)

    def data_dirs(self) -> list[Path]:
        """What the embedded parts keep on disk between runs (``meshctl down --volumes``)."""
        return [self.home / persistence.REDIS_DATA_DIR]

    def start_part(self, name: str) -> None:
        """Start a part stopped by :meth:`stop_part`; for Kafka, create the topics again
        (tansu keeps them in memory, so a restarted broker has none)."""
        records = self.records()
        rec = self._record(records, name)
        if not rec.stopped:
            return
        spec = next(s for s in SPECS if s.name == name)
        started = restart_part(spec, rec, self.home, detached=self.detached, progress=self.progress)
        records[name] = started.record
        if self._started:  # this instance started the others: it owns this one too
            self._started.append(started)
        self._write(records)
        if spec is KAFKA:
            created = asyncio.run(_ensure_topics(started.record.address))
            self.progress(f"kafka: created {len(created)} topics")

    @staticmethod
    def _record(records: Mapping[str, PartRecord], name: str) -> PartRecord:
        if name not in records:
            known = ", ".join(records) or "none: is the infrastructure up?"
            raise StartError(f"no infrastructure part {name!r} (known: {known})")
        return records[name]

    # -- lifecycle -------------------------------------------------------------------------
    def up(self) -> Endpoints:
        """Start every part and create the topics; on any failure stop what was started."""
        self.home.mkdir(parents=True, exist_ok=True)
        try:
            with _sigterm_as_interrupt():
                for spec in SPECS:
                    started = start_part(
                        spec,
                        self.home,
                        self.environ,
                        detached=self.detached,
                        progress=self.progress,
                    )
                    self._started.append(started)
                    self._save()
                    if spec is KAFKA:
                        created = asyncio.run(_ensure_topics(started.record.address))
                        if created:
                            self.progress(f"kafka: created {len(created)} topics")
        except BaseException:
            self.down()
            raise
        return self.endpoints

    def down(self, timeout: float = 10.0) -> list[str]:
        """Stop every embedded part (newest first) and forget the state; return what stopped."""
        stopped: list[str] = []
        for started in reversed(self._started):
            if started.process is not None:
                started.process.stop(timeout)
                stopped.append(started.record.name)
        for name, rec in reversed(list(self.records().items())):
            if name in stopped or rec.pid is None:
                continue
            if _owns(rec):
                terminate_group(rec.pid, timeout)
                stopped.append(name)
        self._started.clear()
        self.state_path.unlink(missing_ok=True)
        return stopped

    def status(self) -> list[dict[str, Any]]:
        """Each part with its source, address, pid and whether it answers right now."""
        out = []
        for spec in SPECS:
            rec = self.records().get(spec.name)
            if rec is None:
                out.append({"name": spec.name, "state": "stopped", "healthy": False})
                continue
            alive = not rec.stopped and (rec.pid is None or _owns(rec))
            healthy = alive and spec.probe(rec.address)
            state = "running" if healthy else ("unhealthy" if alive else "dead")
            if rec.stopped:
                state = "stopped"

            if rec.source == EXTERNAL:
                state = "reachable" if healthy else "unreachable"
            row: dict[str, Any] = {
                "name": spec.name,
                "source": rec.source,
                "address": rec.address,
                "pid": rec.pid,
                "log": rec.log,
                "state": state,
                "healthy": healthy,
            }
            row.update(self._keeps(spec.name, rec, healthy))
            out.append(row)
        return out

    def _keeps(self, name: str, rec: PartRecord, healthy: bool) -> dict[str, str]:
        """What a part keeps across a restart: ``persistence`` (Redis, as Redis itself says
        when it answers) and ``storage`` (the broker), for status."""
        if name == REDIS.name:
            mode = persistence.live_redis_mode(rec.address) if healthy else None
            if mode is None and rec.source != EXTERNAL:
                mode = _recorded_mode(rec.argv)
            row = {"persistence": mode or "unknown"}
            if rec.source != EXTERNAL and mode != "off":
                row["data"] = str(self.home / persistence.REDIS_DATA_DIR)
            return row
        if name == KAFKA.name and rec.source != EXTERNAL:
            url = rec.env.get(persistence.TANSU_STORAGE_ENV, persistence.DEFAULT_KAFKA_STORAGE)
            return {"storage": persistence.redact(url)}
        return {}

    def __enter__(self) -> Infra:
        self.up()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()


def _owns(rec: PartRecord) -> bool:
    """The recorded pid is alive AND still runs the binary we started (pids get reused).

    The executable is compared, not the command line: redis/valkey rewrite their own title.
    """
    if rec.pid is None or not rec.argv or not pid_alive(rec.pid):
        return False
    try:
        exe = os.readlink(f"/proc/{rec.pid}/exe")
    except OSError:
        return False
    return exe.removesuffix(" (deleted)") == os.path.realpath(rec.argv[0])


def _recorded_mode(argv: list[str]) -> str | None:
    """The persistence a recorded redis command line starts with."""
    options = dict(zip(argv[1::2], argv[2::2], strict=False))
    if options.get("--appendonly") == "no":
        return "off"
    return options.get("--appendfsync") if options.get("--appendonly") == "yes" else None


# Re-exported for callers that only need a probe (``meshctl status`` of external parts).
consul_url = probes.consul_url
