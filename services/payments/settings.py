"""Settings of the payments service (environment variables; the kit's settings plus these)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from services.common.settings import ServiceSettings


class PaymentsSettings(ServiceSettings):
    SERVICE_NAME: str = "payments"
    PORT: Annotated[int, Field(ge=1, le=65535)] = 8103
    # The simulated charge takes LATENCY +- JITTER milliseconds.
    PAYMENTS_LATENCY_MS: Annotated[int, Field(ge=0, le=60_000)] = 50
    PAYMENTS_JITTER_MS: Annotated[int, Field(ge=0, le=60_000)] = 20
    # Share of charges declined at random (0..1).
    PAYMENTS_FAILURE_RATE: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    # Charges of customers whose id starts with this are always declined (tests, demos);
    # empty turns it off.
    PAYMENTS_FAIL_CUSTOMER_PREFIX: str = "fail-"
