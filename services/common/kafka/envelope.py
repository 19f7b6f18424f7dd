"""The JSON envelope every event travels in."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator


def utc_now() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel):
    """``{"id", "type", "version", "occurred_at", "order_id", "data"}``.

    ``id`` is what consumers deduplicate on; ``order_id`` is also the Kafka key, so every
    event of one order lands on one partition and is consumed in order.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: UUID = Field(default_factory=uuid4)
    type: str = Field(min_length=1, max_length=200)
    version: Annotated[int, Field(ge=1)] = 1
    occurred_at: datetime = Field(default_factory=utc_now)
    order_id: str = Field(min_length=1, max_length=200)
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("occurred_at")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("occurred_at needs a time zone")
        return value.astimezone(UTC)

    @field_serializer("occurred_at")
    def _iso_z(self, value: datetime) -> str:
        return value.isoformat(timespec="microseconds").replace("+00:00", "Z")

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, raw: str | bytes) -> Envelope:
        return cls.model_validate_json(raw)


def make_event(
    type: str, order_id: str, data: dict[str, Any] | None = None, *, version: int = 1
) -> Envelope:
    return Envelope(type=type, order_id=order_id, data=data or {}, version=version)
