"""Payloads of payments: the payment record and the data of the event it consumes. Amounts
are integer cents."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError

from services.common.kafka.consumer import PermanentError
from services.common.kafka.envelope import Envelope

M = TypeVar("M", bound=BaseModel)


class Payment(BaseModel):
    order_id: str
    customer_id: str
    amount: int = Field(description="cents")
    status: Literal["SUCCEEDED", "FAILED"]
    reason: str | None = Field(
        None, description="why it failed: card_declined (random) or forced_failure"
    )
    attempted_at: datetime


class ReservedData(BaseModel):
    customer_id: str
    total: Annotated[int, Field(ge=0)]


def event_data(model: type[M], event: Envelope) -> M:
    """The event's ``data`` as ``model``; data that does not fit can never be handled."""
    try:
        return model.model_validate(event.data)
    except ValidationError as exc:
        raise PermanentError(f"invalid {event.type} data: {exc}") from None
