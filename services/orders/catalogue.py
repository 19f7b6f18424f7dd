"""The product catalogue as orders sees it: read from the hash inventory publishes in Redis
(``catalog:skus``, SKU -> ``{"name", "price"}``) and cached for a few seconds.

Orders never imports inventory's code: the catalogue is shared as data, through Redis.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis

log = logging.getLogger(__name__)

CATALOG_KEY = "catalog:skus"
# An unknown SKU re-reads the catalogue, but not more often than this.
_MISS_REFRESH_SECONDS = 0.5


@dataclass(frozen=True)
class Product:
    name: str
    price: int  # cents


class Catalogue:
    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._products: dict[str, Product] = {}
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()

    async def lookup(self, redis: aioredis.Redis, skus: Iterable[str]) -> dict[str, Product]:
        """The products of ``skus`` that exist; SKUs missing from the result are unknown."""
        wanted = list(skus)
        age = time.monotonic() - self._loaded_at
        missing = any(sku not in self._products for sku in wanted)
        if age > self._ttl or (missing and age > _MISS_REFRESH_SECONDS):
            await self._refresh(redis)
        return {sku: self._products[sku] for sku in wanted if sku in self._products}

    @property
    def empty(self) -> bool:
        return not self._products

    async def _refresh(self, redis: aioredis.Redis) -> None:
        loaded_at = self._loaded_at
        async with self._lock:
            if self._loaded_at != loaded_at:
                return  # another request refreshed it while this one waited
            raw = cast(dict[str, str], await redis.hgetall(CATALOG_KEY))
            products = {}
            for sku, value in raw.items():
                try:
                    entry = json.loads(value)
                    products[sku] = Product(str(entry["name"]), int(entry["price"]))
                except (ValueError, KeyError, TypeError):
                    log.warning("ignoring a malformed catalogue entry", extra={"sku": sku})
            self._products = products
            self._loaded_at = time.monotonic()
