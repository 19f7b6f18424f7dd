"""The one declaration of the platform's Kafka topics.

Every runtime creates topics from this list (the embedded broker at start-up, compose and
Kubernetes through ``meshctl infra topics``), so a topic is added here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

DLQ_SUFFIX = ".dlq"


@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int
    consumers: tuple[str, ...]
    description: str
    # Who publishes it (the console draws service -> topic edges from this before traffic).
    producers: tuple[str, ...] = ()

    @property
    def dlq(self) -> str:
        return self.name + DLQ_SUFFIX


# The order saga, in the order events happen (see DESIGN.md, "The shop").
TOPICS: tuple[Topic, ...] = (
    Topic("order.created", 3, ("inventory",), "an order was accepted (PENDING)", ("orders",)),
    Topic(
        "inventory.reserved",
        3,
        ("payments",),
        "all lines of an order were reserved",
        ("inventory",),
    ),
    Topic("inventory.rejected", 3, ("orders",), "an order could not be reserved", ("inventory",)),
    Topic(
        "payment.succeeded", 3, ("orders", "inventory"), "the charge went through", ("payments",)
    ),
    Topic(
        "payment.failed",
        3,
        ("orders", "inventory"),
        "the charge failed; release stock",
        ("payments",),
    ),
    Topic(
        "order.confirmed", 3, ("notifications",), "terminal: the order is CONFIRMED", ("orders",)
    ),
    Topic(
        "order.cancelled", 3, ("notifications",), "terminal: the order is CANCELLED", ("orders",)
    ),
    # Beside the saga: stock that came back (INVENTORY_RESTOCK). No consumer in the platform
    # (so no DLQ); it is there for anyone following the stock's history.
    Topic(
        "inventory.restocked",
        3,
        (),
        "a SKU was brought back up to the restock level",
        ("inventory",),
    ),
)

DLQ_PARTITIONS = 1


def all_topics() -> dict[str, int]:
    """Every topic to create, with its partition count: the saga topics and their DLQs."""
    wanted = {t.name: t.partitions for t in TOPICS}
    wanted.update({t.dlq: DLQ_PARTITIONS for t in TOPICS if t.consumers})
    return wanted


def consumed_by(service: str) -> list[str]:
    """The topics a service's consumer group subscribes to."""
    return [t.name for t in TOPICS if service in t.consumers]
