"""The HTTP API of inventory: read stock, and set it (admin token)."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel

from services.common.admin import require_admin
from services.common.errors import ApiError
from services.common.openapi import Route
from services.common.settings import ServiceSettings
from services.common.validation import read_json
from services.inventory.models import StockItem, StockList, StockUpdate
from services.inventory.store import InventoryStore


def _json(model: BaseModel) -> web.Response:
    return web.Response(text=model.model_dump_json(), content_type="application/json")


class InventoryApi:
    def __init__(self, store: InventoryStore, settings: ServiceSettings) -> None:
        self._store = store
        self._settings = settings

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/stock", self.list, "Stock of every SKU", response=StockList),
            Route("GET", "/stock/{sku}", self.get, "Stock of one SKU", response=StockItem),
            Route(
                "PUT",
                "/stock/{sku}",
                self.put,
                "Set the available units of a SKU (Authorization: Bearer <ADMIN_TOKEN>)",
                body=StockUpdate,
                response=StockItem,
                auth=("adminBearer", "adminHeader"),
                errors={403: "Wrong admin token (always, while no ADMIN_TOKEN is set)"},
            ),
        ]

    async def list(self, request: web.Request) -> web.Response:
        return _json(StockList(stock=await self._store.items()))

    async def get(self, request: web.Request) -> web.Response:
        sku = request.match_info["sku"]
        item = await self._store.item(sku)
        if item is None:
            raise ApiError(404, "not_found", f"no sku {sku}")
        return _json(item)

    async def put(self, request: web.Request) -> web.Response:
        require_admin(request, self._settings)  # before the body: strangers learn nothing
        update = await read_json(request, StockUpdate)
        sku = request.match_info["sku"]
        if not await self._store.set_available(sku, update.available):
            raise ApiError(404, "not_found", f"no sku {sku}")
        item = await self._store.item(sku)
        if item is None:
            raise ApiError(404, "not_found", f"no sku {sku}")
        return _json(item)
