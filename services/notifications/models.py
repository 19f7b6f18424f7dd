"""Payloads of notifications: the notification, the queries, and the data of the events it
consumes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, Field

M = TypeVar("M", bound=BaseModel)

Kind = Literal["order.confirmed", "order.cancelled"]


class Notification(BaseModel):
    id: str
    order_id: str
    customer_id: str
    kind: Kind
    message: str
    created_at: datetime


class NotificationList(BaseModel):
    notifications: list[Notification]


class NotificationQuery(BaseModel):
    """``order_id``, ``customer_id``, both (the order if it is that customer's) or neither
    (the newest of every customer)."""

    order_id: Annotated[str | None, Field(min_length=1, max_length=200)] = None
    customer_id: Annotated[str | None, Field(min_length=1, max_length=64)] = None
    limit: Annotated[int, Field(ge=1, le=100)] = 20


class StreamQuery(BaseModel):
    """Optional filters of the stream; none means every notification."""

    order_id: Annotated[str | None, Field(min_length=1, max_length=200)] = None
    customer_id: Annotated[str | None, Field(min_length=1, max_length=64)] = None

    def matches(self, notification: Notification) -> bool:
        return (self.order_id is None or notification.order_id == self.order_id) and (
            self.customer_id is None or notification.customer_id == self.customer_id
        )


class TerminalData(BaseModel):
    customer_id: str
    reason: str | None = None
    items: list[dict[str, object]] = Field(default_factory=list)
    total: int = 0
