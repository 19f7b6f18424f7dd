"""The gateway's settings: the kit's, plus keys, limits and resilience knobs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator

from gateway.routes import ROUTES_FILE
from services.common.settings import Duration, ServiceSettings


class GatewaySettings(ServiceSettings):
    SERVICE_NAME: str = "gateway"
    PORT: int = Field(8080, ge=1, le=65535, validation_alias=AliasChoices("GATEWAY_PORT", "PORT"))
    MAX_BODY_BYTES: int = Field(256 * 1024, ge=1024)

    # Secrets come from the environment only; the gateway refuses to start without them.
    GATEWAY_API_KEYS: SecretStr = Field(description="comma-separated client API keys")
    GATEWAY_ADMIN_TOKEN: SecretStr = Field(description="bearer token for /admin")

    GATEWAY_ROUTES_FILE: Path = ROUTES_FILE
    GATEWAY_LB: Literal["least_outstanding", "round_robin"] = "least_outstanding"
    GATEWAY_UPSTREAM_CONNECTIONS: Annotated[int, Field(ge=1, le=100_000)] = 1000
    GATEWAY_CONNECT_TIMEOUT: Duration = 1.0

    # Attempts per request in all (1 = no retry), drawn from a budget shared by all requests.
    GATEWAY_MAX_ATTEMPTS: Annotated[int, Field(ge=1, le=10)] = 3
    GATEWAY_RETRY_BUDGET_RATIO: Annotated[float, Field(ge=0.0, le=1.0)] = 0.2
    GATEWAY_RETRY_MIN_PER_SECOND: Annotated[float, Field(ge=0.0)] = 10.0

    GATEWAY_EJECT_AFTER: Annotated[int, Field(ge=1, le=1000)] = 5
    GATEWAY_EJECT_BASE: Duration = 1.0
    GATEWAY_EJECT_MAX: Duration = 30.0
    GATEWAY_MAX_EJECTED_PERCENT: Annotated[int, Field(ge=0, le=100)] = 50
    GATEWAY_PANIC_THRESHOLD_PERCENT: Annotated[int, Field(ge=0, le=100)] = 50

    # Token bucket per API key, in Redis (shared by every gateway replica). 0 turns it off.
    GATEWAY_RATE_LIMIT_RPS: Annotated[float, Field(ge=0.0)] = 500.0
    GATEWAY_RATE_LIMIT_BURST: Annotated[float, Field(ge=1.0)] = 1000.0

    GATEWAY_ACCESS_LOG: bool = True

    @field_validator("GATEWAY_API_KEYS")
    @classmethod
    def _some_key(cls, value: SecretStr) -> SecretStr:
        keys = [k.strip() for k in value.get_secret_value().split(",") if k.strip()]
        if not keys or any(len(k) < 16 for k in keys):
            raise ValueError("needs at least one key, each of at least 16 characters")
        return value

    @field_validator("GATEWAY_ADMIN_TOKEN")
    @classmethod
    def _strong_token(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value().strip()) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    @property
    def api_keys(self) -> frozenset[str]:
        raw = self.GATEWAY_API_KEYS.get_secret_value()
        return frozenset(k.strip() for k in raw.split(",") if k.strip())
