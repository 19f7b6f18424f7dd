"""What the load is made of: its settings from the environment and seeded shop data.

Every setting is an environment variable; a bad value stops Locust with one line that names
the variable (``SystemExit``), before any user starts.

The data is deterministic: ``ShopData(seed, stream)`` yields the same customers, SKUs and
quantities for the same ``LOAD_SEED`` and stream (one stream per Locust user), on every run
and every machine.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

# The inventory seed catalogue (services/inventory/catalog.json; a test keeps them equal).
# Written out rather than read from that file: the load drives the platform from outside and
# its image need not hold the services' data.
SKUS: tuple[str, ...] = tuple(f"SKU-{n:03d}" for n in range(1, 25))
CUSTOMERS = 500
# Payments always declines customers whose id starts with this (PAYMENTS_FAIL_CUSTOMER_PREFIX).
DECLINED_PREFIX = "fail-"
# Mostly single units: the seed stock (INVENTORY_INITIAL_STOCK, 1000 per SKU) then lasts longer.
QUANTITIES = (1, 2, 3)
QUANTITY_WEIGHTS = (6, 3, 1)
LINES = (1, 2, 3)
LINE_WEIGHTS = (6, 3, 1)

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


def _fail(name: str, expected: str, value: str) -> SystemExit:
    return SystemExit(f"loadtests: {name} must be {expected}, got {value!r}")


def env_int(environ: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise _fail(name, f"an integer >= {minimum}", raw)
    return value


def env_float(
    environ: Mapping[str, str],
    name: str,
    default: float,
    minimum: float = 0.0,
    maximum: float = float("inf"),
    exclusive_minimum: bool = False,
) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    too_low = value <= minimum if exclusive_minimum else value < minimum
    if not (value == value) or too_low or value > maximum:  # value != value: NaN
        bound = f"> {minimum:g}" if exclusive_minimum else f">= {minimum:g}"
        upper = f" and <= {maximum:g}" if maximum != float("inf") else ""
        raise _fail(name, f"a number {bound}{upper}", raw)
    return value


def parse_duration(text: str) -> float | None:
    """Seconds in ``text``: ``90``, ``90s``, ``2m``, ``1h30m``; None when it is not one."""
    text = text.strip().lower()
    try:
        return float(text)
    except ValueError:
        pass
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        return None
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def env_duration(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    value = parse_duration(raw)
    if value is None or value <= 0:
        raise _fail(name, 'a duration > 0 (seconds, or like "30s", "2m", "1h30m")', raw)
    return value


def load_seed(environ: Mapping[str, str]) -> int:
    return env_int(environ, "LOAD_SEED", 1)


class ShopData:
    """One user's stream of shop data. ``decline_share`` of the orders come from customers
    payments always declines, so the load also drives the saga's compensation."""

    def __init__(self, seed: int, stream: int = 0, decline_share: float = 0.0) -> None:
        # A string seed is hashed with SHA-512: stable across runs (no PYTHONHASHSEED effect).
        self.rng = random.Random(f"mesh-load:{seed}:{stream}")
        self.decline_share = decline_share

    def customer(self) -> str:
        customer = f"load-c-{self.rng.randrange(CUSTOMERS):04d}"
        if self.decline_share and self.rng.random() < self.decline_share:
            return DECLINED_PREFIX + customer
        return customer

    def sku(self) -> str:
        return self.rng.choice(SKUS)

    def items(self) -> list[dict[str, Any]]:
        # Distinct SKUs: orders refuses a SKU repeated on two lines (422).
        lines = self.rng.choices(LINES, LINE_WEIGHTS)[0]
        skus = self.rng.sample(SKUS, lines)
        quantities = self.rng.choices(QUANTITIES, QUANTITY_WEIGHTS, k=lines)
        return [{"sku": s, "quantity": q} for s, q in zip(skus, quantities, strict=True)]

    def order(self) -> dict[str, Any]:
        return {"customer_id": self.customer(), "items": self.items()}

    def pick(self, choices: Sequence[str], weights: Sequence[float]) -> str:
        return self.rng.choices(choices, weights)[0]
