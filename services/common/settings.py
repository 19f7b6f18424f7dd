"""Configuration from environment variables, validated once at start-up.

Every service subclasses :class:`ServiceSettings` (overriding defaults such as ``SERVICE_NAME``
and ``PORT`` and adding its own variables); :func:`load_settings` turns a bad value into one
line on stderr naming the variable and exit code 2, so a typo never starts a half-configured
process.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Defined apart (no pydantic-settings there) and named here as before.
from services.common.units import ByteSize, Duration, describe_errors

__all__ = ["ByteSize", "Duration", "ServiceSettings", "describe_errors", "load_settings"]


class ServiceSettings(BaseSettings):
    """Settings every service and the gateway share. Subclass to add or re-default fields."""

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", validate_default=True)

    SERVICE_NAME: Annotated[str, Field(min_length=1, pattern=r"^[a-z][a-z0-9-]*$")]
    SERVICE_VERSION: Annotated[str, Field(pattern=r"^v\d+$")] = "v1"
    HOST: str = "127.0.0.1"
    PORT: Annotated[int, Field(ge=1, le=65535)] = 8000
    # The address other parts use to reach this instance (Consul Address and check URL);
    # needed when HOST is a wildcard such as 0.0.0.0 inside a container.
    ADVERTISE_ADDRESS: str | None = None
    SERVICE_TAGS: str = ""

    KAFKA_BOOTSTRAP_SERVERS: str = "127.0.0.1:9092"
    KAFKA_ACKS: Literal["all", "1"] = "all"
    # tansu cannot do the idempotent producer (InitProducerId fails); real Kafka can.
    KAFKA_ENABLE_IDEMPOTENCE: bool = False
    KAFKA_LINGER_MS: Annotated[int, Field(ge=0, le=1000)] = 2
    KAFKA_REQUEST_TIMEOUT_MS: Annotated[int, Field(ge=100)] = 5000
    # Real Kafka refuses less than 6 s by default (group.min.session.timeout.ms); tansu waits
    # half of it for members to join, so this is also how long a rebalance pauses a group.
    KAFKA_SESSION_TIMEOUT_MS: Annotated[int, Field(ge=1000)] = 6000
    KAFKA_HEARTBEAT_INTERVAL_MS: Annotated[int, Field(ge=100)] = 1000
    KAFKA_AUTO_OFFSET_RESET: Literal["earliest", "latest"] = "earliest"
    # How long a fetch may wait for data. tansu tends to hold a fetch this long even when
    # messages arrive meanwhile, so it adds to every hop of the saga (aiokafka's 500 ms
    # default gave ~130 ms per hop); lower values cost idle CPU in broker and consumers.
    KAFKA_FETCH_MAX_WAIT_MS: Annotated[int, Field(ge=1, le=10_000)] = 50
    # What a fetch waits to gather (up to the max wait): under load a batch, not a message.
    KAFKA_FETCH_MIN_BYTES: Annotated[int, Field(ge=1, le=1_048_576)] = 8192

    REDIS_URL: Annotated[str, Field(pattern=r"^(redis|rediss|unix)://")] = (
        "redis://127.0.0.1:6379/0"
    )
    REDIS_MAX_CONNECTIONS: Annotated[int, Field(ge=4)] = 128

    # Empty disables Consul (registration and KV watches), for runs without a registry.
    CONSUL_HTTP_ADDR: str = "http://127.0.0.1:8500"
    CHECK_INTERVAL: Duration = 2.0
    CHECK_TIMEOUT: Duration = 1.0
    # Consecutive failed checks before the registry takes the instance out (Consul's
    # FailuresBeforeCritical; Kubernetes's readiness failureThreshold defaults to 3 too). At 1,
    # one check answered late by a busy instance removed it, its siblings then took its load
    # and timed out in turn, and a spike emptied the pool (503 no_healthy_upstream on every
    # instance). A dead instance is still skipped at once: the gateway ejects it on refused
    # connections, and a draining one deregisters itself.
    CHECK_FAILURES_BEFORE_CRITICAL: Annotated[int, Field(ge=1, le=10)] = 3
    DEREGISTER_CRITICAL_AFTER: Duration = 60.0
    REGISTRATION_REFRESH: Duration = 10.0

    ADMIN_TOKEN: SecretStr | None = None
    MAX_BODY_BYTES: Annotated[int, Field(ge=1024)] = 1_048_576
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # uvloop roughly doubles what one process can proxy or serve; asyncio stays selectable.
    EVENT_LOOP: Literal["uvloop", "asyncio"] = "uvloop"
    ACCESS_LOG: bool = False

    OTEL_SDK_DISABLED: bool = False
    OTEL_EXPORTER_OTLP_ENDPOINT: str | None = None
    OTEL_TRACES_SAMPLER_ARG: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0
    MESH_TRACES_DIR: Path = Path(".mesh/traces")

    SHUTDOWN_GRACE_SECONDS: Duration = 10.0
    # The readiness probe the registry runs: "http" asks /readyz (dependencies reachable,
    # warm, not draining), and on SIGTERM the instance is taken out before it stops
    # listening. "none" is a container without a readiness probe: a TCP check, so the
    # instance takes traffic as soon as it listens and keeps it until it stops listening.
    READINESS_PROBE: Literal["http", "none"] = "http"

    # Deliberate defects of a faulty release (services/common/defects.py), off by default.
    WARMUP_SECONDS: Duration = 0.0
    LEAK_BYTES_PER_REQUEST: Annotated[ByteSize, Field(le=64 * 1024**2)] = 0
    LEAK_MAX_BYTES: ByteSize = 1024**3

    # Baseline faults of this instance (a deliberately bad version); KV adds to them.
    FAULT_LATENCY_MS: Annotated[float, Field(ge=0, le=60_000)] = 0.0
    FAULT_ERROR_RATE: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0

    CONSUMER_MAX_ATTEMPTS: Annotated[int, Field(ge=1, le=100)] = 5
    CONSUMER_RETRY_BACKOFF: Duration = 0.1
    CONSUMER_RETRY_BACKOFF_MAX: Duration = 5.0
    CONSUMER_BATCH_SIZE: Annotated[int, Field(ge=1, le=10000)] = 200
    CONSUMER_CONCURRENCY: Annotated[int, Field(ge=1, le=1000)] = 64
    # A member left without partitions this long (a rebalance that never completes) leaves
    # the group and joins again as a new member.
    CONSUMER_STUCK_AFTER: Duration = 30.0
    IDEMPOTENCY_TTL: Duration = 7 * 24 * 3600.0

    OUTBOX_BATCH_SIZE: Annotated[int, Field(ge=1, le=10000)] = 500
    # A relay that died leaves entries it had read; others take them over after this long.
    OUTBOX_CLAIM_IDLE: Duration = 60.0

    @field_validator("LOG_LEVEL", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator(
        "ADMIN_TOKEN", "OTEL_EXPORTER_OTLP_ENDPOINT", "ADVERTISE_ADDRESS", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("CONSUL_HTTP_ADDR", mode="after")
    @classmethod
    def _consul_scheme(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and "://" not in value:
            value = f"http://{value}"
        if value and not re.match(r"^https?://[^/:]+:\d+$", value):
            raise ValueError("expected host:port or http(s)://host:port")
        return value

    @property
    def advertise_address(self) -> str:
        if self.ADVERTISE_ADDRESS:
            return self.ADVERTISE_ADDRESS
        return "127.0.0.1" if self.HOST in ("0.0.0.0", "", "::") else self.HOST

    @property
    def instance_id(self) -> str:
        """The Consul service ID, also the Kafka client id and outbox relay name."""
        return f"{self.SERVICE_NAME}-{self.advertise_address}-{self.PORT}"

    @property
    def tags(self) -> list[str]:
        extra = [tag.strip() for tag in self.SERVICE_TAGS.split(",") if tag.strip()]
        return [self.SERVICE_VERSION, *extra]


S = TypeVar("S", bound=ServiceSettings)


def secret_fields(cls: type[BaseSettings]) -> frozenset[str]:
    """Fields typed ``SecretStr`` (alone or in a union): their values never reach a message."""
    return frozenset(
        name
        for name, info in cls.model_fields.items()
        if info.annotation is SecretStr or SecretStr in getattr(info.annotation, "__args__", ())
    )


def _fail(line: str) -> NoReturn:
    print(f"config error: {line}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def load_settings(cls: type[S]) -> S:
    """Read ``cls`` from the environment, or exit 2 with one line naming the bad variable."""
    try:
        return cls()  # type: ignore[call-arg]  # the values come from the environment
    except ValidationError as exc:
        _fail(describe_errors(exc, secret_fields(cls)))
