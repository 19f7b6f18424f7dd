"""What the embedded parts keep: Redis's append-only file under the state folder (always,
everysec, off), a crash by SIGKILL and a restart at the same address, the live switch of
modes, ``meshctl down --volumes``, and the broker's storage setting. Real valkey/redis and
tansu processes; the one thing not run here is a durable tansu storage (no PostgreSQL or S3
on these machines): its setting is checked up to the process's environment."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from infra.embedded import Infra, StartError
from infra.embedded.persistence import (
    kafka_storage,
    redact,
    redis_args,
    redis_mode,
    with_redis_mode,
)
from infra.local.runtime import LocalRuntime
from infra.process import free_port
from infra.runtime import RuntimeFailure

MESHCTL = [sys.executable, "-m", "infra.meshctl"]
Start = Callable[..., Infra]
EXTERNAL = ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "CONSUL_HTTP_ADDR", "RUNTIME")


def environ(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in EXTERNAL and not k.startswith("MESH_")}
    return {**env, **extra}


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """``start(MODE)``: the embedded infrastructure in ``tmp_path`` with that persistence."""
    started: list[Infra] = []

    def run(mode: str | None = None, **extra: str) -> Infra:
        env = environ(**extra, **({"MESH_REDIS_PERSISTENCE": mode} if mode else {}))
        infra = Infra(tmp_path, detached=True, environ=env)
        infra.up()
        started.append(infra)
        return infra

    yield run
    for infra in started:
        infra.down()


def client(infra: Infra) -> redis.Redis:
    return redis.Redis.from_url(infra.endpoints.redis_url, decode_responses=True)


def write(infra: Infra, count: int) -> None:
    with client(infra) as r:
        for n in range(count):
            r.set(f"k{n}", n)


def keys(infra: Infra) -> int:
    with client(infra) as r:
        return int(r.dbsize())


def redis_row(infra: Infra) -> dict[str, object]:
    return next(row for row in infra.status() if row["name"] == "redis")


# -- the settings --------------------------------------------------------------------------------
def test_modes_and_their_arguments() -> None:
    assert redis_mode({}) == "everysec"
    assert redis_mode({"MESH_REDIS_PERSISTENCE": " Always "}) == "always"
    assert redis_args("off") == ["--save", "", "--appendonly", "no"]
    assert redis_args("everysec")[-4:] == ["--appendonly", "yes", "--appendfsync", "everysec"]
    argv = ["redis-server", "--port", "1", "--dir", "/d", *redis_args("off")]
    assert with_redis_mode(argv, "always") == argv[:5] + redis_args("always")
    assert with_redis_mode(with_redis_mode(argv, "always"), "off") == argv


def test_bad_values_are_one_clear_line() -> None:
    with pytest.raises(StartError, match=r"MESH_REDIS_PERSISTENCE='sometimes' is not a Redis"):
        redis_mode({"MESH_REDIS_PERSISTENCE": "sometimes"})
    with pytest.raises(StartError, match=r"MESH_KAFKA_STORAGE='sqlite://x' is not a tansu"):
        kafka_storage({"MESH_KAFKA_STORAGE": "sqlite://x"})
    # The password never shows in the message.
    with pytest.raises(StartError) as caught:
        kafka_storage({"MESH_KAFKA_STORAGE": "mysql://u:hunter2@db/x"})
    assert "hunter2" not in str(caught.value) and "u:***@db" in str(caught.value)
    assert kafka_storage({}) == "memory://tansu/"
    # The bundled tansu was built without PostgreSQL storage (it answers FeatureNotEnabled).
    pg = {"MESH_KAFKA_STORAGE": "postgres://u:pw@db:5432/t"}
    with pytest.raises(StartError, match=r"bundled tansu has memory:// and s3:// storage only"):
        kafka_storage(pg, bundled=True)
    assert kafka_storage(pg) == "postgres://u:pw@db:5432/t"
    assert redact("postgres://u:pw@127.0.0.1:5432/t") == "postgres://u:***@127.0.0.1:5432/t"


def test_meshctl_refuses_a_bad_setting_before_starting_anything(tmp_path: Path) -> None:
    for name, value in (("MESH_REDIS_PERSISTENCE", "fsync"), ("MESH_KAFKA_STORAGE", "file://x")):
        env = environ(MESH_HOME=str(tmp_path), GATEWAY_PORT=str(free_port()), **{name: value})
        done = subprocess.run(
            [*MESHCTL, "infra", "up"], env=env, capture_output=True, text=True, timeout=60
        )
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and lines[-1].startswith(f"meshctl: {name}="), done.stderr
        assert [line for line in lines if line.startswith("meshctl:")] == [lines[-1]]
        assert not (tmp_path / "infra.json").exists(), "nothing was left running"


# -- Redis ---------------------------------------------------------------------------------------
def test_everysec_by_default_keeps_state_across_down_and_up(start: Start, tmp_path: Path) -> None:
    infra = start()
    assert redis_row(infra)["persistence"] == "everysec"
    assert redis_row(infra)["data"] == str(tmp_path / "redis")
    write(infra, 500)
    infra.down()
    assert (tmp_path / "redis" / "appendonlydir").is_dir()
    assert keys(start()) == 500


def test_off_keeps_nothing(start: Start, tmp_path: Path) -> None:
    infra = start("off")
    assert redis_row(infra)["persistence"] == "off"
    write(infra, 100)
    infra.down()
    assert not (tmp_path / "redis" / "appendonlydir").exists()
    assert keys(start("off")) == 0


@pytest.mark.parametrize(("mode", "kept"), [("always", 2000), ("everysec", 2000), ("off", 0)])
def test_sigkill_and_restart(start: Start, mode: str, kept: int) -> None:
    """A crash of the Redis process alone: ``always`` and ``everysec`` lose nothing that
    Redis had answered (it writes to the file before it replies; only a crash of the machine
    can lose the last fsync window), ``off`` loses everything."""
    infra = start(mode)
    address, pid = infra.endpoints.redis_url, redis_row(infra)["pid"]
    write(infra, 2000)
    infra.crash_part("redis")
    row = redis_row(infra)
    assert row["state"] == "stopped" and not row["healthy"]
    assert infra.records()["redis"].argv[-1] == ("no" if mode == "off" else mode)
    infra.start_part("redis")
    assert infra.endpoints.redis_url == address and redis_row(infra)["pid"] != pid
    assert keys(infra) == kept
    assert redis_row(infra)["persistence"] == mode


def test_crash_of_what_does_not_run_is_one_clear_line(start: Start) -> None:
    infra = start()
    infra.crash_part("redis")
    with pytest.raises(StartError, match="redis is not running: nothing to crash"):
        infra.crash_part("redis")


def test_switch_live_and_kept_for_the_restarts(start: Start) -> None:
    infra = start("off")
    write(infra, 300)
    infra.set_redis_persistence("always")
    assert redis_row(infra)["persistence"] == "always"
    infra.crash_part("redis")
    infra.start_part("redis")
    assert keys(infra) == 300, "the data from before the switch was written to the file"
    assert redis_row(infra)["persistence"] == "always", "the restart kept the new mode"

    infra.set_redis_persistence("off")
    infra.crash_part("redis")
    infra.start_part("redis")
    assert keys(infra) == 0 and redis_row(infra)["persistence"] == "off"
    with pytest.raises(StartError, match="MESH_REDIS_PERSISTENCE='never'"):
        infra.set_redis_persistence("never")


def test_local_runtime_status_and_down_volumes(start: Start, tmp_path: Path) -> None:
    infra = start()
    runtime = LocalRuntime(tmp_path, environ(MESH_HOME=str(tmp_path)))
    part = runtime.status().infra["redis"]
    assert (part["persistence"], part["data"]) == ("everysec", str(tmp_path / "redis"))
    assert runtime.status().infra["kafka"]["storage"] == "memory://tansu/"
    with pytest.raises(RuntimeFailure, match="still running"):
        runtime.remove_volumes()
    write(infra, 10)
    runtime.down()
    assert runtime.remove_volumes() == [str(tmp_path / "redis")]
    assert not (tmp_path / "redis").exists()
    assert keys(start()) == 0


def test_meshctl_down_volumes_and_status_say_what_is_kept(tmp_path: Path) -> None:
    env = environ(MESH_HOME=str(tmp_path), GATEWAY_PORT=str(free_port()), MESH_CONSOLE="off")

    def meshctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*MESHCTL, *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    try:
        assert meshctl("infra", "up").returncode == 0
        table = meshctl("infra", "status").stdout
        assert "KEEPS" in table and f"append-only file in {tmp_path / 'redis'}" in table
        assert "fsync everysec" in table and "nothing (memory://)" in table
    finally:
        down = meshctl("down", "--volumes")
    assert down.returncode == 0, down.stderr
    assert f"removed: {tmp_path / 'redis'}" in down.stdout
    assert not (tmp_path / "redis").exists()


# -- the broker ----------------------------------------------------------------------------------
def test_broker_storage_goes_to_tansu_in_its_environment(start: Start, tmp_path: Path) -> None:
    """The URL reaches tansu as STORAGE_ENGINE (tansu's own variable), not on its command
    line, where every local user could read a password; a restart gets it again."""
    infra = start(MESH_KAFKA_STORAGE="memory://mesh-test/")
    rec = infra.records()["kafka"]
    assert rec.env == {"STORAGE_ENGINE": "memory://mesh-test/"}
    assert not any("memory://" in arg for arg in rec.argv)
    assert _environ_of(rec.pid).get("STORAGE_ENGINE") == "memory://mesh-test/"
    assert oct((tmp_path / "infra.json").stat().st_mode & 0o777) == "0o600"
    infra.stop_part("kafka")
    infra.start_part("kafka")
    assert _environ_of(infra.records()["kafka"].pid).get("STORAGE_ENGINE") == "memory://mesh-test/"
    row = next(r for r in infra.status() if r["name"] == "kafka")
    assert row["storage"] == "memory://mesh-test/"


def _environ_of(pid: int | None) -> dict[str, str]:
    assert pid is not None
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)
