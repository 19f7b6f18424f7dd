"""What a Kafka client of the user's own (kcat, librdkafka, a Java or Go client) needs to work
with the platform's broker; ``meshctl infra status`` prints it.

The embedded broker, tansu, holds a consumer group's join for about half the session timeout
while it waits for members. librdkafka's and the Java client's default session timeout is
45 s: a new group member then gets its partitions after ~23 s (measured with confluent-kafka
2.16: 23.0 s; with 6 s: 3.0 s), long enough to look broken. 6 s is also real Kafka's lowest
default (``group.min.session.timeout.ms``).
"""

from __future__ import annotations

# name -> (value, why); librdkafka/Java property names, which kcat takes with -X.
EMBEDDED_BROKER = {
    "session.timeout.ms": ("6000", "tansu holds a join for half of it (45 s default: ~23 s)"),
    "heartbeat.interval.ms": ("1000", "well under a third of the session timeout"),
    "auto.offset.reset": ("earliest", "a new group reads the events already there"),
}


def client_settings(bootstrap: str, embedded: bool) -> dict[str, str]:
    """The properties a consumer of the user's own should set; against an external Kafka
    only its address (that broker's own defaults apply)."""
    settings = {"bootstrap.servers": bootstrap}
    if embedded:
        settings.update({name: value for name, (value, _) in EMBEDDED_BROKER.items()})
    return settings


def describe(bootstrap: str, embedded: bool) -> list[str]:
    """Lines for a person: each setting, why, and a kcat line to try."""
    lines = ["", "Your own Kafka client (kcat, librdkafka, Java, Go):"]
    lines.append(f"  bootstrap.servers={bootstrap}")
    if not embedded:
        return lines
    for name, (value, why) in EMBEDDED_BROKER.items():
        lines.append(f"  {name}={value}".ljust(34) + f"  {why}")
    options = " ".join(f"-X {name}={value}" for name, (value, _) in EMBEDDED_BROKER.items())
    lines.append(f"  try: kcat -b {bootstrap} -G my-group {options} order.created")
    return lines
